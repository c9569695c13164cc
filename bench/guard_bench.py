"""Guard latency and throughput, side by side with NautilusTrader's RiskEngine in one run.

Both engines see pre-built orders in warm batches of 1,000 and only the check
call is timed. The Guard runs with every rule on (all limits set so that the
pass path passes), the real flight recorder writing a hash-chained file (its
seals, fsyncs and file growth happen during the timed calls, as in a live
node), and the host clock. The blocked path is the kill switch engaged (fleet
HALTED) on both sides. Runs alternate between the engines so machine noise
hits both. The tail (p99.9, max) is per call; p99.9 needs >= 100k calls.

    python bench/guard_bench.py [--n 100000] [--repeats 5] [--json FILE]

`--split B` prints the least `check()` and the flight record alone cost per
call (the best of B batches of 1,000, the two interleaved). `--memory N`
instead runs N orders (accepted, then cancelled) through a Guard with the
default rate limits on a simulated clock at the node's maximum sustained rate
and a one-hour duplicate window, and prints the process's memory as it goes:
flat once the window is full. `--slow N` lists the calls over 1 ms of the
thread's own CPU in N orders with the page faults each took (`--halted` for the
blocked path, `--switch S` to try another interpreter switch interval, `--after M`
to run M accepted orders through another Guard first). `--made-up N`
sends N orders, each for a symbol and strategy seen once (all refused), and prints
the memory they leave behind; `--idle-symbols N` what the rate windows of N
symbols hold once they go idle, and what the heartbeats give back.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audit_bench import throughput as audit_throughput

try:
    from knightwatch import build
except ImportError:  # an older tree without the compiled build (for A/B runs)
    build = None  # type: ignore[assignment]
from knightwatch.audit import AuditContext, FlightRecorder, FsyncPolicy
from knightwatch.clock import SimClock, SystemClock
from knightwatch.decision import ACCEPTED
from knightwatch.guard import Guard
from knightwatch.limits import Limits, rules_for
from knightwatch.order import Order, Side
from knightwatch.state import Scope

BATCH = 1_000
BIG = 10**9

_SESSION_SCOPE: dict[str, Any] = (
    {"duplicate_id_window_s": None} if "duplicate_id_window_s" in Limits.__struct_fields__ else {}
)

# Every rule on, sized so a stream of 100-share orders alternating sides passes.
ALL_ON = Limits(
    version="bench",
    lease_timeout_s=3600.0,
    allowed_symbols=frozenset({"IBM", "AAPL"}),
    restricted_symbols=frozenset({"KCG"}),
    max_order_qty=10_000,
    max_order_notional=1_000_000.0,
    max_price_age_s=3600.0,
    price_collar_pct=0.05,
    price_collar_ticks=500,
    max_orders_per_s_node=BIG,
    max_orders_per_min_node=BIG,
    max_orders_per_s_strategy=BIG,
    max_orders_per_min_strategy=BIG,
    max_orders_per_s_symbol=BIG,
    max_orders_per_min_symbol=BIG,
    max_executions_per_window=100,
    max_child_orders_per_parent=BIG,
    max_position_qty=BIG,
    max_gross_exposure=1e15,
    max_net_exposure=1e15,
    max_customer_gross_exposure=1e15,
    max_customer_net_exposure=1e15,
    max_turnover_per_min=1e15,
    max_cancel_to_fill_ratio=1e12,
    max_loss=1e9,
    max_tracked_order_ids=BIG,
    # ids kept for the whole run (its rates are unbounded); absent from trees before the key
    **_SESSION_SCOPE,
)


class GuardRig:
    def __init__(self, path: Path, halted: bool) -> None:
        clock = SystemClock()
        self.recorder = FlightRecorder(path, clock=clock)
        self.guard = Guard(ALL_ON, node="bench", clock=clock, recorder=self.recorder)
        self.guard.arm("bench")
        self.guard.renew_lease()
        self.guard.on_price("IBM", 100.0)
        self.guard.register_parent("P", BIG)
        if halted:
            self.guard.halt(Scope.FLEET, "fleet", "bench kill switch", actor="bench")
        self.i = 0

    def orders(self, n: int) -> list[Order]:
        out = []
        for _ in range(n):
            side = Side.BUY if self.i % 2 == 0 else Side.SELL
            out.append(Order(f"o{self.i}", "rlp", "IBM", side, 100, 100.0, "P"))
            self.i += 1
        return out

    def settle(self, batch: Sequence[Order]) -> None:
        """Untimed: cancel the batch so working exposure stays bounded, as a venue would."""
        for o in batch:
            self.guard.on_cancel(o.id)


def timed(
    make: Callable[[int], Sequence[Any]],
    call: Callable[[Any], Any],
    settle: Callable[[Sequence[Any]], None],
    n: int,
) -> tuple[float, list[int], list[int]]:
    """Throughput pass (one timer per batch), a latency pass (one timer per call), then a
    CPU pass: the thread's own CPU time per call, which a preempted call does not inflate.

    On a shared machine the wall-clock tail is mostly other processes' turns on the
    core; the CPU tail shows what the engine itself did on its slowest calls.
    """
    pc = time.perf_counter_ns
    total = 0
    done = 0
    while done < n:
        batch = make(min(BATCH, n - done))
        gc.disable()
        t0 = pc()
        for x in batch:
            call(x)
        total += pc() - t0
        gc.enable()
        settle(batch)
        done += len(batch)
    lat: list[int] = []
    done = 0
    while done < n:
        batch = make(BATCH)
        gc.disable()
        for x in batch:
            a = pc()
            call(x)
            lat.append(pc() - a)
        gc.enable()
        settle(batch)
        done += len(batch)
    cpu: list[int] = []
    tt = time.thread_time_ns
    done = 0
    while done < n // 2:
        batch = make(BATCH)
        gc.disable()
        for x in batch:
            a = tt()
            call(x)
            cpu.append(tt() - a)
        gc.enable()
        settle(batch)
        done += len(batch)
    return n / (total / 1e9), lat, cpu


def summary(rates: list[float], lat: list[int], cpu: list[int]) -> dict[str, float]:
    lat.sort()
    cpu.sort()
    return {
        "cpu_p50_us": cpu[len(cpu) // 2] / 1000,
        "cpu_p999_us": cpu[int(len(cpu) * 0.999)] / 1000,
        "cpu_max_us": cpu[-1] / 1000,
        "p50_us": lat[len(lat) // 2] / 1000,
        "p99_us": lat[int(len(lat) * 0.99)] / 1000,
        "p999_us": lat[int(len(lat) * 0.999)] / 1000,
        "max_us": lat[-1] / 1000,
        "orders_per_s": statistics.median(rates),
    }


def run(n: int, repeats: int) -> dict[str, Any]:
    try:
        import nautilus_trader

        from nautilus_rig import NautilusRig

        nt_version: str | None = nautilus_trader.__version__
    except ImportError:
        nt_version = None
    results: dict[str, tuple[list[float], list[int], list[int]]] = {}

    def add(name: str, rate: float, lat: list[int], cpu: list[int]) -> None:
        rates, lats, cpus = results.setdefault(name, ([], [], []))
        rates.append(rate)
        lats.extend(lat)
        cpus.extend(cpu)

    audit_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            audit_path = Path(tmp) / f"audit-only-{r}.jsonl"
            audit_rates.append(audit_throughput(audit_path, 200_000, FsyncPolicy.BATCH))
            for halted in (False, True):
                path = Path(tmp) / f"audit-{r}-{halted}.jsonl"
                g = GuardRig(path, halted)
                rate, lat, cpu = timed(g.orders, g.guard.check, g.settle, n)
                g.recorder.close()
                expect_ok = 0 if halted else 2 * n + n // 2
                if g.guard.accepted != expect_ok:
                    sys.exit(f"guard bench invalid: {g.guard.accepted} accepted, {g.guard.blocked}")
                add("knightwatch_blocked" if halted else "knightwatch", rate, lat, cpu)
                if nt_version is not None:
                    rig = NautilusRig(halted=halted)
                    rate, lat, cpu = timed(rig.commands, rig.engine.execute, lambda _b: None, n)
                    if (rig.denied.n > 0) != halted:
                        sys.exit("nautilus bench invalid: unexpected pass/deny counts")
                    add("nautilus_blocked" if halted else "nautilus", rate, lat, cpu)
    out: dict[str, Any] = {
        "n": n,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "nautilus_trader": nt_version,
        "build": build.describe() if build is not None else "pure Python",
    }
    out["audit_records_per_s"] = round(statistics.median(audit_rates))
    for name, (rates, lat, cpu) in results.items():
        for k, v in summary(rates, lat, cpu).items():
            out[f"{name}_{k}"] = round(v, 3)
    if nt_version is not None:
        out["ratio_p50"] = round(out["knightwatch_p50_us"] / out["nautilus_p50_us"], 3)
        out["ratio_p99"] = round(out["knightwatch_p99_us"] / out["nautilus_p99_us"], 3)
        out["ratio_p999"] = round(out["knightwatch_p999_us"] / out["nautilus_p999_us"], 3)
        out["ratio_cpu_p999"] = round(
            out["knightwatch_cpu_p999_us"] / out["nautilus_cpu_p999_us"], 3
        )
        out["ratio_blocked_p50"] = round(
            out["knightwatch_blocked_p50_us"] / out["nautilus_blocked_p50_us"], 3
        )
    return out


def split(batches: int) -> dict[str, float]:
    """The least each part costs: µs per call of `check()` and of the flight record alone
    (`record_decision`, as the Guard calls it), best of `batches` batches of 1,000, on one
    rig. A batch timer, not one per call, and the best batch: what the code costs here,
    free of the timer and of other processes' turns (the latency runs show those)."""
    with tempfile.TemporaryDirectory() as tmp:
        g = GuardRig(Path(tmp) / "split.jsonl", False)
        ctx = AuditContext(node="bench", limits_version=ALL_ON.version)
        rules = rules_for(ALL_ON)
        record = g.recorder.record_decision
        parts: dict[str, Callable[[Order], object]] = {
            "check": g.guard.check,
            "record_decision": lambda o: record(o, ACCEPTED, ctx, rules),
        }
        best = dict.fromkeys(parts, float("inf"))
        pc = time.perf_counter_ns
        for _ in range(batches):
            for name, call in parts.items():  # interleaved, so both see the same moments
                batch = g.orders(BATCH)
                gc.disable()
                t0 = pc()
                for o in batch:
                    call(o)
                best[name] = min(best[name], (pc() - t0) / BATCH / 1000)
                gc.enable()
                g.settle(batch)
        g.recorder.close()
    return {f"{name}_best_us": round(v, 3) for name, v in best.items()}


