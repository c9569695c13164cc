"""What a client's replace may name and what it changes beyond quantity and price.

Real QuickFIX sessions (`conftest.Rig`): two clients on one venue session, each
seeing only its own orders; a replace that asks for a cancel on disconnect gets it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from knightwatch.gateway import fields as F
from knightwatch.gateway.client import FixClient
from knightwatch.gateway.config import ClientSession

from .conftest import Rig, eventually
from .test_gateway import BUY, below


def replace_message(
    clordid: str, orig: str, qty: int, price: float, extra: list[tuple[int, str]] | None = None
) -> Any:
    return F.message(
        F.REPLACE,
        [(F.CL_ORD_ID, clordid), (F.ORIG_CL_ORD_ID, orig), (F.SYMBOL, "L000"), (F.SIDE, BUY),
         (F.ORDER_QTY, str(qty)), (F.ORD_TYPE, "2"), (F.PRICE, f"{price:.2f}"),
         (F.TRANSACT_TIME, F.now_utc()), *(extra or [])],
    )  # fmt: skip


def cancel_rejects(client: FixClient, clordid: str) -> list[Any]:
    return [r for r in client.reports(clordid) if r.mtype == F.CANCEL_REJECT]


def test_a_replace_of_another_clients_order_is_refused_as_an_unknown_order(
    rig_factory: Callable[..., Rig],
) -> None:
    """OMS1 names OMS2's working order in a replace (and resends it). Before, the refusal
    carried OMS2's venue OrderID and OrdStatus (working) with CxlRejReason 2, and was
    recorded under OMS2's strategy; a cancel of it was already refused as unknown. Both
    answers are "unknown order" (OrderID NONE, OrdStatus 8, CxlRejReason 1), recorded
    under OMS1, and OMS2's order is untouched."""
    rig = rig_factory(clients=("OMS1", "OMS2")).start().ready()
    a, b = rig.clients["OMS1"], rig.clients["OMS2"]
    px = below(rig, "L000")
    b.new_order("C", "L000", BUY, 100, px)
    b.wait_report("C", "0")
    a.send(replace_message("R1", "C", 150, px))
    eventually(lambda: cancel_rejects(a, "R1"), what="the replace refused")
    resent = replace_message("R1", "C", 150, px)
    resent.getHeader().setField(F.POSS_RESEND, "Y")
    a.send(resent)
    eventually(lambda: len(cancel_rejects(a, "R1")) == 2, what="the resend answered")
    for rej in cancel_rejects(a, "R1"):
        shown = (rej.get(F.ORDER_ID), rej.get(F.ORD_STATUS), rej.get(F.CXL_REJ_REASON))
        assert shown == ("NONE", "8", F.CXL_UNKNOWN_ORDER), rej.raw
        assert rej.get(F.TEXT).startswith("knightwatch:invalid_order OrigClOrdID(41): order C ")
    decided = [r for r in rig.records() if r["kind"] == "decision" and r["order_id"] == "OMS1:R1"]
    assert [r["strategy"] for r in decided] == ["OMS1"]
    venue_order = rig.venue.find("C")
    assert venue_order is not None and venue_order.qty == 100 and venue_order.status == "0"
    assert rig.guard.working_qty("L000") == (100, 0)


def test_a_replace_that_asks_for_a_cancel_on_disconnect_gets_it(
    rig_factory: Callable[..., Rig],
) -> None:
    """A session without cancel-on-disconnect; its order is replaced with ExecInst Q
    (cancel on system failure). Before, only the NewOrderSingle's ExecInst counted: the
    session was lost and the order worked on at the venue. It is cancelled, as one
    sent with Q is, and the Guard stops counting it."""
    clients = (ClientSession("OMS1", cancel_on_disconnect=False),)
    rig = rig_factory(config={"clients": clients}).start().ready()
    px = below(rig, "L000")
    rig.oms.new_order("A", "L000", BUY, 100, px)
    rig.oms.wait_report("A", "0")
    rig.oms.send(replace_message("A2", "A", 120, px, [(F.EXEC_INST, "Q")]))
    rig.oms.wait_report("A2", "5")
    rig.oms.stop()
    eventually(lambda: not rig.venue.working(), what="cancelled at the venue")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="the Guard follows")
    assert rig.guard.halts() == {}


def test_refusals_the_gateway_makes_itself_are_filed_as_the_guards_are(
    rig_factory: Callable[..., Rig],
) -> None:
    """A session whose orders the Guard checks under strategy `desk-a`. A replace naming an
    order the gateway does not hold, and a new order with a field the gateway refuses, are
    recorded under `desk-a` with side `buy`, as the Guard records its own decisions. Before,
    the replace was filed under the CompID and both under the FIX code `1`: a review of the
    desk's refusals, or a search by side, missed them."""
    clients = (ClientSession("OMS1", strategy="desk-a"),)
    rig = rig_factory(config={"clients": clients}).start().ready()
    px = below(rig, "L000")
    rig.oms.send(replace_message("R1", "nobody", 100, px))
    eventually(lambda: cancel_rejects(rig.oms, "R1"), what="the replace refused")
    rig.oms.new_order("N1", "L000", BUY, 100, px, extra=[(460, "4")])  # Product: refused
    rig.oms.wait_report("N1", "8")
    refused = {
        r["order_id"]: (r["strategy"], r["side"])
        for r in rig.records()
        if r["kind"] == "decision" and r["order_id"] in ("OMS1:R1", "OMS1:N1")
    }
    assert refused == {"OMS1:R1": ("desk-a", "buy"), "OMS1:N1": ("desk-a", "buy")}, refused
