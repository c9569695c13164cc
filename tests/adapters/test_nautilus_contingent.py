"""Contingent groups (OCO/OUO) whose legs differ in size, in a real BacktestEngine.

The Guard counts such a group as its largest leg. When a smaller leg fills, the venue
cancels (OCO) or resizes (OUO) the others in the event after the fill: until then they
still show their full size, which must not be taken for the group grown past its check.
"""

from __future__ import annotations

import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.enums import ContingencyType, OrderSide, TriggerType
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.model.orders import LimitOrder, OrderList, StopMarketOrder

from knightwatch import Scope, TradingState
from knightwatch.adapters.nautilus import install

from .nt_world import AUDUSD, Scripted, open_limits, quote, world

SYM = AUDUSD.id.value


def _pair(st: Scripted, contingency: ContingencyType, limit_qty: int, stop_qty: int) -> OrderList:
    """A sell limit above the market and a sell stop below it, linked OCO or OUO."""
    f = st.order_factory
    lim_id, stop_id = f.generate_client_order_id(), f.generate_client_order_id()
    list_id, ts = f.generate_order_list_id(), st.clock.timestamp_ns()
    limit = LimitOrder(
        st.trader_id,
        st.id,
        AUDUSD.id,
        lim_id,
        OrderSide.SELL,
        Quantity.from_int(limit_qty),
        Price.from_str("0.70100"),
        UUID4(),
        ts,
        contingency_type=contingency,
        order_list_id=list_id,
        linked_order_ids=[stop_id],
    )
    stop = StopMarketOrder(
        st.trader_id,
        st.id,
        AUDUSD.id,
        stop_id,
        OrderSide.SELL,
        Quantity.from_int(stop_qty),
        Price.from_str("0.69000"),
        TriggerType.DEFAULT,
        UUID4(),
        ts,
        contingency_type=contingency,
        order_list_id=list_id,
        linked_order_ids=[lim_id],
    )
    return f.create_list([limit, stop])


@pytest.mark.parametrize(
    "contingency", [ContingencyType.OCO, ContingencyType.OUO], ids=["oco", "ouo"]
)
@pytest.mark.parametrize(
    ("limit_qty", "stop_qty", "up"),
    [(50_000, 100_000, True), (100_000, 50_000, False), (50_000, 100_000, False)],
    ids=["small-leg-fills-first", "small-stop-fills", "large-stop-fills"],
)
def test_a_smaller_legs_fill_is_no_mismatch_and_the_group_ends_with_its_last_leg(
    contingency: ContingencyType, limit_qty: int, stop_qty: int, up: bool
) -> None:
    """A 50,000 leg filling in a group counted as 100,000 left its 100,000 sibling, still
    open until the venue's cancel a moment later, restated on top of the fill: 150,000,
    past the check, a `fill_mismatch` halt of the node (and a kill of every order). The
    fill is booked once, the group ends with the sibling's cancel, nothing halts."""
    with world() as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: object, n: int) -> None:
            if n == 1:
                st.submit_order_list(_pair(st, contingency, limit_qty, stop_qty))
            seen.append(kw.guard.working_qty(SYM))

        s.script = script
        data = [quote(AUDUSD, i, 0.7, 0.7001) for i in range(4)]
        px = 0.7015 if up else 0.6800  # through the limit, or through the stop
        data += [quote(AUDUSD, i, px, px + 0.0001) for i in range(4, 7)]
        e.add_data(data)
        kw = install(e, limits=open_limits())
        e.run()
        filled = limit_qty if up else stop_qty
        assert seen[1] == (0, max(limit_qty, stop_qty))  # the group, as its largest leg
        assert kw.guard.trading_state(Scope.NODE, kw.guard.node) is TradingState.ACTIVE
        assert not kw.guard.halts()
        assert not e.kernel.cache.orders_open()
        assert kw.guard.position(SYM) == -filled
        assert kw.guard.working_qty(SYM) == (0, 0)
        assert seen[-1] == (0, 0)
