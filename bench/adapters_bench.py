"""What the adapters add per order inside each stack, against the stack's own path, in one run.

NautilusTrader: a BacktestEngine whose strategy submits one order per quote
(market orders, alternating sides, so every order fills and the position
stays flat). Timed per order: `Strategy.submit_order`, which runs the
OrderManager, the RiskEngine, the ExecutionEngine and the backtest execution
client synchronously, with and without `knightwatch.adapters.nautilus.install`
(every Guard rule on and passing, flight recorder writing a file). Also
reported: `Guard.check` alone inside NautilusTrader, and the whole backtest's
wall time per order (quotes and fills flow through the adapter too).

ccxt: the sync `ccxt.binance` against the paper Binance over HTTP on
127.0.0.1. Timed per order: `create_order` (request building, HMAC signing,
HTTP round trip, parsing), raw and wrapped by `knightwatch.adapters.ccxt`,
interleaved in blocks. The wrapper's own work (precision, check, booking the
answer) is also timed alone, with no HTTP, on the same kind of orders.

Variants alternate so machine noise hits both sides.

    python bench/adapters_bench.py [--quotes 20000] [--orders 2000] [--repeats 3] [--json F]
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
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import nautilus_trader
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, RiskEngineConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from knightwatch import Limits
from knightwatch.adapters.ccxt import GuardedExchange, guard
from knightwatch.adapters.nautilus import EVENT_PRIORITY, install
from knightwatch.adapters.paper import BINANCE_KEY, BINANCE_SECRET, PaperBinance

BIG = 10**9
SIM = Venue("SIM")
AUDUSD = TestInstrumentProvider.default_fx_ccy("AUD/USD", venue=SIM)


def all_on(symbol: str, max_qty: int) -> Limits:
    """Every rule on, sized so the bench's order stream passes."""
    return Limits(
        version="adapters-bench",
        allowed_symbols=frozenset({symbol}),
        max_order_qty=max_qty,
        max_order_notional=1e12,
        max_price_age_s=3600.0,
        price_collar_pct=0.05,
        # the node rates bound the ids the duplicate check must track over its window
        max_orders_per_s_node=100_000,
        max_orders_per_min_node=BIG,
        duplicate_id_window_s=60.0,
        max_orders_per_s_strategy=BIG,
        max_orders_per_min_strategy=BIG,
        max_orders_per_s_symbol=BIG,
        max_orders_per_min_symbol=BIG,
        max_executions_per_window=BIG,
        max_position_qty=BIG,
        max_gross_exposure=1e15,
        max_net_exposure=1e15,
        max_turnover_per_min=1e15,
        max_cancel_to_fill_ratio=1e12,
        max_loss=1e12,
        require_registered_parent=False,
    )


# ----------------------------------------------------------------------------- NautilusTrader


class Submitter(Strategy):  # type: ignore[misc]  # NautilusTrader ships no stubs
    """One market order per quote, alternating sides; times each `submit_order`."""

    def __init__(self) -> None:
        super().__init__(StrategyConfig())
        self.lat: list[int] = []
        self.n = 0
        self.qty = Quantity.from_int(10_000)

    def on_start(self) -> None:
        self.subscribe_quote_ticks(AUDUSD.id)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.n += 1
        side = OrderSide.BUY if self.n % 2 else OrderSide.SELL
        order = self.order_factory.market(AUDUSD.id, side, self.qty)
        t0 = time.perf_counter_ns()
        self.submit_order(order)
        self.lat.append(time.perf_counter_ns() - t0)


def quotes(n: int) -> list[QuoteTick]:
    t0 = 1_700_000_000_000_000_000
    size = Quantity.from_int(100_000_000)
    out = []
    for i in range(n):
        px = 0.70000 + 0.00001 * (i % 7)
        ts = t0 + i * 100_000_000
        out.append(
            QuoteTick(
                instrument_id=AUDUSD.id,
                bid_price=Price(px, 5),
                ask_price=Price(px + 0.0001, 5),
                bid_size=size,
                ask_size=size,
                ts_event=ts,
                ts_init=ts,
            )
        )
    return out


