"""A NautilusTrader contract's quantity counts contracts, each worth `multiplier` of the
underlying: the Guard values it at quantity x multiplier x price (it read 1/multiplier of
the notional before). An inverse instrument, whose notional is no quantity x price, is
denied by name rather than counted as if linear."""

from __future__ import annotations

from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from knightwatch import RejectReason as R
from knightwatch.adapters.nautilus import install

from .nt_world import Scripted, engine, open_limits, quotes, scripted
from .test_nautilus import codes

_PERP = CryptoPerpetual.to_dict(TestInstrumentProvider.btcusdt_perp_binance())
TEN_BTC_PERP = CryptoPerpetual.from_dict(dict(_PERP, multiplier="10"))
XBTUSD = TestInstrumentProvider.xbtusd_bitmex()


def test_a_contract_is_valued_at_its_multiplier() -> None:
    e = engine(TEN_BTC_PERP)
    try:
        s = scripted(e, TEN_BTC_PERP)

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 2:
                st.buy("0.100", "60000.0")  # 1 BTC: 60,000 USDT > 50,000
            elif n == 3:
                st.buy("0.050", "60000.0")  # 0.5 BTC: 30,000 USDT

        s.script = script
        e.add_data(quotes(TEN_BTC_PERP, 5, 60_000.0, 0.1))
        kw = install(e, limits=open_limits(max_order_notional=50_000.0))
        e.run()
        assert codes(s.denied) == {R.MAX_ORDER_NOTIONAL: 1}
        assert kw.guard.working_qty(TEN_BTC_PERP.id.value) == (50, 0)  # rests below the ask
    finally:
        e.dispose()


def test_an_inverse_contract_is_denied_by_name() -> None:
    e = engine(XBTUSD)
    try:
        s = scripted(e, XBTUSD)

        def script(st: Scripted, tick: QuoteTick, n: int) -> None:
            if n == 2:
                st.buy("100", f"{tick.ask_price.as_double():.1f}")

        s.script = script
        e.add_data(quotes(XBTUSD, 5, 60_000.0, 0.5))
        kw = install(e, limits=open_limits())
        e.run()
        assert len(s.denied) == 1 and "inverse contract" in s.denied[0]
        assert kw.guard.position(XBTUSD.id.value) == 0
    finally:
        e.dispose()
