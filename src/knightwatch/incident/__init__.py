"""After the kill: freeze, evidence snapshot, preflight before resuming, ramp back with a trip.

`knightwatch resume` runs `preflight.run_preflight` and refuses unless every
item passes; the resume then goes through `ramp.RampController`, which holds the
scope at a fraction of its limits for each stage and halts it again on the first
sign of trouble. `snapshot` collects the evidence before anything restarts.
"""
