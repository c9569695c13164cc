"""`knightwatch demo`: a Power-Peg-like runaway stream against a real Guard.

The legacy loop sends child orders for its parents every millisecond and
never looks at fills, exactly the defect of 2012-08-01. Fills come back at a
price that the runaway itself pushes (a few basis points per fill), so the
loss and exposure rules have something to see. The point is which rule fires
first and when, with the shipped `examples/limits.toml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from knightwatch.clock import SimClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.limits import Limits, LimitsError
from knightwatch.order import Fill, Order, Side

OPEN_NS = 1_343_827_800 * 1_000_000_000  # 2012-08-01 09:30:00 America/New_York
SYMBOLS = ("EBR", "RSH", "BHI", "NOK", "WNR", "TXI", "CODE", "ABC")
IMPACT_BPS_PER_FILL = 2.0


@dataclass
class FirstFire:
    t_s: float
    order_no: int
    count: int = 0


@dataclass
class RunawayResult:
    sent: int = 0
    accepted: int = 0
    shares_sent: int = 0
    shares_filled: int = 0
    parents_qty: int = 0
    fired: dict[RejectReason, FirstFire] = field(default_factory=dict)


def runaway(
    guard: Guard, clock: SimClock, seconds: float, child_qty: int, parent_qty: int
) -> RunawayResult:
    """Drive the runaway for `seconds` of simulated time, one child per millisecond."""
    prices = {sym: 20.0 + 7.0 * i for i, sym in enumerate(SYMBOLS)}
    parents = []
    for i, sym in enumerate(SYMBOLS):
        side = Side.BUY if i % 2 == 0 else Side.SELL
        pid = f"P{i}"
        guard.register_parent(pid, parent_qty)
        guard.on_price(sym, prices[sym])
        parents.append((pid, sym, side))
    res = RunawayResult(parents_qty=parent_qty * len(parents))
    guard.arm("demo")
    steps = int(seconds * 1000)
    for n in range(steps):
        clock.advance(1_000_000)
        pid, sym, side = parents[n % len(parents)]
        px = prices[sym]
        limit = round(px * (1.0005 if side is Side.BUY else 0.9995), 2)
        order = Order(f"{pid}-c{n}", "rlp", sym, side, child_qty, limit, pid)
        res.sent += 1
        res.shares_sent += child_qty
        d = guard.check(order)
        if d.accepted:
            res.accepted += 1
            res.shares_filled += child_qty
            guard.on_fill(Fill(order.id, sym, side, child_qty, limit))
            move = IMPACT_BPS_PER_FILL / 10_000 * (1 if side is Side.BUY else -1)
            prices[sym] = round(px * (1 + move), 4)
            guard.on_price(sym, prices[sym])
        else:
            ff = res.fired.get(d.reason)
            if ff is None:
                ff = res.fired[d.reason] = FirstFire((clock.monotonic_ns() - OPEN_NS) / 1e9, n + 1)
            ff.count += 1
        if n % 1000 == 0:
            # the reference feed keeps ticking even when nothing trades
            for sym in SYMBOLS:
                guard.on_price(sym, prices[sym])
    return res


def demo(
    limits: Path = typer.Option(Path("examples/limits.toml"), help="limits TOML file"),
    seconds: float = typer.Option(30.0, help="simulated seconds of runaway", min=0.1),
    child_qty: int = typer.Option(100, help="shares per child order", min=1),
    parent_qty: int = typer.Option(2000, help="shares per parent order", min=1),
) -> None:
    """Run a Power-Peg-like runaway through a Guard and show which rule stopped it, and when."""
    console = Console()
    try:
        lim = Limits.from_toml(limits)
    except LimitsError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    clock = SimClock(OPEN_NS)
    guard = Guard(lim, node="router-8", clock=clock)
    with Progress(console=console, transient=True) as progress:
        progress.add_task("runaway stream through the Guard", total=None)
        res = runaway(guard, clock, seconds, child_qty, parent_qty)
    console.print(
        f"[bold]Power-Peg-like runaway[/bold]: {len(SYMBOLS)} parents x {parent_qty:,} shares, "
        f"one {child_qty}-share child per ms for {seconds:g} simulated s, fills never checked."
    )
    table = Table(title=f"Guard decisions with {limits} (version {lim.version})")
    table.add_column("verdict / reason")
    table.add_column("orders", justify="right")
    table.add_column("first fired at", justify="right")
    table.add_column("at order #", justify="right")
    table.add_row("[green]accepted[/green]", f"{res.accepted:,}", "", "")
    for reason, ff in sorted(res.fired.items(), key=lambda kv: kv[1].order_no):
        table.add_row(
            f"[red]{reason.value}[/red]", f"{ff.count:,}", f"{ff.t_s:.3f} s", f"{ff.order_no:,}"
        )
    console.print(table)
    console.print(
        f"Without the Guard: {res.sent:,} child orders, {res.shares_sent:,} shares sent for "
        f"{res.parents_qty:,} shares of parents. With it: {res.shares_filled:,} shares filled, "
        f"P&L {guard.pnl():,.2f} USD."
    )
