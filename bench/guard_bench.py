"""Guard latency and throughput, side by side with NautilusTrader's RiskEngine in one run.

Both engines see pre-built orders in warm batches of 1,000 and only the check
call is timed. The Guard runs with every rule on (all limits set so that the
pass path passes), the real flight recorder writing a hash-chained file, and
the host clock. The blocked path is the kill switch engaged (fleet HALTED) on
both sides. Runs alternate between the engines so machine noise hits both.

    python bench/guard_bench.py [--n 100000] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audit_bench import throughput as audit_throughput
from knightwatch.audit import FlightRecorder, FsyncPolicy
from knightwatch.clock import SystemClock
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side
from knightwatch.state import Scope

BATCH = 1_000
BIG = 10**9

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
        """Untimed: cancel the batch so working exposure stays bounded, as a venue would.

        The cancels' own records are flushed here too, so the timed batch pays
        only for recording its own decisions.
        """
        for o in batch:
            self.guard.on_cancel(o.id)
        self.recorder.flush()


def timed(
    make: Callable[[int], Sequence[Any]],
    call: Callable[[Any], Any],
    settle: Callable[[Sequence[Any]], None],
    n: int,
) -> tuple[float, list[int]]:
    """Throughput pass (one timer per batch) then a latency pass (one timer per call)."""
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
    while done < n // 5:
        batch = make(BATCH)
        gc.disable()
        for x in batch:
            a = pc()
            call(x)
            lat.append(pc() - a)
        gc.enable()
        settle(batch)
        done += len(batch)
    return n / (total / 1e9), lat


def summary(rates: list[float], lat: list[int]) -> dict[str, float]:
    lat.sort()
    return {
        "p50_us": lat[len(lat) // 2] / 1000,
        "p99_us": lat[int(len(lat) * 0.99)] / 1000,
        "orders_per_s": statistics.median(rates),
    }


def run(n: int, repeats: int) -> dict[str, Any]:
    try:
        import nautilus_trader

        from nautilus_rig import NautilusRig

        nt_version: str | None = nautilus_trader.__version__
    except ImportError:
        nt_version = None
    results: dict[str, tuple[list[float], list[int]]] = {}

    def add(name: str, rate: float, lat: list[int]) -> None:
        rates, lats = results.setdefault(name, ([], []))
        rates.append(rate)
        lats.extend(lat)

    audit_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            audit_path = Path(tmp) / f"audit-only-{r}.jsonl"
            audit_rates.append(audit_throughput(audit_path, 200_000, FsyncPolicy.BATCH))
            for halted in (False, True):
                path = Path(tmp) / f"audit-{r}-{halted}.jsonl"
                g = GuardRig(path, halted)
                rate, lat = timed(g.orders, g.guard.check, g.settle, n)
                g.recorder.close()
                expect_ok = 0 if halted else n + n // 5
                if g.guard.accepted != expect_ok:
                    sys.exit(f"guard bench invalid: {g.guard.accepted} accepted, {g.guard.blocked}")
                add("knightwatch_blocked" if halted else "knightwatch", rate, lat)
                if nt_version is not None:
                    rig = NautilusRig(halted=halted)
                    rate, lat = timed(rig.commands, rig.engine.execute, lambda _b: None, n)
                    if (rig.denied.n > 0) != halted:
                        sys.exit("nautilus bench invalid: unexpected pass/deny counts")
                    add("nautilus_blocked" if halted else "nautilus", rate, lat)
    out: dict[str, Any] = {
        "n": n,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "nautilus_trader": nt_version,
    }
    out["audit_records_per_s"] = round(statistics.median(audit_rates))
    for name, (rates, lat) in results.items():
        for k, v in summary(rates, lat).items():
            out[f"{name}_{k}"] = round(v, 3)
    if nt_version is not None:
        out["ratio_p50"] = round(out["knightwatch_p50_us"] / out["nautilus_p50_us"], 3)
        out["ratio_p99"] = round(out["knightwatch_p99_us"] / out["nautilus_p99_us"], 3)
        out["ratio_blocked_p50"] = round(
            out["knightwatch_blocked_p50_us"] / out["nautilus_blocked_p50_us"], 3
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="orders per timed run (>= 100k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    res = run(a.n, a.repeats)
    print(
        f"Guard vs NautilusTrader RiskEngine: {a.n:,} orders x {a.repeats} runs, {res['machine']}"
    )
    print(f"{'engine / path':<28}{'p50 us':>9}{'p99 us':>9}{'orders/s (median)':>20}")
    for name in ("knightwatch", "nautilus", "knightwatch_blocked", "nautilus_blocked"):
        if f"{name}_p50_us" in res:
            print(
                f"{name:<28}{res[f'{name}_p50_us']:>9.2f}{res[f'{name}_p99_us']:>9.2f}"
                f"{res[f'{name}_orders_per_s']:>20,.0f}"
            )
    print(
        f"flight recorder: {res['audit_records_per_s']:,} records/s with the hash chain "
        "(file, fsync per batch; target 200,000)"
    )
    if res["nautilus_trader"] is None:
        print("nautilus_trader not installed: `pip install -e '.[bench]'` for the comparison")
    else:
        print(
            f"ratio_p50 (knightwatch / nautilus) = {res['ratio_p50']:.2f}, "
            f"p99 ratio {res['ratio_p99']:.2f}, "
            f"blocked-path p50 ratio {res['ratio_blocked_p50']:.2f}"
        )
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
