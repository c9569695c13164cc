"""The live drill: real node processes on a real control plane, with a synthetic market.

`run_drill` builds and signs a local release, starts a fleet (one node on stale
code), injects a Power Peg-style runaway and measures the supervisor's halt and
the kill; `run_up` starts a demo fleet to operate by hand. The pieces are
simulation, not product: the synthetic order flow (`flow`), the venue that
fills it (`venue`), the local release builder and the process harness.
"""
