"""The ccxt adapter when the venue's answer leaves an order's fate unknown.

An order whose answer is lost may be live at the venue: it stays counted (in doubt) and
a kill must still reach it. Against the paper venues over real HTTP, as test_ccxt.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import ccxt
import pytest

from knightwatch import Scope
from knightwatch.adapters.ccxt import AsyncGuardedExchange, GuardedExchange, guard
from knightwatch.adapters.units import Units

from .test_ccxt import SPECS, Spec, limits, make_exchange


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
async def test_an_order_whose_answer_is_lost_during_a_kill_is_swept_when_the_call_returns(
    spec: Spec,
) -> None:
    """The kill's cancel-all reaches the venue before an order already on its way; the
    venue then takes the order and the connection drops before its answer. With no venue
    id the order cannot be cancelled by id: before, it was left resting at the venue after
    the kill. Now its market is swept again once the call returns; the Guard keeps
    counting it, in doubt, until an update or `resolve` settles it."""
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "async"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, AsyncGuardedExchange)
        sym = spec.symbol
        try:
            await ex.fetch_ticker(sym)
            await ex.start([sym])
            venue.hold = threading.Event()
            venue.fault = "drop_after_accept"
            placing = asyncio.ensure_future(ex.create_order(sym, "limit", "buy", 0.1, 59_000))
            while not venue.holding:
                await asyncio.sleep(0.005)
            ex.guard.halt(Scope.NODE, ex.guard.node, "fleet kill", "test")
            assert ex.kill_task is not None
            await ex.kill_task  # the sweep is done: nothing was open yet
            assert not venue.orders
            venue.hold.set()
            with pytest.raises(ccxt.OperationFailed):  # the answer never came
                await placing
            assert [o.status for o in venue.orders.values()] == ["canceled"]
            assert len(ex.ledger.in_doubt) == 1
            assert ex.guard.working_qty(sym) == (Units(spec.step).to_units("0.1"), 0)
        finally:
            await ex.close()
        assert venue.bad_signatures == 0


def _venue_error(exchange: Any, status: int, url: str, body: str) -> ccxt.BaseError:
    """The exception ccxt itself raises for a venue's error answer (its own error maps)."""
    try:
        exchange.handle_errors(status, "", url, "POST", {}, body, json.loads(body), None, None)
    except ccxt.BaseError as exc:
        return exc
    raise AssertionError(f"{exchange.id} raised nothing for {body}")


UNKNOWN_OUTCOME = {
    "binance-option-1007": (
        ccxt.binance,
        400,
        "https://eapi.binance.com/eapi/v1/order",
        '{"code":-1007,"msg":"Timeout waiting for response from backend server. Send status '
        'unknown; execution status unknown."}',
    ),
    "binance-option-1006": (
        ccxt.binance,
        400,
        "https://eapi.binance.com/eapi/v1/order",
        '{"code":-1006,"msg":"An unexpected response was received from the message bus. '
        'Execution status unknown."}',
    ),
    "bybit-5004": (
        ccxt.bybit,
        200,
        "https://api.bybit.com/v5/order/create",
        '{"retCode":5004,"retMsg":"Server Timeout","result":null,"retExtInfo":{},"time":1}',
    ),
    "hashkey-1006": (
        ccxt.hashkey,
        400,
        "https://api-glb.hashkey.com/api/v1/spot/order",
        '{"code":"-1006","msg":"Execution status unknown"}',
    ),
}


@pytest.mark.parametrize("answer", list(UNKNOWN_OUTCOME), ids=str)
def test_a_venue_error_saying_the_outcome_is_unknown_leaves_the_order_in_doubt(
    answer: str,
) -> None:
    """ccxt raises a plain `ExchangeError` (read as the venue's refusal) for some venues'
    "execution status unknown" and "Server Timeout" answers, after which the order may well
    be live. Before, the order's reservation was given back (an amend's rolled back): the
    Guard counted nothing for what may rest at the venue. Now such an order stays working
    and in doubt, and such an amend keeps its larger reservation; a real refusal (Binance
    -2010, insufficient balance) still gives both back."""
    cls, status, url, body = UNKNOWN_OUTCOME[answer]
    unknown = _venue_error(cls(), status, url, body)
    assert type(unknown) is ccxt.ExchangeError  # what ccxt maps these answers to
    refusal = _venue_error(
        ccxt.binance(),
        400,
        "https://api.binance.com/api/v3/order",
        '{"code":-2010,"msg":"Account has insufficient balance for requested action."}',
    )
    spec = SPECS[0]
    u = Units(spec.step)
    with spec.fake("60000") as venue:
        ex = guard(make_exchange(spec, venue, "sync"), limits=limits(spec.step), strategy="mm")
        assert isinstance(ex, GuardedExchange)
        sym, ledger = spec.symbol, ex.ledger
        ex.fetch_ticker(sym)
        ex.start([sym])
        # what create_order does when the venue's call raises
        tracked, _, _ = ledger.prepare(sym, "limit", "buy", "0.1", 59_000, {})
        ledger.failed(tracked, unknown)
        assert list(ledger.in_doubt) == [tracked.gid]
        assert ex.guard.working_qty(sym) == (u.to_units("0.1"), 0)
        refused, _, _ = ledger.prepare(sym, "limit", "buy", "0.2", 59_000, {})
        ledger.failed(refused, refusal)
        assert ex.guard.working_qty(sym) == (u.to_units("0.1"), 0)
        # an amend from 0.1 to 0.3 answered so: the venue may hold 0.3
        order = ex.create_order(sym, "limit", "buy", "0.1", 59_000)
        for exc, working in ((refusal, "0.2"), (unknown, "0.4")):
            amended, new_gid, _, _ = ledger.prepare_edit(
                str(order["id"]), sym, "limit", "buy", "0.3", None, {}
            )
            ledger.edit_failed(amended, new_gid, exc)
            assert ex.guard.working_qty(sym) == (u.to_units(working), 0)
        assert venue.bad_signatures == 0
