"""Flight-recorder throughput: records/s with the hash chain, per-call cost, verify speed.

Run: .venv/bin/python bench/audit_bench.py [--records 500000] [--runs 5] [--json FILE]

Each run pushes --records decisions through `ready()` + `record_decision()` (the
two calls the Guard makes per order) and closes the recorder, so the figure
includes encoding, hashing, writing and fsync of every record. Orders cycle
through a pool of 1024 (every 5th blocked): the recorder's cost does not depend
on order identity, and a pool keeps the benchmark from measuring the garbage
collector's walk over half a million live test orders.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from knightwatch.audit import AuditContext, FlightRecorder, FsyncPolicy, verify_file
from knightwatch.clock import SystemClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.order import Order, Side

CTX = AuditContext(
    node="n1", release_id="rel-2012.08.01", flag_snapshot_id="fs-7f3a", limits_version="v3"
)
RULES = (
    "trading_state", "armed", "lease", "validity", "duplicate_id", "symbol_allowed",
    "max_order_qty", "max_order_notional", "price_collar", "rate", "parent", "position",
    "exposure", "turnover", "loss",
)  # fmt: skip
BLOCK = Decision(False, RejectReason.MAX_ORDER_QTY, "qty 50000 > max_order_qty 10000 for smars")
POOL = [
    (
        Order(f"SMARS-{i:07d}", "smars", "AAPL", Side.BUY, 100, 101.25, "P-1"),
        BLOCK if i % 5 == 4 else ACCEPTED,
    )
    for i in range(1024)
]


def throughput(path: Path | None, n: int, fsync: FsyncPolicy) -> float:
    """Records/s for n ready()+record_decision() calls, close() included."""
    if path is not None and path.exists():
        path.unlink()
    pool = POOL
    rec = FlightRecorder(path, clock=SystemClock(), fsync=fsync)
    ready, record = rec.ready, rec.record_decision
    t0 = time.perf_counter()
    for i in range(n):
        order, decision = pool[i & 1023]
        ready()
        record(order, decision, CTX, RULES)
    rec.close()
    return n / (time.perf_counter() - t0)


def call_latency(path: Path, n: int) -> list[float]:
    """Per-call cost (µs) of ready()+record_decision() as the Guard sees it, flushes included."""
    if path.exists():
        path.unlink()
    out = [0.0] * n
    clock = time.perf_counter_ns
    with FlightRecorder(path, clock=SystemClock(), fsync=FsyncPolicy.BATCH) as rec:
        ready, record = rec.ready, rec.record_decision
        for i in range(n):
            order, decision = POOL[i & 1023]
            t0 = clock()
            ready()
            record(order, decision, CTX, RULES)
            out[i] = (clock() - t0) / 1000
    return sorted(out)


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=500_000, help="records per run (>= 1000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario; the median is kept")
    ap.add_argument("--always-records", type=int, default=2_000, help="records for fsync=always")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.records < 1000 or args.runs < 1 or args.always_records < 1:
        print("--records must be >= 1000, --runs and --always-records >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "audit.jsonl"
        n = args.records
        results: dict[str, float | int | str] = {"records": n, "runs": args.runs}
        for name, target, policy, count in (
            ("memory", None, FsyncPolicy.BATCH, n),
            ("file_none", path, FsyncPolicy.NONE, n),
            ("file_batch", path, FsyncPolicy.BATCH, n),
            ("file_always", path, FsyncPolicy.ALWAYS, args.always_records),
        ):
            runs = [throughput(target, count, policy) for _ in range(args.runs)]
            results[f"audit_{name}_records_per_s"] = round(statistics.median(runs))
            print(
                f"{name:12s} {statistics.median(runs):>12,.0f} records/s "
                f"(median of {args.runs}; min {min(runs):,.0f}, max {max(runs):,.0f})"
            )
        results["audit_records_per_s"] = results["audit_file_batch_records_per_s"]

        throughput(path, n, FsyncPolicy.BATCH)  # the file verify reads
        size = os.path.getsize(path)
        vruns = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            report = verify_file(path)
            vruns.append(report.records / (time.perf_counter() - t0))
            assert report.intact and report.records == n
        results["audit_verify_records_per_s"] = round(statistics.median(vruns))
        results["audit_bytes_per_record"] = round(size / n, 1)
        print(
            f"{'verify':12s} {statistics.median(vruns):>12,.0f} records/s "
            f"({size / n:.0f} bytes/record)"
        )

        lat = call_latency(path, n)
        for label, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            results[f"audit_call_{label}_us"] = round(pct(lat, q), 3)
        results["audit_call_max_us"] = round(lat[-1], 1)
        print(
            "per call (ready+record_decision, fsync=batch): "
            f"p50 {pct(lat, 0.5):.2f} µs, p99 {pct(lat, 0.99):.2f} µs, "
            f"p99.9 {pct(lat, 0.999):.1f} µs, max {lat[-1]:.0f} µs "
            "(a flush of 512 records lands on 1 call in 512)"
        )
    goal = 200_000
    rate = float(results["audit_records_per_s"])
    verdict = "MET" if rate >= goal else "MISSED"
    print(f"target >= {goal:,} records/s (file, fsync=batch): {verdict}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