def nautilus_run(data: list[QuoteTick], guarded: bool, tmp: Path) -> dict[str, Any]:
    eng = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            risk_engine=RiskEngineConfig(max_order_submit_rate="1000000/00:00:01"),
        )
    )
    eng.add_venue(
        SIM,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(10_000_000_000, USD)],
        default_leverage=Decimal(1),
    )
    eng.add_instrument(AUDUSD)
    eng.add_data(data)
    strat = Submitter()
    eng.add_strategy(strat)
    kw = None
    handler_ns = [0]
    if guarded:
        kw = install(
            eng,
            limits=all_on(AUDUSD.id.value, 1_000_000),
            recorder=tmp / f"nt-{time.monotonic_ns()}.jsonl",
        )
        kw.check_ns = []
        timed_handlers(kw, handler_ns)
    gc.collect()
    t0 = time.perf_counter_ns()
    eng.run()
    wall = time.perf_counter_ns() - t0
    fills = eng.kernel.cache.orders_closed_count()
    eng.dispose()
    if kw is not None:
        if kw.denied or kw.passed != strat.n:
            sys.exit(f"nautilus bench invalid: passed {kw.passed}, denied {kw.denied}")
        kw.guard.recorder.close()
    if fills < strat.n - 1:
        sys.exit(f"nautilus bench invalid: {fills} of {strat.n} orders closed")
    return {
        "lat": strat.lat[100:],  # the first orders warm caches on both sides
        "check": (kw.check_ns or [])[100:] if kw is not None else [],
        "wall_per_order_ns": wall / strat.n,
        "events_per_order_ns": handler_ns[0] / strat.n,
    }


def timed_handlers(kw: Any, total: list[int]) -> None:
    """Re-subscribe the adapter's bus handlers through a timer (fills, order events, quotes)."""
    bus = kw.bus
    for topic, handler in (
        ("events.order.*", kw._on_order_event),
        ("data.quotes.*", kw._on_quote),
        ("data.trades.*", kw._on_trade),
    ):

        def timed(msg: Any, handler: Any = handler) -> None:
            t0 = time.perf_counter_ns()
            handler(msg)
            total[0] += time.perf_counter_ns() - t0

        bus.unsubscribe(topic, handler)
        bus.subscribe(topic, timed, priority=EVENT_PRIORITY)


# ----------------------------------------------------------------------------- ccxt

CONFIG = {
    "apiKey": BINANCE_KEY,
    "secret": BINANCE_SECRET,
    "enableRateLimit": False,
    "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
}
BLOCK = 50


def ccxt_run(orders: int, tmp: Path) -> dict[str, list[int]]:
    """Raw and guarded `create_order` in alternating blocks against one paper venue."""
    with PaperBinance(last_price="60000") as venue:
        raw = venue.point(ccxt.binance(CONFIG))
        wrapped = guard(
            venue.point(ccxt.binance(CONFIG)),
            limits=all_on("BTC/USDT", 10_000_000),
            recorder=tmp / f"ccxt-{time.monotonic_ns()}.jsonl",
        )
        assert isinstance(wrapped, GuardedExchange)
        raw.load_markets()
        wrapped.fetch_ticker("BTC/USDT")
        lat: dict[str, list[int]] = {"ccxt": [], "ccxt+knightwatch": []}
        n = 0
        while n < orders:
            for name, ex in (("ccxt", raw), ("ccxt+knightwatch", wrapped)):
                for i in range(BLOCK):
                    side = "buy" if i % 2 else "sell"
                    t0 = time.perf_counter_ns()
                    ex.create_order(
                        "BTC/USDT", "limit", side, 0.01, 60_000 if side == "buy" else 59_990
                    )
                    lat[name].append(time.perf_counter_ns() - t0)
            n += BLOCK
        if venue.bad_signatures or wrapped.guard.blocked:
            sys.exit(f"ccxt bench invalid: {venue.bad_signatures} bad signatures, "
                     f"{wrapped.guard.blocked}")  # fmt: skip
        wrapped.guard.recorder.close()
        return {k: v[BLOCK:] for k, v in lat.items()}


def adapter_only(orders: int, tmp: Path) -> list[int]:
    """The wrapper's own work per order with no HTTP: precision, Guard.check, booking."""
    with PaperBinance(last_price="60000") as venue:
        wrapped = guard(
            venue.point(ccxt.binance(CONFIG)),
            limits=all_on("BTC/USDT", 10_000_000),
            recorder=tmp / f"ccxt-only-{time.monotonic_ns()}.jsonl",
        )
        assert isinstance(wrapped, GuardedExchange)
        wrapped.fetch_ticker("BTC/USDT")
        wrapped.start(["BTC/USDT"])  # the market's start read (balance, open orders), once
    ledger = wrapped.ledger
    lat: list[int] = []
    for i in range(orders):
        side = "buy" if i % 2 else "sell"
        answer = {"id": str(i), "clientOrderId": "", "status": "closed", "filled": 0.01,
                  "cost": 600.0, "average": 60_000.0}  # fmt: skip
        t0 = time.perf_counter_ns()
        tracked, _, _ = ledger.prepare("BTC/USDT", "limit", side, 0.01, 60_000, {})
        ledger.placed(tracked, answer)
        lat.append(time.perf_counter_ns() - t0)
    wrapped.guard.recorder.close()
    return lat[100:]


