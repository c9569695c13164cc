"""Adapters that put knightwatch inside the trading stacks people already run.

Each adapter lives behind its own extra so the core never imports a trading
framework: `knightwatch[nautilus]` for NautilusTrader (`adapters.nautilus`),
`knightwatch[ccxt]` for ccxt exchanges (`adapters.ccxt`). Both share the pieces
in this package: exact decimal-to-unit conversion (`units`), a Guard whose
halts and resumes reach the adapter whoever makes them, and one way to join
the fleet through the existing `NodeRuntime` (`fleet`).
"""
