"""`knightwatch drill --fix`: a day of FIX flow and a Power Peg runaway through the gateway.

Everything is real and runs as separate processes on 127.0.0.1: an embedded
NATS control plane, `knightwatch venue --fix` (the simulated market) and
`knightwatch gateway` (a fleet node with the Guard); this process is the OMS,
a QuickFIX client. Three phases, each timed:

1. normal flow: limit orders that fill or rest, replaces, cancels, and a few
   fat-finger orders the Guard refuses;
2. a Power Peg runaway: children of one parent sent as fast as the session
   takes them, never reading fills; parent reconciliation stops it;
3. a fleet kill from the control plane while orders rest at the venue: the
   Guard blocks at once, the gateway cancels every working order at the
   venue, and the kill is confirmed only when none is left.

The report says what got out, what the Guard refused and why, and the kill's
venue cancels, with the time each took.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.connect import control_plane
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.server import free_port
from knightwatch.gateway import fields as F
from knightwatch.gateway.client import FixClient, Received
from knightwatch.gateway.engine import GatewayError
from knightwatch.sim.drill.drill import local_kit
from knightwatch.state import Scope
from knightwatch.trust.kit import Kit

SYMBOLS = ("L000", "L001", "L002", "M000", "M001")
PARENT_QTY = 1_000
CHILD_QTY = 100
LIMITS = """
version = "fix-drill"
[fleet]
max_order_qty = 5000
max_order_notional = 500000.0
price_collar_pct = 0.05
max_orders_per_s_symbol = 1000
max_orders_per_min_symbol = 20000
max_orders_per_s_strategy = 2000
max_orders_per_min_strategy = 50000
max_orders_per_s_node = 5000
max_orders_per_min_node = 100000
require_registered_parent = true
max_child_orders_per_parent = 50
max_cancel_to_fill_ratio = 1000.0
duplicate_id_window_s = 3600.0
"""


class PhaseReport(msgspec.Struct, frozen=True):
    name: str
    seconds: float
    sent: int
    routed: int
    """Orders the gateway sent to the venue (acknowledged by the venue)."""
    refused: dict[str, int]
    """Guard refusals by reason code."""
    filled: int


class KillReport(msgspec.Struct, frozen=True):
    working_before: int
    confirmed_ms: float
    """Kill issued -> the gateway's confirmation (after the venue cancelled everything)."""
    client_cancels: int
    """Unsolicited cancel reports the OMS got, one per working order."""
    client_cancels_ms: float
    working_after: int
    still_working: list[str]
    refused_after: str


class FixDrillReport(msgspec.Struct, frozen=True):
    phases: list[PhaseReport]
    runaway_children: int
    runaway_escaped: int
    """Children the Guard let out: at most the parent's quantity in children."""
    runaway_stopped_by: str
    kill: KillReport
    venue_orders: int
    scraped_refused: int
    """The gateway's own `refused` counter on its `--metrics-port` after the runaway."""
    passed: bool