# ----------------------------------------------------------------------------- report


def pct(lat: list[int]) -> dict[str, float]:
    s = sorted(lat)
    return {
        "p50_us": round(s[len(s) // 2] / 1000, 2),
        "p99_us": round(s[int(len(s) * 0.99)] / 1000, 2),
        "p999_us": round(s[min(int(len(s) * 0.999), len(s) - 1)] / 1000, 2),
        "n": len(s),
    }


def run(quotes_n: int, orders: int, repeats: int) -> dict[str, Any]:
    data = quotes(quotes_n)
    nt: dict[str, list[int]] = {"nautilus": [], "nautilus+knightwatch": [], "guard_check": []}
    walls: dict[str, list[float]] = {"nautilus": [], "nautilus+knightwatch": []}
    events: list[float] = []
    cx: dict[str, list[int]] = {"ccxt": [], "ccxt+knightwatch": [], "adapter_only": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(repeats):
            for guarded in (r % 2 == 1, r % 2 == 0):
                res = nautilus_run(data, guarded, tmp)
                name = "nautilus+knightwatch" if guarded else "nautilus"
                nt[name] += res["lat"]
                nt["guard_check"] += res["check"]
                walls[name].append(res["wall_per_order_ns"])
                if guarded:
                    events.append(res["events_per_order_ns"])
            for name, lat in ccxt_run(orders, tmp).items():
                cx[name] += lat
            cx["adapter_only"] += adapter_only(orders, tmp)
    out: dict[str, Any] = {
        "quotes": quotes_n,
        "ccxt_orders": orders,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "nautilus_trader_version": nautilus_trader.__version__,
        "ccxt_version": ccxt.__version__,
    }
    for name, lat in (*nt.items(), *cx.items()):
        out[name] = pct(lat)
    for name, w in walls.items():
        out[name]["backtest_wall_per_order_us"] = round(statistics.median(w) / 1000, 2)
    out["adapter_events_per_order_us"] = round(statistics.median(events) / 1000, 2)
    for base, both in (("nautilus", "nautilus+knightwatch"), ("ccxt", "ccxt+knightwatch")):
        for k in ("p50_us", "p99_us"):
            out[f"{both}_added_{k}"] = round(out[both][k] - out[base][k], 2)
            out[f"{both}_ratio_{k}"] = round(out[both][k] / out[base][k], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quotes", type=int, default=20_000, help="orders per NautilusTrader run")
    ap.add_argument("--orders", type=int, default=2_000, help="orders per ccxt variant per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    res = run(a.quotes, a.orders, a.repeats)
    print(
        f"adapters: NautilusTrader {res['nautilus_trader_version']}, "
        f"ccxt {res['ccxt_version']}; "
        f"{a.repeats} runs; {res['machine']}"
    )
    print(f"{'path (per order)':<44}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}")
    for name, label in (
        ("nautilus", "NautilusTrader submit_order"),
        ("nautilus+knightwatch", "NautilusTrader submit_order + knightwatch"),
        ("guard_check", "  of which Guard.check"),
        ("ccxt", "ccxt create_order (HTTP, 127.0.0.1)"),
        ("ccxt+knightwatch", "ccxt create_order + knightwatch"),
        ("adapter_only", "  knightwatch wrapper alone (no HTTP)"),
    ):
        p = res[name]
        print(f"{label:<44}{p['p50_us']:>9.2f}{p['p99_us']:>9.2f}{p['p999_us']:>10.2f}")
    for both in ("nautilus+knightwatch", "ccxt+knightwatch"):
        print(
            f"{both}: added p50 {res[f'{both}_added_p50_us']:+.2f} us "
            f"(ratio {res[f'{both}_ratio_p50_us']:.2f}), "
            f"p99 {res[f'{both}_added_p99_us']:+.2f} us (ratio {res[f'{both}_ratio_p99_us']:.2f})"
        )
    print(
        "NautilusTrader: the adapter's bus handlers (order events, fills, quotes) took "
        f"{res['adapter_events_per_order_us']:.1f} us per order (median of runs); whole "
        f"backtest incl. NautilusTrader's end-of-run report, wall per order: "
        f"{res['nautilus']['backtest_wall_per_order_us']:.0f} us without, "
        f"{res['nautilus+knightwatch']['backtest_wall_per_order_us']:.0f} us with"
    )
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
