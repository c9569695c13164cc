"""Amends in a real BacktestEngine whose venue answers 0.25 s after a command, as a live one
does: what NautilusTrader's own RiskEngine refuses is not the venue's answer to the amend
the Guard let through before it."""

from __future__ import annotations

import pytest
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.objects import Price, Quantity

from knightwatch import Scope, TradingState
from knightwatch.adapters.nautilus import install, reason_code

from .nt_world import AUDUSD, Scripted, open_limits, quote, world

SYM = AUDUSD.id.value


@pytest.mark.parametrize("refused_by", ["halted", "precision"])
def test_a_later_amend_nautilus_refuses_leaves_the_one_at_the_venue_reserved(
    refused_by: str,
) -> None:
    """A 10,000 buy is amended to 30,000: the Guard reserves 30,000 until the venue answers.
    Before it does, the strategy amends again and NautilusTrader's RiskEngine refuses that
    (`TradingState is HALTED` after an operator halted the symbol; a price of the wrong
    precision). That refusal was taken for the venue's answer: the Guard rolled the first
    amend back to 10,000 while 30,000 was on its way, then read the venue taking it as the
    order grown past its check and halted the whole node (`fill_mismatch`) and cancelled
    its orders. The first amend stays reserved and is committed by the venue's answer."""
    with world(latency_ns=250_000_000) as (e, s):
        seen: list[tuple[int, int]] = []

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            order = (st.cache.orders() or [None])[0]
            if n == 1:
                st.buy("10000", "0.69000")  # rests: below the market
            elif n == 5:
                st.modify_order(order, quantity=Quantity.from_int(30_000))
            elif n == 6:  # 0.1 s later: the venue has not answered the first amend yet
                if refused_by == "halted":
                    kw.guard.halt(Scope.SYMBOL, SYM, "desk stop", "test")
                    st.modify_order(order, quantity=Quantity.from_int(40_000))
                else:
                    st.modify_order(order, price=Price(0.690001, 6))
            if n >= 6:
                seen.append(kw.guard.working_qty(SYM))

        s.script = script
        e.add_data([quote(AUDUSD, i, 0.7, 0.7001) for i in range(12)])
        kw = install(e, limits=open_limits())
        e.run()
        assert len(s.modify_rejected) == 1  # NautilusTrader's own, not the Guard's
        assert reason_code(s.modify_rejected[0]) is None
        (order,) = e.kernel.cache.orders()
        assert order.is_open and order.quantity == Quantity.from_int(30_000)
        assert seen == [(30_000, 0)] * len(seen)  # reserved, then committed: never 10,000
        assert kw.guard.trading_state(Scope.NODE, kw.guard.node) is TradingState.ACTIVE
        halted = {scope for scope, _ in kw.guard.halts()}
        assert halted == ({Scope.SYMBOL} if refused_by == "halted" else set())