class _Processes:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, args: list[str]) -> Path:
        log = self.state_dir / f"{name}.log"
        exe = str(Path(sys.executable).parent / "knightwatch")
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT))
        return log

    async def wait_line(self, log: Path, needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise GatewayError(f"{log}: {needle!r} not seen:\n{log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def _reports(client: FixClient, prefix: str) -> list[Received]:
    return [r for r in client.received if r.get(F.CL_ORD_ID).startswith(prefix)]


def _phase(name: str, client: FixClient, prefix: str, sent: int, t0: float) -> PhaseReport:
    got = _reports(client, prefix)
    refused = Counter(
        r.get(F.TEXT).split(" ", 1)[0].removeprefix("knightwatch:")
        for r in got
        if r.mtype == F.EXECUTION_REPORT
        and r.get(F.EXEC_TYPE) == "8"
        and r.get(F.TEXT).startswith("knightwatch:")
    )
    routed = {r.get(F.CL_ORD_ID) for r in got if r.get(F.EXEC_TYPE) == "0"}
    filled = {r.get(F.CL_ORD_ID) for r in got if r.get(F.ORD_STATUS) == "2"}
    return PhaseReport(name, time.monotonic() - t0, sent, len(routed), dict(refused), len(filled))


async def _settle(client: FixClient, ids: list[str], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(not client.reports(i) for i in ids):
        if time.monotonic() > deadline:
            raise GatewayError(f"no report for {[i for i in ids if not client.reports(i)][:5]}")
        await asyncio.sleep(0.01)


async def run_fix_drill(state_dir: Path, console: Console, orders: int = 300) -> FixDrillReport:
    """Run the three phases and return the report (see the module docstring)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    venue_port, gw_port = free_port(), free_port()
    (state_dir / "limits.toml").write_text(LIMITS)
    (state_dir / "gateway.toml").write_text(
        f'listen_port = {gw_port}\nnode = "fixgw"\nassume_flat = true\n'
        f"[venue]\nport = {venue_port}\nmarket_data = {list(SYMBOLS)!r}\n"
        '[[clients]]\ncomp_id = "OMS"\nstrategy = "desk"\n'.replace("'", '"')
    )
    procs = _Processes(state_dir)
    oms: FixClient | None = None
    kit = local_kit(state_dir, ["fixgw"])  # the gateway's key, alice who kills (keys 0600)
    trust_dir = state_dir / "trust"
    async with control_plane(
        [], state_dir, "fix-drill", signer=kit.signer("alice"), embed=kit
    ) as plane:
        try:
            vlog = procs.spawn(
                "venue",
                [
                    "venue",
                    "--fix",
                    "--port",
                    str(venue_port),
                    "--sessions",
                    "KWGW",
                    "--clip",
                    "200",
                    "--state-dir",
                    str(state_dir / "venue"),
                ],
            )
            glog = procs.spawn(  # at once: the gateway retries the venue until it listens
                "gateway",
                [
                    "gateway",
                    str(state_dir / "gateway.toml"),
                    "--limits",
                    str(state_dir / "limits.toml"),
                    "--state-dir",
                    str(state_dir),
                    "--key",
                    str(trust_dir / "keys" / "fixgw.key"),
                    "--anchor",
                    str(trust_dir / "anchor.toml"),
                    "--metrics-port",
                    "0",
                ],
            )
            await procs.wait_line(vlog, "venue VENUE on")
            await procs.wait_line(glog, "node fixgw admitted")
            found = re.search(r"metrics on (http://\S+)", glog.read_text(errors="replace"))
            if found is None:
                raise GatewayError(f"{glog}: the gateway printed no metrics URL")
            console.print(f"venue on :{venue_port}, gateway node fixgw on :{gw_port} (FIX 4.4)")
            oms = FixClient(state_dir / "oms", comp_id="OMS", target="KWGW", port=gw_port)
            oms.start()
            await asyncio.to_thread(oms.wait_logon)
            phases = [await _normal_flow(oms, orders)]
            runaway, children = await _runaway(oms)
            phases.append(runaway)
            scraped = await asyncio.to_thread(_scraped, found.group(1), "refused")
            kill = await _kill(oms, plane, kit)
            venue_orders = _venue_orders(procs, vlog)
        finally:
            if oms is not None:
                await asyncio.to_thread(oms.stop)
            await asyncio.to_thread(procs.stop)
    escaped = runaway.routed
    stopped_by = max(runaway.refused, key=lambda k: runaway.refused[k], default="-")
    report = FixDrillReport(
        phases=phases,
        runaway_children=children,
        runaway_escaped=escaped,
        runaway_stopped_by=stopped_by,
        kill=kill,
        venue_orders=venue_orders,
        scraped_refused=scraped,
        passed=(
            escaped * CHILD_QTY <= PARENT_QTY
            and stopped_by == "parent_qty_exceeded"
            and kill.working_after == 0
            and not kill.still_working
            and kill.client_cancels == kill.working_before
            and kill.refused_after == "halted"
        ),
    )
    _print(report, console)
    return report


async def _normal_flow(oms: FixClient, n: int) -> PhaseReport:
    """Limit orders around the touch (fill or rest), then replaces and cancels, and fat fingers."""
    t0 = time.monotonic()
    ids: list[str] = []
    for i in range(n):
        sym = SYMBOLS[i % len(SYMBOLS)]
        ref = 100.0 if sym.startswith("L") else 40.0
        cid = f"N{i}"
        side = "1" if i % 2 else "2"
        if i % 25 == 7:
            oms.new_order(cid, sym, side, 60_000, ref)  # fat finger: refused
        else:
            crosses = i % 3 == 0
            off = 0.02 * ref if crosses else -0.01 * ref
            px = round(ref + off if side == "1" else ref - off, 2)
            oms.new_order(cid, sym, side, 100 + 100 * (i % 4), px)
        ids.append(cid)
        if i % 10 == 0:
            await asyncio.sleep(0.01)  # about a hundred orders a second
    await _settle(oms, ids)
    resting = [
        r.get(F.CL_ORD_ID)
        for r in oms.received
        if r.get(F.EXEC_TYPE) == "0"
        and r.get(F.CL_ORD_ID).startswith("N")
        and not any(x.get(F.ORD_STATUS) in ("2", "8") for x in oms.reports(r.get(F.CL_ORD_ID)))
    ]
    changed: list[str] = []
    for j, cid in enumerate(resting[: max(len(resting) // 2, 1)]):
        first = oms.reports(cid)[0]
        sym, side, qty = first.get(F.SYMBOL), first.get(F.SIDE), first.get(F.ORDER_QTY)
        if j % 2:
            oms.cancel(f"NX{j}", cid, sym, side, qty)
        else:
            oms.replace(f"NR{j}", cid, sym, side, int(float(qty)) + 100, float(first.get(F.PRICE)))
        changed.append(f"NX{j}" if j % 2 else f"NR{j}")
    await _settle(oms, changed)
    return _phase("normal flow", oms, "N", n + len(changed), t0)


async def _runaway(oms: FixClient) -> tuple[PhaseReport, int]:
    """Power Peg: a child per quote update for a 1,000-share parent, fills never read."""
    t0 = time.monotonic()
    tags = [(5001, "PEG-1"), (5002, str(PARENT_QTY))]
    ids = [f"P{i}" for i in range(400)]
    for cid in ids:
        oms.new_order(cid, "L000", "1", CHILD_QTY, 104.0, extra=tags)
    await _settle(oms, ids)
    return _phase("Power Peg runaway", oms, "P", len(ids), t0), len(ids)


async def _kill(oms: FixClient, plane: NatsControlPlane, kit: Kit) -> KillReport:
    """Rest orders, kill the fleet, and watch the venue cancels come back."""
    ids = [f"K{i}" for i in range(20)]
    for i, cid in enumerate(ids):
        sym = SYMBOLS[i % len(SYMBOLS)]
        ref = 100.0 if sym.startswith("L") else 40.0
        oms.new_order(cid, sym, "1", 100, round(ref * 0.97, 2))
    await _settle(oms, ids)
    working = _live_ids(oms)
    switch = KillSwitch(plane, SystemClock(), kit.signer("alice"), kit.store())
    t0 = time.monotonic()
    result = await switch.kill(Scope.FLEET, "fleet", "Power Peg drill", timeout_s=5.0)
    confirmed_ms = result.latencies_ms.get("fixgw", float("nan"))
    deadline = time.monotonic() + 5
    cancels: list[Received] = []
    while time.monotonic() < deadline:
        cancels = [
            r
            for r in oms.received
            if r.get(F.EXEC_TYPE) == "4" and r.get(F.TEXT).startswith("knightwatch kill:")
        ]
        if len(cancels) >= len(working):
            break
        await asyncio.sleep(0.005)
    cancels_ms = (time.monotonic() - t0) * 1e3
    oms.new_order("AFTER", "L000", "1", 100, 100.0)
    await _settle(oms, ["AFTER"])
    after = oms.reports("AFTER")[0].get(F.TEXT).split(" ", 1)[0].removeprefix("knightwatch:")
    still = result.still_working.get("fixgw", [])
    return KillReport(
        working_before=len(working),
        confirmed_ms=confirmed_ms,
        client_cancels=len(cancels),
        client_cancels_ms=cancels_ms,
        working_after=len(still),
        still_working=still,
        refused_after=after,
    )


def _live_ids(oms: FixClient) -> list[str]:
    """ClOrdIDs the OMS believes are working: last report live, not replaced or cancelled."""
    last: dict[str, str] = {}
    dead: set[str] = set()
    for r in oms.received:
        if r.mtype != F.EXECUTION_REPORT or r.get(F.EXEC_TYPE) == "I":
            continue
        last[r.get(F.CL_ORD_ID)] = r.get(F.ORD_STATUS)
        if r.get(F.EXEC_TYPE) in ("4", "5") and r.get(F.ORIG_CL_ORD_ID):
            dead.add(r.get(F.ORIG_CL_ORD_ID))
            if r.get(F.EXEC_TYPE) == "4":
                dead.add(r.get(F.CL_ORD_ID))
    return sorted(c for c, st in last.items() if st in ("0", "1", "5") and c not in dead)


def _venue_orders(procs: _Processes, vlog: Path) -> int:
    procs.procs[0].send_signal(signal.SIGTERM)  # the venue prints its totals on the way out
    with contextlib.suppress(subprocess.TimeoutExpired):
        procs.procs[0].wait(timeout=15)
    m = re.search(r"venue: (\d+) orders", vlog.read_text(errors="replace"))
    return int(m.group(1)) if m else -1


def _scraped(url: str, event: str) -> int:
    """One gateway event's count as its node's metrics endpoint serves it."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "knightwatch_gateway_events_total"
                and sample.labels.get("event") == event
            ):
                return int(sample.value)
    raise GatewayError(f"{url}: no knightwatch_gateway_events_total{{event={event!r}}}")


def _print(r: FixDrillReport, console: Console) -> None:
    t = Table(title="FIX drill: OMS -> knightwatch gateway -> venue")
    for col in ("phase", "time", "sent", "to venue", "filled", "refused by the Guard"):
        t.add_column(col)
    for p in r.phases:
        why = ", ".join(f"{k} {v}" for k, v in sorted(p.refused.items())) or "-"
        t.add_row(p.name, f"{p.seconds:.2f} s", str(p.sent), str(p.routed), str(p.filled), why)
    console.print(t)
    console.print(
        f"runaway: {r.runaway_children} children of a {PARENT_QTY:,}-share parent sent, "
        f"{r.runaway_escaped} reached the venue ({r.runaway_escaped * CHILD_QTY:,} shares), "
        f"stopped by {r.runaway_stopped_by}"
    )
    k = r.kill
    console.print(
        f"kill: {k.working_before} orders working at the venue; confirmed by the gateway in "
        f"{k.confirmed_ms:.1f} ms after the venue cancelled them; {k.client_cancels} "
        f"unsolicited cancel reports reached the OMS within {k.client_cancels_ms:.1f} ms; "
        f"still working: {k.working_after}; a new order after the kill: {k.refused_after}"
    )
    console.print(f"the venue received {r.venue_orders} orders in all")
    console.print(f"the gateway's metrics endpoint counted {r.scraped_refused} refused orders")
    console.print("[green]PASSED[/green]" if r.passed else "[red]FAILED[/red]")
