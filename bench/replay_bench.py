"""Benchmark: the full knight-2012 replay, unguarded (budget 60 s wall) and with every layer.

Prints, per configuration, the median and p99 wall time over the repeats,
simulated child orders (events) per wall second, and the ratio to the 60 s
budget. `--json FILE` writes the same figures.

    .venv/bin/python bench/replay_bench.py --repeats 5 --json /tmp/replay_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay
from knightwatch.sim.scenario import load

BUDGET_S = 60.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def measure(guards: str, repeats: int, scenario: str) -> dict[str, float | int | str]:
    sc = load(scenario)
    walls: list[float] = []
    events = 0
    simulated = 0.0
    for _ in range(repeats):
        r = Replay(sc, resolve(guards)).run()
        walls.append(r.wall_seconds)
        events = r.child_orders + r.blocked_orders
        simulated = r.simulated_s
    med = statistics.median(walls)
    return {
        "guards": guards,
        "repeats": repeats,
        "events": events,
        "simulated_s": simulated,
        "wall_median_s": round(med, 3),
        "wall_p99_s": round(p99(walls), 3),
        "events_per_wall_s": round(events / med),
        "simulated_s_per_wall_s": round(simulated / med, 1),
        "ratio_to_budget": round(med / BUDGET_S, 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="knight-2012")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--guards", action="append", help="configurations (default: none, all)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: must be >= 1")
    rows = [measure(g, args.repeats, args.scenario) for g in args.guards or ["none", "all"]]
    for row in rows:
        print(
            f"{args.scenario} guards={row['guards']}: wall median {row['wall_median_s']}s "
            f"p99 {row['wall_p99_s']}s, {row['events']:,} child orders in "
            f"{row['simulated_s']}s simulated = {row['events_per_wall_s']:,} events/wall-s, "
            f"{row['ratio_to_budget']:.3f} of the {BUDGET_S:g}s budget"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    over = [r for r in rows if r["guards"] == "none" and float(r["wall_median_s"]) > BUDGET_S]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