def slow_calls(n: int, halted: bool, switch_s: float | None, after: int = 0) -> dict[str, Any]:
    """The `check()` calls over 1 ms of the thread's own CPU in `n` orders, with the page
    faults each took (`getrusage(RUSAGE_THREAD)`, Linux): where a millisecond comes from.
    A call that faulted little spent its time computing (in practice: hashing the rest of a
    batch the sealer handed over); one with thousands of faults, touching fresh memory.

    `after` first runs that many accepted orders through another Guard and recorder in this
    process, as the side-by-side run does before its blocked path: the memory they leave
    behind is what made blocked calls outrun the recorder's read-ahead (35-85 ms calls,
    before the appends' map stopped reading around)."""
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    tt, usage, me = time.thread_time_ns, resource.getrusage, resource.RUSAGE_THREAD
    slow: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if after:
            first = GuardRig(Path(tmp) / "after.jsonl", halted=False)
            timed(first.orders, first.guard.check, first.settle, after)
            first.recorder.close()
        g = GuardRig(Path(tmp) / "slow.jsonl", halted)
        check = g.guard.check
        t0 = time.perf_counter()
        done = 0
        while done < n:
            batch = g.orders(BATCH)
            gc.disable()
            for o in batch:
                f0 = usage(me).ru_minflt
                a = tt()
                check(o)
                c = tt() - a
                if c > 1_000_000:
                    slow.append((c / 1e6, usage(me).ru_minflt - f0))
            gc.enable()
            g.settle(batch)
            done += len(batch)
        rate = done / (time.perf_counter() - t0)
        g.recorder.close()
    return {
        "orders": done,
        "calls_over_1ms": len(slow),
        "max_ms": round(max((ms for ms, _ in slow), default=0.0), 2),
        "slow_ms": [round(ms, 2) for ms, _ in slow],
        "slow_faults": [f for _, f in slow],
        "orders_per_s_in_this_loop": round(rate),
        "switch_interval_s": sys.getswitchinterval(),
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(n: int, window_s: float, json_path: Path | None) -> None:
    """Bytes per order over a long run at the node's maximum sustained rate."""
    limits = Limits(
        version="bench-memory",
        max_price_age_s=None,
        max_orders_per_s_node=500,
        max_orders_per_min_node=10_000,
        max_orders_per_s_strategy=None,
        max_orders_per_min_strategy=None,
        max_orders_per_s_symbol=None,
        max_orders_per_min_symbol=None,
        max_child_orders_per_parent=None,
        max_turnover_per_min=None,
        max_cancel_to_fill_ratio=None,
        duplicate_id_window_s=window_s,
    )
    step = 6_000_000  # ns: 10,000 orders a minute, the per-minute node limit
    clock = SimClock(10**15)
    window_orders = int(window_s * 1e9 / step)
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rec = FlightRecorder(Path(tmp) / "memory.jsonl", clock=clock, fsync=FsyncPolicy.NONE)
        g = Guard(limits, node="bench", clock=clock, recorder=rec)
        g.arm("bench")
        g.on_price("IBM", 100.0)
        marks = sorted({window_orders // 2, window_orders, *range(0, n + 1, max(n // 10, 1))})
        base = rss_bytes()
        t0 = time.perf_counter()
        i = 0
        for mark in marks:
            while i < mark:
                clock.advance(step)
                d = g.check(Order(f"BENCH-{i:09d}", "rlp", "IBM", Side.BUY, 100, 100.0))
                if not d.accepted:
                    sys.exit(f"memory bench invalid: order {i} blocked: {d}")
                g.on_cancel(f"BENCH-{i:09d}")
                i += 1
            # what a full collection (it runs inside an order's call) costs with this held
            full = time.perf_counter()
            gc.collect()
            full_ms = (time.perf_counter() - full) * 1000
            rows.append(
                {
                    "orders": i,
                    "rss_mb": rss_bytes() / 2**20,
                    "ids_held": len(g._ids),
                    "s": time.perf_counter() - t0,
                    "full_gc_ms": full_ms,
                }
            )
            print(
                f"{i:>12,} orders  RSS {rows[-1]['rss_mb']:8.1f} MB  ids held {len(g._ids):>10,}"
                f"  full collection {full_ms:6.1f} ms"
                f"  {rows[-1]['s']:6.0f} s",
                flush=True,
            )
        rec.close()
    after = [r for r in rows if r["orders"] >= window_orders]
    growth = (after[-1]["rss_mb"] - after[0]["rss_mb"]) * 2**20
    per_order_after = growth / max(after[-1]["orders"] - after[0]["orders"], 1)
    per_id = (after[0]["rss_mb"] * 2**20 - base) / max(after[0]["ids_held"], 1)
    print(
        f"after the {window_s:g}s window ({window_orders:,} orders): "
        f"{per_order_after:.2f} bytes per further order (flat = 0); "
        f"{per_id:.0f} bytes per id held (Guard state over the process at start)"
    )
    write_json(
        json_path,
        {
            "rows": rows,
            "window_s": window_s,
            "bytes_per_order_after_window": per_order_after,
            "bytes_per_id_held": per_id,
            "build": build.describe(),
        },
    )


def made_up(n: int, json_path: Path | None) -> None:
    """What a runaway's orders for made-up symbols and strategies leave behind: `n` orders,
    each for a symbol and a strategy seen once, all refused (no reference price), through
    the default limits and the file recorder; prints the bytes still allocated per order
    (`tracemalloc`, after a full collection) and how many lanes and books the Guard holds."""
    clock = SimClock(10**15)
    with tempfile.TemporaryDirectory() as tmp:
        rec = FlightRecorder(Path(tmp) / "made-up.jsonl", clock=clock, fsync=FsyncPolicy.NONE)
        g = Guard(Limits(version="bench-made-up"), node="bench", clock=clock, recorder=rec)
        g.arm("bench")
        g.on_price("IBM", 100.0)
        tracemalloc.start()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        refused = 0
        for i in range(n):
            clock.advance(1_000_000)
            sym = f"X{i:07d}"
            qty = g.lots(sym, "100")
            refused += not g.check(Order(f"M{i:09d}", f"runaway{i}", sym, Side.BUY, qty, 10.0))
            if i % 1_000 == 0:
                g.renew_lease()  # the node's heartbeat: the recorder's idle tick
        gc.collect()
        per_order = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        held = {"lanes": len(g._lanes), "books": len(g._ledger.books)}
        rec.close()
    print(
        f"{n:,} orders for made-up symbols and strategies, {refused:,} refused: "
        f"{per_order:.1f} bytes still allocated per order; Guard holds {held['lanes']} lanes, "
        f"{held['books']} books"
    )
    write_json(json_path, {"orders": n, "refused": refused, "bytes_per_order": per_order, **held})


def idle_symbols(n: int, json_path: Path | None) -> None:
    """What the rate windows hold for symbols that went idle, and what the lease renewal
    gives back: `n` symbols each trade the default per-minute limit (1,000 orders, each at
    its own clock reading, as on the host clock), then a minute passes with heartbeats."""
    clock = SimClock(10**15)
    limits = Limits.off(
        max_orders_per_s_symbol=50, max_orders_per_min_symbol=1_000, require_reference_price=False
    )
    g = Guard(limits, node="bench", clock=clock)
    g.arm("bench")
    tracemalloc.start()
    for j in range(1_000):
        for i in range(n):
            clock.advance(1_000_000_000 // (40 * n))  # 40 orders/s per symbol
            oid = f"I{j}-{i}"
            g.check(Order(oid, "s", f"S{i}", Side.BUY, 1, 10.0))
            g.on_cancel(oid)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    clock.advance(61 * 10**9)
    for _ in range(-(-(n + 1) // 64)):  # the heartbeats of one sweep
        g.renew_lease()
    gc.collect()
    freed = held - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{n:,} symbols at 1,000 timestamps each, then a minute idle: the lease renewals freed "
        f"{freed / n / 1024:.1f} KiB per symbol ({freed / n / 1_000:.1f} B per timestamp)"
    )
    write_json(json_path, {"symbols": n, "bytes_freed_per_symbol": freed / n})


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    """Also write the figures as JSON, when asked (`--json FILE`)."""
    if path is not None:
        path.write_text(json.dumps(figures, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="orders per timed run (>= 100k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--memory", type=int, default=0, metavar="N", help="memory run of N orders")
    ap.add_argument("--window", type=float, default=3600.0, help="duplicate window (--memory)")
    ap.add_argument(
        "--made-up", type=int, default=0, metavar="N", help="N orders for made-up symbols: memory"
    )
    ap.add_argument(
        "--idle-symbols", type=int, default=0, metavar="N", help="rate windows of N idle symbols"
    )
    ap.add_argument(
        "--split", type=int, default=0, metavar="B", help="best of B batches: check, record alone"
    )
    ap.add_argument("--slow", type=int, default=0, metavar="N", help="calls over 1 ms in N orders")
    ap.add_argument("--halted", action="store_true", help="--slow: the blocked path")
    ap.add_argument("--switch", type=float, default=None, help="--slow: interpreter switch (s)")
    ap.add_argument(
        "--after", type=int, default=0, metavar="M", help="--slow: after M accepted orders"
    )
    a = ap.parse_args()
    if a.slow:
        out = slow_calls(a.slow, a.halted, a.switch, a.after)
        print(
            f"{out['calls_over_1ms']} calls over 1 ms of CPU in {out['orders']:,} orders "
            f"({'blocked' if a.halted else 'accepted'}"
            f"{f' after {a.after:,} accepted' if a.after else ''}; switch interval "
            f"{out['switch_interval_s'] * 1000:g} ms; {out['orders_per_s_in_this_loop']:,} "
            f"orders/s in this loop): ms {out['slow_ms']}, page faults {out['slow_faults']}"
        )
        write_json(a.json, out)
        return
    if a.memory:
        memory(a.memory, a.window, a.json)
        return
    if a.made_up:
        made_up(a.made_up, a.json)
        return
    if a.idle_symbols:
        idle_symbols(a.idle_symbols, a.json)
        return
    if a.split:
        parts = split(a.split)
        desc = build.describe() if build is not None else "pure Python"
        print(
            f"best of {a.split} batches of {BATCH:,} ({desc}), us per call: "
            + ", ".join(f"{k.removesuffix('_best_us')} {v:.3f}" for k, v in parts.items())
        )
        write_json(a.json, parts)
        return
    res = run(a.n, a.repeats)
    print(
        f"Guard vs NautilusTrader RiskEngine: {a.n:,} orders x {a.repeats} runs, {res['machine']}"
    )
    print(f"knightwatch build: {res['build']}")
    print(
        f"{'engine / path':<24}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>10}"
        f"{'orders/s (median)':>20}{'CPU p99.9 us':>14}{'CPU max us':>12}"
    )
    for name in ("knightwatch", "nautilus", "knightwatch_blocked", "nautilus_blocked"):
        if f"{name}_p50_us" in res:
            print(
                f"{name:<24}{res[f'{name}_p50_us']:>9.2f}{res[f'{name}_p99_us']:>9.2f}"
                f"{res[f'{name}_p999_us']:>10.1f}{res[f'{name}_max_us']:>10.0f}"
                f"{res[f'{name}_orders_per_s']:>20,.0f}"
                f"{res[f'{name}_cpu_p999_us']:>14.1f}{res[f'{name}_cpu_max_us']:>12.0f}"
            )
    print(
        f"flight recorder: {res['audit_records_per_s']:,} records/s with the hash chain "
        "(file, fsync per batch; target 200,000)"
    )
    if res["nautilus_trader"] is None:
        print("nautilus_trader not installed: `pip install -e '.[bench]'` for the comparison")
    else:
        print(
            f"ratio_p50 (knightwatch / nautilus) = {res['ratio_p50']:.3f}, "
            f"p99 ratio {res['ratio_p99']:.2f}, p99.9 ratio {res['ratio_p999']:.2f}, "
            f"blocked-path p50 ratio {res['ratio_blocked_p50']:.2f}"
        )
        compiled = build is not None and build.compiled()
        goal = 0.40 if compiled else 0.60
        print(
            f"targets: accepted p99.9 {res['knightwatch_p999_us']:.1f} us <= 100 us: "
            f"{'MET' if res['knightwatch_p999_us'] <= 100 else 'MISSED'} "
            f"(CPU p99.9 {res['knightwatch_cpu_p999_us']:.1f} us: "
            f"{'MET' if res['knightwatch_cpu_p999_us'] <= 100 else 'MISSED'}); "
            f"ratio_p50 {res['ratio_p50']:.3f} <= {goal:.2f} "
            f"({'compiled' if compiled else 'pure Python'}): "
            f"{'MET' if res['ratio_p50'] <= goal else 'MISSED'}"
        )
    write_json(a.json, res)


if __name__ == "__main__":
    main()
