"""Flight-recorder throughput, per-call cost, verify speed, and decisions lost to kill -9.

Run: .venv/bin/python bench/audit_bench.py [--records 500000] [--runs 5] [--crashes 20]
                                            [--json FILE]

Each run pushes --records decisions through `ready()` + `record_decision()` (the
two calls the Guard makes per order) and closes the recorder, so the figure
includes encoding, hashing, writing and fsync of every record. Orders cycle
through a pool of 1024 (every 5th blocked): the recorder's cost does not depend
on order identity, and a pool keeps the benchmark from measuring the garbage
collector's walk over half a million live test orders.

The crash test starts a writer process that records decisions as fast as it
can with the default settings (file, fsync per batch) and publishes, after each
`record_decision` returns, how many have returned (in shared memory, so the
count survives the writer). It is killed with SIGKILL at a random instant; the
file is then reopened (which seals what the crash left) and every decision that
had returned must be in it, and the file must verify. --crashes rounds.

`reopen` is what a node's start pays before it appends to an existing file: the
recorder checks every seal of it (the file verify reads, in the page cache).
`--readback N` then times the rest of that start's reading: a file of N accepted
orders, each with its own id, read back through the recorder for the standing halts
and flag changes (`audit.standing.held_standing`) and for the ids still in the
duplicate scope (`audit.read.accepted_ids`), each alone and both in the one pass a
node makes (`audit.standing.held_read_back`), and the ids remembered by a Guard
(`remember_order_ids`), so a restarted node refuses them as duplicates.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from knightwatch.audit import AuditContext, FlightRecorder, FsyncPolicy, verify_file
from knightwatch.audit.read import accepted_ids
from knightwatch.audit.standing import held_read_back, held_standing
from knightwatch.clock import SystemClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.guard import Guard
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


def readback(path: Path, n: int, runs: int) -> dict[str, float | int]:
    """Seconds a node's start reads a file of n accepted orders with distinct ids (and a
    fleet halt, a resume and a flag change) back through its recorder, up to where the
    recorder found the data end: the standing halts alone (`held_standing`), the ids alone
    (`accepted_ids`), both in one pass (`held_read_back`, what a node runs); and to
    remember the ids in a fresh Guard (medians of `runs`), and how many it holds."""
    if path.exists():
        path.unlink()
    with FlightRecorder(path, clock=SystemClock(), fsync=FsyncPolicy.NONE) as rec:
        rec.record_event("halt", CTX, scope="fleet", key="fleet", code="halted", reason="x")
        rec.record_event("flag_applied", CTX, flag="rlp", revision=3)
        for i in range(n):
            order = Order(f"SMARS-{i:09d}", "smars", "AAPL", Side.BUY, 100, 101.25, None)
            rec.ready()
            rec.record_decision(order, ACCEPTED, CTX, RULES)
        rec.record_event("resume", CTX, scope="node", key="n1", code="halted", reason="y")
    times: dict[str, list[float]] = {"standing": [], "ids": [], "one_pass": [], "remember": []}
    held = 0
    for _ in range(runs):
        with FlightRecorder(path, clock=SystemClock()) as rec:
            t0 = time.perf_counter()
            apart = held_standing(rec, path)
            t1 = time.perf_counter()
            with rec.reader() as f:
                used = accepted_ids(f, path, end=rec.opened_at)
            t2 = time.perf_counter()
            both = held_read_back(rec, path)
            t3 = time.perf_counter()
        held = Guard().remember_order_ids(both.used.ids, both.used.ts)
        t4 = time.perf_counter()
        assert len(used.ids) == n and both.used == used and both.standing == apart
        assert len(apart.halts) == 1 and apart.flag_revisions == {"rlp": 3}
        for name, s in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[name].append(s)
    out: dict[str, float | int] = {k: statistics.median(v) for k, v in times.items()}
    out["held"] = held
    return out


CRASH_IDS = 1 << 18
"""Distinct order ids the crash writer cycles through (built before its clock starts)."""


def crash_writer(path: Path, counter_path: Path) -> None:
    """The process that gets killed: record as fast as possible, publish each return."""
    with open(counter_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 16)
    count = memoryview(shared).cast("q")
    rec = FlightRecorder(path, clock=SystemClock())
    # built before the clock starts: more than a run records before its kill
    orders = [
        Order(f"R-{i:09d}", "smars", "AAPL", Side.BUY, 100, 101.25, "P-1") for i in range(CRASH_IDS)
    ]
    ready, record = rec.ready, rec.record_decision
    count[1] = time.monotonic_ns()
    i = 0
    while True:
        if not ready():
            sys.exit(f"recorder unhealthy: {rec.problem}")
        record(orders[i % CRASH_IDS], ACCEPTED, CTX, RULES)
        i += 1
        count[0] = i  # after the call returned: this decision may now leave the process


class _Id(msgspec.Struct):
    order_id: str = ""


def crash_round(tmp: Path, k: int) -> dict[str, float]:
    path = tmp / f"crash-{k}.jsonl"
    counter_path = tmp / "counter"
    counter_path.write_bytes(b"\0" * 16)
    with open(counter_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), 16)
    count = memoryview(shared).cast("q")
    child = subprocess.Popen(
        [sys.executable, __file__, "--crash-writer", str(path), str(counter_path)]
    )
    deadline = time.monotonic() + 60
    while count[0] < 1000:
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"crash writer did not start (exit {child.returncode})")
        time.sleep(0.001)
    time.sleep(random.uniform(0.05, 0.8))
    child.send_signal(signal.SIGKILL)
    killed_ns = time.monotonic_ns()
    child.wait()
    returned, started_ns = count[0], count[1]
    rate = returned / ((killed_ns - started_ns) / 1e9)
    FlightRecorder(path, clock=SystemClock()).close()  # reopen: seals what the crash left
    report = verify_file(path)
    decode = msgspec.json.Decoder(_Id).decode
    found = [0] * CRASH_IDS  # decision i carries id i % CRASH_IDS: count each id's records
    with open(path, "rb") as f:
        for line in f:
            oid = decode(line).order_id
            if oid.startswith("R-"):
                found[int(oid[2:])] += 1
    laps, rest = divmod(returned, CRASH_IDS)
    lost = sum(max(0, laps + (k < rest) - n) for k, n in enumerate(found))
    path.unlink()
    return {
        "returned": returned,
        "lost": lost,
        "records_per_s": rate,
        "intact": float(report.intact),
        "unsealed_at_crash": 0.0,
    }


def crash_test(rounds: int, where: Path | None) -> dict[str, float | int]:
    results = []
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        for k in range(rounds):
            r = crash_round(Path(tmp), k)
            results.append(r)
            print(
                f"  kill -9 #{k + 1}: {r['returned']:>9,.0f} decisions returned, "
                f"{r['lost']:.0f} lost, {r['records_per_s']:>9,.0f} records/s, "
                f"file {'intact' if r['intact'] else 'NOT INTACT'} after reopen",
                flush=True,
            )
    rates = [r["records_per_s"] for r in results]
    return {
        "crash_rounds": rounds,
        "crash_decisions_returned": int(sum(r["returned"] for r in results)),
        "crash_decisions_lost": int(sum(r["lost"] for r in results)),
        "crash_files_intact": int(sum(r["intact"] for r in results)),
        "crash_records_per_s_median": round(statistics.median(rates)),
        "crash_records_per_s_min": round(min(rates)),
    }


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=500_000, help="records per run (>= 1000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario; the median is kept")
    ap.add_argument("--always-records", type=int, default=2_000, help="records for fsync=always")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--crashes", type=int, default=20, help="kill -9 rounds (0: skip)")
    ap.add_argument(
        "--readback", type=int, default=0, help="accepted orders a restart reads back (0: skip)"
    )
    ap.add_argument("--crash-writer", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.crash_writer:
        crash_writer(*args.crash_writer)
        return 0
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
        oruns = []  # a node's start: the recorder checks every seal before appending
        for _ in range(args.runs):
            t0 = time.perf_counter()
            FlightRecorder(path, clock=SystemClock()).close()
            oruns.append(time.perf_counter() - t0)
        gib = size / 2**30
        results["audit_reopen_s_per_gib"] = round(statistics.median(oruns) / gib, 3)
        reopen = statistics.median(oruns)
        print(
            f"{'reopen':12s} {reopen * 1000:>9,.1f} ms for {size / 2**20:,.0f} MiB "
            f"({reopen / gib:.2f} s per GiB, every seal checked; median of {args.runs})"
        )

        if args.readback:
            rb = readback(path, args.readback, args.runs)
            m = args.readback
            apart = rb["standing"] + rb["ids"]
            results["restart_readback_ids_per_s"] = round(m / rb["one_pass"])
            results["restart_remember_ids_per_s"] = round(m / rb["remember"])
            results["restart_readback_standing_s"] = round(rb["standing"], 3)
            results["restart_readback_ids_s"] = round(rb["ids"], 3)
            results["restart_readback_one_pass_s"] = round(rb["one_pass"], 3)
            per_m = (rb["one_pass"] + rb["remember"]) * 1e6 / m
            print(
                f"{'readback':12s} {m:,} accepted ids, {os.path.getsize(path) / 2**20:,.0f} MiB "
                f"(median of {args.runs}): standing {rb['standing'] * 1000:,.1f} ms + ids "
                f"{rb['ids'] * 1000:,.1f} ms = {apart * 1000:,.1f} ms in two passes; "
                f"{rb['one_pass'] * 1000:,.1f} ms in one; {rb['remember'] * 1000:,.1f} ms to "
                f"remember them ({rb['held']:,} held; {per_m:.2f} s per million ids at a restart)"
            )

        lat = call_latency(path, n)
        for label, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
            results[f"audit_call_{label}_us"] = round(pct(lat, q), 3)
        results["audit_call_max_us"] = round(lat[-1], 1)
        print(
            "per call (ready+record_decision, file, fsync=batch): "
            f"p50 {pct(lat, 0.5):.2f} µs, p99 {pct(lat, 0.99):.2f} µs, "
            f"p99.9 {pct(lat, 0.999):.1f} µs, max {lat[-1]:.0f} µs"
        )
    goal = 200_000
    rate = float(results["audit_records_per_s"])
    verdict = "MET" if rate >= goal else "MISSED"
    print(f"target >= {goal:,} records/s (file, fsync=batch): {verdict}")
    if args.crashes:
        print(f"crash test: {args.crashes} x kill -9 at a random instant, then reopen")
        crash = crash_test(args.crashes, args.dir)
        results.update(crash)
        ok = crash["crash_decisions_lost"] == 0 and crash["crash_files_intact"] == args.crashes
        fast = crash["crash_records_per_s_median"] >= goal
        print(
            f"decisions returned {crash['crash_decisions_returned']:,}, lost "
            f"{crash['crash_decisions_lost']}, files intact {crash['crash_files_intact']}/"
            f"{args.crashes}, writer {crash['crash_records_per_s_median']:,} records/s median "
            f"(min {crash['crash_records_per_s_min']:,}); target lost = 0 at >= {goal:,}/s: "
            f"{'MET' if ok and fast else 'MISSED'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
