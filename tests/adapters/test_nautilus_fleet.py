"""A fleet kill from a real control plane (nats-server) reaching a NautilusTrader node.

The node is a BacktestEngine run in streaming chunks on the test's event loop,
joined with `install(..., control_plane=url)`; the operator is a separate
connection issuing the kill through `KillSwitch`, as `knightwatch kill` does.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import OrderStatus
from nautilus_trader.model.enums import TradingState as NtState

from knightwatch import RejectReason, Scope, SystemClock
from knightwatch.adapters.nautilus import install, reason_code
from knightwatch.audit.verify import verify_file
from knightwatch.control.site import Site

from .nt_world import AUDUSD, Scripted, engine, open_limits, quotes, scripted


async def test_a_fleet_kill_halts_a_nautilus_node_and_cancels_its_orders(
    nats_server: Site, tmp_path: Path
) -> None:
    eng = engine()
    s = scripted(eng, AUDUSD)

    def script(st: Scripted, tick: QuoteTick, n: int) -> None:
        if n <= 3:
            st.buy("10000", "0.69000")  # rests far below the market
        elif n > 5:
            st.buy("10000", f"{tick.ask_price.as_double():.5f}")

    s.script = script
    recorder = tmp_path / "audit" / "nt-1.jsonl"
    kw = install(
        eng,
        limits=open_limits(),
        node="nt-1",
        control_plane=nats_server.url,
        key=nats_server.key_path("nt-1"),
        anchor=nats_server.anchor_path,
        clock=SystemClock(),
        recorder=recorder,
    )
    operator = nats_server.plane("alice")
    try:
        assert kw.joined is not None
        await kw.joined
        assert kw.guard.armed and kw.member is not None and kw.member.runtime.admitted

        eng.add_data(quotes(AUDUSD, 5, 0.7, 0.0001))
        eng.run(streaming=True)
        assert len(eng.kernel.cache.orders_open()) == 3
        assert kw.guard.working_qty(AUDUSD.id.value) == (30_000, 0)

        await operator.connect()
        ks = nats_server.killswitch(operator, "alice")
        result = await ks.kill(Scope.FLEET, "fleet", "drill: stop everything", timeout_s=15.0)
        assert "nt-1" in result.latencies_ms and not result.missing
        # mirrored at once, before NautilusTrader processes anything else
        assert eng.kernel.risk_engine.trading_state == NtState.HALTED

        eng.clear_data()
        eng.add_data(quotes(AUDUSD, 5, 0.7, 0.0001, start=5))
        eng.run(streaming=True)  # the venue processes the cancels; the strategy keeps trying
        orders = eng.kernel.cache.orders()
        assert (
            sorted(o.status for o in orders if o.price.as_double() == 0.69)
            == [OrderStatus.CANCELED] * 3
        )
        assert not eng.kernel.cache.orders_open()
        assert len(s.canceled) == 3
        assert kw.guard.working_qty(AUDUSD.id.value) == (0, 0)
        # new orders stop at NautilusTrader's own HALTED state now, before the Guard
        assert s.denied and all(reason_code(r) is None and "HALTED" in r for r in s.denied)
        assert kw.guard.trading_state(Scope.FLEET).name == "HALTED"
        eng.end()
        # the flight recorder reaches the fleet's audit stream, the metrics the plane
        shipped = []
        deadline = time.monotonic() + 15.0  # generous: over real NATS on a loaded machine
        while time.monotonic() < deadline:  # recorded REPORT_DELAY_S after its confirmation
            await kw.member.runtime.publish_once()
            shipped = await operator.audit()
            if any(b'"halt"' in line for _, env in shipped for line in env.lines()):
                break
            await asyncio.sleep(0.05)
        assert shipped and {env.node_id for _, env in shipped} == {"nt-1"}
        assert any(b'"halt"' in line for _, env in shipped for line in env.lines())
    finally:
        await kw.stop()
        await operator.close()
        eng.dispose()
    kw.guard.recorder.close()
    report = verify_file(recorder)
    assert report.intact and report.records > 0, report
    text = recorder.read_text()
    assert '"halt"' in text and "drill: stop everything" in text
    assert RejectReason.HALTED.value in text
