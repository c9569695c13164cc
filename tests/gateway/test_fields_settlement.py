"""Another settlement or booking than regular is refused, named, on an order and a replace.

SettlType(63), SettlDate(64) and BookingType(775) went to the venue as the client sent
them while the neighbouring fields were refused (SettlDate2(193), SettlCurrency(120),
ForexReq(121)): a SettlType of 6 (future) with a SettlDate a year out is a forward, priced
with its points, that the Guard collared against the spot reference; a BookingType of 1
books a CFD, a derivative the Guard never counts as a position in the instrument. Now each
is refused `invalid_order` naming the tag, nothing sent; regular settlement and booking
(0) go on. Real QuickFIX sessions, as the other gateway tests.
"""

from __future__ import annotations

import time

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig
from .test_fields_economics import Extra, _order
from .test_gateway import BUY, below, rest


@pytest.mark.parametrize(
    ("extra", "starts"),
    [
        ([(63, "6"), (64, "20270115")], "SettlType(63)='6' cannot be checked (the Guard checks"),
        ([(63, "1")], "SettlType(63)='1' cannot be checked"),
        ([(63, "7")], "SettlType(63)='7' cannot be checked"),
        ([(63, "2")], "SettlType(63)='2' cannot be checked"),
        ([(64, "20270115")], "SettlDate(64)='20270115' cannot be checked (the gateway cannot"),
        ([(63, "0"), (64, "20270115")], "SettlDate(64)='20270115' cannot be checked"),
        ([(775, "1")], "BookingType(775)='1' cannot be checked (the venue would book a CFD"),
        ([(775, "2")], "BookingType(775)='2' cannot be checked"),
    ],
)
def test_another_settlement_or_booking_is_refused_on_an_order_and_a_replace(
    rig: Rig, extra: Extra, starts: str
) -> None:
    want = f"knightwatch:invalid_order {starts}"
    rig.oms.send(_order(rig, "S1", extra, None))
    assert rig.oms.wait_report("S1", "8").get(F.TEXT).startswith(want)
    rest(rig, "S2")
    msg = _order(rig, "S3", extra, None)
    msg.setField(F.ORIG_CL_ORD_ID, "S2")
    msg.getHeader().setField(F.MSG_TYPE, F.REPLACE)
    rig.oms.send(msg)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "S3")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2" and str(rej.get(F.TEXT)).startswith(want)
    time.sleep(0.1)
    assert rig.venue.find("S1") is None and rig.venue.find("S3") is None
    assert rig.venue.stats.orders == 1 and rig.guard.working_qty("L000") == (100, 0)


def test_regular_settlement_and_booking_go_on(rig: Rig) -> None:
    rig.oms.new_order("R1", "L000", BUY, 100, below(rig, "L000"), extra=[(63, "0"), (775, "0")])
    rig.oms.wait_report("R1", "0")
    assert rig.venue.stats.orders == 1
