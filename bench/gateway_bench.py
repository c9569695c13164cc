"""FIX round trip through the risk gateway vs the same client talking to the same venue directly.

Three processes, all QuickFIX on 127.0.0.1: `knightwatch venue --fix` (the
simulated market), `knightwatch gateway` (a full fleet node: embedded NATS,
lease, the Guard with its flight recorder on disk) and this process, which
holds two client sessions, one to the venue and one to the gateway. One
order in flight at a time; the time is NewOrderSingle sent -> the first
ExecutionReport for it received. Rounds alternate direct, gateway and
blocked batches so machine noise hits all three.

- direct: client -> venue (the floor);
- gateway: client -> gateway (Guard accepts) -> venue -> gateway -> client;
- blocked: an order the Guard refuses, answered by the gateway itself.

Also measured: the gateway process's CPU per order (user+sys from /proc over
the gateway batches), and the Guard's own work per order in one process
(check + fill, with and without the lock the gateway uses).

    python bench/gateway_bench.py [--orders 3000] [--rounds 3] [--store memory] [--json FILE]

`--book N` measures the gateway's book alone instead (no processes): N orders
routed and finished at a steady rate over four duplicate scopes, with the
memory it holds at the end of each (flat after the first when it forgets,
growing when it does not), and the scan a kill or a disconnect makes with N
finished orders and 100 live ones, against a scan of every order (what the
book did before it indexed the live ones).

    python bench/gateway_bench.py --book 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knightwatch.audit import FlightRecorder
from knightwatch.clock import SimClock, SystemClock
from knightwatch.control.plane.connect import control_plane
from knightwatch.control.plane.server import free_port
from knightwatch.gateway import fields as F
from knightwatch.gateway.book import GatewayBook, GwOrder
from knightwatch.gateway.client import FixClient
from knightwatch.gateway.engine import fix
from knightwatch.guard import Guard, LockedGuard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side
from knightwatch.sim.drill.drill import local_kit

SYMBOL = "L000"
LIMITS_TOML = """
version = "gateway-bench"
[fleet]
max_orders_per_s_node = 1000000
max_orders_per_min_node = 10000000
max_orders_per_s_strategy = 1000000
max_orders_per_min_strategy = 10000000
max_orders_per_s_symbol = 1000000
max_orders_per_min_symbol = 10000000
max_executions_per_window = 1000000
max_cancel_to_fill_ratio = 1000000.0
max_child_orders_per_parent = 1000000
duplicate_id_window_s = 60.0
max_tracked_order_ids = 20000000
"""
BLOCKED_QTY = 50_000  # > max_order_qty (10,000 by default)


class FirstReport:
    """Wakes the sender on the first ExecutionReport for the order in flight."""

    def __init__(self) -> None:
        self.want = ""
        self.at = 0
        self.event = threading.Event()

    def __call__(self, mtype: str, msg: Any) -> None:
        if (
            mtype == F.EXECUTION_REPORT
            and not self.event.is_set()
            and msg.getField(F.CL_ORD_ID) == self.want
        ):
            self.at = time.perf_counter_ns()
            self.event.set()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def pct(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e3


def batch(client: FixClient, probe: FirstReport, n: int, prefix: str, qty: int) -> list[int]:
    """Send n market orders one at a time (sides alternate), return round trips in ns."""
    out: list[int] = []
    for i in range(n):
        cid = f"{prefix}{i}"
        msg = client.order_message(cid, SYMBOL, "1" if i % 2 else "2", qty, None)
        probe.want = cid
        probe.event.clear()
        t0 = time.perf_counter_ns()
        client.send(msg)
        if not probe.event.wait(5):
            raise RuntimeError(f"no execution report for {cid} within 5 s")
        out.append(probe.at - t0)
    return out


def guard_work(n: int, tmp: Path) -> dict[str, float]:
    """The Guard's own work per order (check + fill), file recorder, with and without the lock."""
    limits = Limits.from_toml(tmp / "limits.toml")
    out: dict[str, float] = {}
    for name, cls in (("guard", Guard), ("locked_guard", LockedGuard)):
        clock = SystemClock()
        with FlightRecorder(tmp / f"{name}.jsonl", clock=clock) as rec:
            g = cls(limits, node="bench", clock=clock, recorder=rec)
            g.arm("bench")
            g.on_price(SYMBOL, 100.0)
            orders = [
                Order(f"o{i}", "bench", SYMBOL, Side.BUY if i % 2 else Side.SELL, 1, None)
                for i in range(n)
            ]
            fills = [Fill(o.id, SYMBOL, o.side, 1, 100.0) for o in orders]
            each: list[int] = []
            clock_ns = time.perf_counter_ns
            t0 = clock_ns()
            for o, f in zip(orders, fills, strict=True):
                t = clock_ns()
                g.check(o)
                g.on_fill(f)
                each.append(clock_ns() - t)
            out[name] = (clock_ns() - t0) / n / 1e3
            out[f"{name}_p50"] = pct(each, 0.5)
    # the gateway's whole per-order path without sockets: read the FIX fields, build the
    # Order, check under the lock, copy the message for the venue
    q = fix()
    clock = SystemClock()
    with FlightRecorder(tmp / "mapped.jsonl", clock=clock) as rec:
        g = LockedGuard(limits, node="bench", clock=clock, recorder=rec)
        g.arm("bench")
        g.on_price(SYMBOL, 100.0)
        msgs = []
        for i in range(n):
            m = q.Message()
            m.getHeader().setField(F.MSG_TYPE, F.NEW_ORDER)
            for tag, v in (
                (11, f"m{i}"),
                (55, SYMBOL),
                (54, "1" if i % 2 else "2"),
                (38, "1"),
                (40, "1"),
                (60, "20260101-00:00:00"),
            ):
                m.setField(tag, v)
            msgs.append(m)
        sides = {"1": Side.BUY, "2": Side.SELL}
        t0 = time.perf_counter_ns()
        for raw in msgs:
            m = F.In(raw)
            cid, sym = m[F.CL_ORD_ID], m[F.SYMBOL]
            o = Order(
                f"BENCH:{cid}", "BENCH", sym, sides[m[F.SIDE]], g.lots(sym, m[F.ORDER_QTY]), None
            )
            with g.lock:
                g.note(
                    "fix_in",
                    order_id=o.id,
                    session="BENCH",
                    seq=m.seq,
                    msg_type="D",
                    clordid=cid,
                    raw_sha256=F.raw_hash(m),
                    resent=m.resent,
                )
                g.check(o)
                F.forward_copy(m)
            g.on_fill(Fill(o.id, sym, o.side, 1, 100.0))
        out["mapped_path"] = (time.perf_counter_ns() - t0) / n / 1e3
    return out


def spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    # The flight recorder keeps every refusal; a log line per refused order is turned off
    # (KNIGHTWATCH_LOG=ERROR), as an operator would for a gateway under a refusal burst.
    env = {**os.environ, "KNIGHTWATCH_LOG": "ERROR"}
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def wait_for(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{needle!r} not seen; log:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def run(orders: int, rounds: int, warmup: int, store: str, tmp: Path) -> dict[str, Any]:
    kw = [str(Path(sys.executable).parent / "knightwatch")]
    venue_port, gw_port = free_port(), free_port()
    (tmp / "limits.toml").write_text(LIMITS_TOML)
    (tmp / "gw.toml").write_text(
        f'listen_port = {gw_port}\nnode = "gwbench"\nstore = "{store}"\nassume_flat = true\n'
        f'[venue]\nport = {venue_port}\nmarket_data = ["{SYMBOL}"]\n'
        '[[clients]]\ncomp_id = "BENCH"\n'
    )
    log_flag = "--no-fix-log" if store == "memory" else "--fix-log"
    venue = spawn(
        [
            *kw,
            "venue",
            "--fix",
            "--port",
            str(venue_port),
            "--sessions",
            "KWGW,DIRECT",
            "--store",
            store,
            log_flag,
            "--state-dir",
            str(tmp / "venue"),
        ],
        tmp / "venue.log",
    )
    gateway: subprocess.Popen[bytes] | None = None
    clients: list[FixClient] = []
    try:
        wait_for(tmp / "venue.log", "venue VENUE on", venue, 60)
        gateway = spawn(
            [
                *kw,
                "gateway",
                str(tmp / "gw.toml"),
                "--limits",
                str(tmp / "limits.toml"),
                "--state-dir",
                str(tmp / "gw"),
                "--key",
                str(tmp / "gw" / "trust" / "keys" / "gwbench.key"),
                log_flag,
            ],
            tmp / "gateway.log",
        )
        wait_for(tmp / "gateway.log", "node gwbench admitted", gateway, 60)
        probes = {"direct": FirstReport(), "gateway": FirstReport()}
        direct = FixClient(
            tmp / "c1",
            comp_id="DIRECT",
            target="VENUE",
            port=venue_port,
            on_message=probes["direct"],
        )
        via = FixClient(
            tmp / "c2", comp_id="BENCH", target="KWGW", port=gw_port, on_message=probes["gateway"]
        )
        clients = [direct, via]
        for c in clients:
            c.start()
            c.wait_logon()
        paths: dict[str, tuple[FixClient, FirstReport, int, int]] = {
            "direct": (direct, probes["direct"], 1, orders),
            "gateway": (via, probes["gateway"], 1, orders),
            "blocked": (via, probes["gateway"], BLOCKED_QTY, max(orders // 5, 200)),
        }
        for name, (c, p, qty, _) in paths.items():
            batch(c, p, warmup, f"w{name}", qty)
        lat: dict[str, list[int]] = {k: [] for k in paths}
        per_round: dict[str, list[float]] = {k: [] for k in paths}
        cpu = 0
        for r in range(rounds):
            for name, (c, p, qty, n) in paths.items():
                t0 = cpu_ticks(gateway.pid) if name == "gateway" else 0
                got = batch(c, p, n, f"r{r}{name[0]}", qty)
                if name == "gateway":
                    cpu += cpu_ticks(gateway.pid) - t0
                lat[name] += got
                per_round[name].append(pct(got, 0.5))
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        summary = {
            k: {
                "n": len(v),
                "p50_us": statistics.median(per_round[k]),
                "p99_us": pct(v, 0.99),
                "p999_us": pct(v, 0.999),
                "p50_per_round_us": per_round[k],
            }
            for k, v in lat.items()
        }
        p50 = {k: statistics.median(per_round[k]) for k in lat}
        return {
            "paths": summary,
            "gateway_over_direct_p50": p50["gateway"] / p50["direct"],
            "blocked_over_direct_p50": p50["blocked"] / p50["direct"],
            "gateway_cpu_us_per_order": cpu * tick_us / (orders * rounds),
            "guard_us_per_order": guard_work(20_000, tmp),
        }
    finally:
        for c in clients:
            c.stop()
        for proc in (gateway, venue):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def book_figures(n: int) -> dict[str, Any]:
    """The book alone: memory held per scope with and without forgetting, and the kill's scan."""
    import tracemalloc

    from knightwatch.decision import ACCEPTED

    per_window = n // 4
    window_ns = 100 * 1_000_000_000  # a scope of 100 simulated seconds
    step = window_ns // per_window
    out: dict[str, Any] = {}
    for label, window in (("forgets", window_ns), ("keeps", None)):
        clock = SimClock()
        book = GatewayBook(window, clock.monotonic_ns)
        held: list[int] = []
        tracemalloc.start()
        for i in range(n):
            clock.advance(step)
            go = GwOrder("C1", f"c{i}", f"C1:c{i}", "s", SYMBOL, Side.BUY, "1", 100, 10.0)
            book.claim(go.clordid, "C1")
            book.add(go)
            book.decide(go.guard_id, ACCEPTED, go)
            book.saw_exec(f"e{i}", go)
            book.keep_fill(f"e{i}", Fill(go.guard_id, SYMBOL, Side.BUY, 100, 10.0))
            book.set_status(go, "2")
            if (i + 1) % per_window == 0:
                held.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        out[label] = {"bytes_held_per_scope": held, "orders_held": len(book.orders)}
        del book
    book = GatewayBook()
    for i in range(n):
        go = GwOrder("C1", f"c{i}", f"C1:c{i}", "s", SYMBOL, Side.BUY, "1", 100, 10.0)
        book.add(go)
        book.set_status(go, "2")
    for i in range(100):
        book.add(GwOrder("C1", f"l{i}", f"C1:l{i}", "s", SYMBOL, Side.BUY, "1", 100, 10.0))
    scans: dict[str, list[float]] = {"indexed": [], "every_order": []}
    for _ in range(5):
        t = time.perf_counter()
        live = book.live()
        scans["indexed"].append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        every = [o for o in book.orders.values() if o.live]
        scans["every_order"].append((time.perf_counter() - t) * 1e3)
        assert len(live) == len(every) == 100
    out["kill_scan_ms_median"] = {k: statistics.median(v) for k, v in scans.items()}
    out["orders"] = n
    return out


def show_book(res: dict[str, Any]) -> None:
    n = res["orders"]
    print(f"gateway book, {n:,} orders routed and finished over 4 scopes (one fill each)")
    for label in ("forgets", "keeps"):
        held = res[label]["bytes_held_per_scope"]
        mb = " / ".join(f"{b / 1e6:.0f}" for b in held)
        print(
            f"  {label:8} MB held at the end of each scope: {mb}; "
            f"{held[-1] / res[label]['orders_held']:.0f} B per order held; "
            f"orders held at the end {res[label]['orders_held']:,}"
        )
    k = res["kill_scan_ms_median"]
    print(
        f"kill/disconnect scan with {n:,} finished + 100 live orders: "
        f"{k['indexed']:.3f} ms (live index) vs {k['every_order']:.1f} ms (every order)"
    )


async def in_fleet(orders: int, rounds: int, warmup: int, store: str, tmp: Path) -> dict[str, Any]:
    """`run` with the gateway a node of a local fleet, as `knightwatch drill --fix` runs it:
    its enrolled key and the fleet's trust anchor under the gateway's state dir, and an
    embedded NATS server with authorization on, whose URL the gateway finds there."""
    kit = local_kit(tmp / "gw", ["gwbench"])
    async with control_plane([], tmp / "gw", "gwbench", signer=kit.signer("alice"), embed=kit):
        return await asyncio.to_thread(run, orders, rounds, warmup, store, tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--book", type=int, default=0, help="measure the book alone with N orders")
    ap.add_argument("--orders", type=int, default=3_000, help="orders per path per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument(
        "--store",
        choices=("memory", "file"),
        default="memory",
        help="QuickFIX session stores (file also turns message logs on)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.book:
        book = book_figures(args.book)
        show_book(book)
        if args.json is not None:
            args.json.write_text(json.dumps(book, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="kw-gwbench-") as tmp:
        res = asyncio.run(in_fleet(args.orders, args.rounds, args.warmup, args.store, Path(tmp)))
    res["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "store": args.store,
    }
    show: Callable[[str], None] = print
    show(
        f"FIX round trip, {args.orders:,} orders x {args.rounds} rounds per path, "
        f"stores: {args.store}, load {os.getloadavg()[0]:.1f}"
    )
    show(f"{'path':10} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9}")
    for k, v in res["paths"].items():
        show(f"{k:10} {v['p50_us']:9.0f} {v['p99_us']:9.0f} {v['p999_us']:9.0f}")
    show(f"gateway / direct p50: {res['gateway_over_direct_p50']:.2f} (target <= 2.3)")
    show(f"blocked / direct p50: {res['blocked_over_direct_p50']:.2f} (target < 1)")
    show(f"gateway CPU per order: {res['gateway_cpu_us_per_order']:.0f} us (user+sys)")
    g = res["guard_us_per_order"]
    show(
        f"Guard work per order (check + fill, file recorder): mean {g['locked_guard']:.1f} us "
        f"(p50 {g['locked_guard_p50']:.1f}) with the lock, mean {g['guard']:.1f} us "
        f"(p50 {g['guard_p50']:.1f}) without (target < 25); whole mapped path "
        f"{g['mapped_path']:.1f} us"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
