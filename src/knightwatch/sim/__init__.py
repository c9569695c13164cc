"""Simulation and drills: a deterministic market, the SMARS-style router and incident replays.

Everything here runs on a `SimClock` and calls the project's real `Guard`; only
the market and the clock are simulated (principle 1 in docs/architecture.md).
"""
