"""With `instrument = "symbol"`, fields that name another instrument under the Symbol are refused.

SymbolSfx(65) (a share class: BRK A trades some 1,500 times BRK B), a contract month
(MaturityMonthYear(200), MaturityDate(541)) or an option series (PutOrCall(201),
StrikePrice(202)) make the venue trade another instrument than the Symbol the Guard
checks, at its own price: before, the order went to the venue as it came, its notional,
collar and position checked against the wrong instrument. Refused `invalid_order`
naming the field, a replace too, nothing sent to the venue. Real QuickFIX sessions.
"""

from __future__ import annotations

import time

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig
from .test_gateway import BUY, below, mass_status, rest


@pytest.mark.parametrize(
    ("tag", "value", "name"),
    [
        (65, "A", "SymbolSfx(65)"),
        (200, "202612", "MaturityMonthYear(200)"),
        (541, "20261218", "MaturityDate(541)"),
        (201, "1", "PutOrCall(201)"),
        (202, "105", "StrikePrice(202)"),
    ],
)
def test_an_instrument_qualifier_is_refused_on_an_order_and_a_replace(
    rig: Rig, tag: int, value: str, name: str
) -> None:
    rig.oms.new_order("Q1", "L000", BUY, 100, below(rig, "L000"), extra=[(tag, value)])
    rej = rig.oms.wait_report("Q1", "8")
    assert rej.get(F.TEXT).startswith(f"knightwatch:invalid_order {name} cannot be checked")
    rest(rig, "Q2")
    msg = rig.oms.order_message("Q3", "L000", BUY, 200, below(rig, "L000"))
    msg.setField(F.ORIG_CL_ORD_ID, "Q2")
    msg.getHeader().setField(F.MSG_TYPE, F.REPLACE)
    msg.setField(tag, value)
    rig.oms.send(msg)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "Q3")
    assert rej.get(F.TEXT).startswith(f"knightwatch:invalid_order {name} cannot be checked")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
    time.sleep(0.1)
    assert rig.venue.find("Q1") is None and rig.venue.find("Q3") is None
    assert rig.venue.stats.orders == 1
    assert rig.guard.working_qty("L000") == (100, 0)


def test_a_mass_request_by_symbol_with_a_qualifier_is_refused(rig: Rig) -> None:
    """A mass cancel (530=1) or mass status (585=1) of L000 with SymbolSfx A names another
    instrument than the client's L000 orders (which can carry no suffix). Before, it was
    matched on the Symbol alone: Q1 was cancelled, or reported as the A shares'. Refused
    naming the field, nothing cancelled or reported."""
    rest(rig, "Q1")
    rig.oms.send(
        F.message(
            F.MASS_CANCEL,
            [
                (F.CL_ORD_ID, "MQ"),
                (F.MASS_CANCEL_REQUEST_TYPE, "1"),
                (F.SYMBOL, "L000"),
                (65, "A"),
                (F.TRANSACT_TIME, F.now_utc()),
            ],
        )
    )
    got = rig.oms.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT)
    assert (got.get(F.MASS_CANCEL_RESPONSE), got.get(F.TOTAL_AFFECTED)) == ("0", "0")
    assert got.get(F.TEXT).startswith("knightwatch:invalid_order SymbolSfx(65) cannot be checked")
    (rej,) = mass_status(rig, "SQ", [(F.MASS_STATUS_REQ_TYPE, "1"), (F.SYMBOL, "L000"), (65, "A")])
    assert rej.mtype == F.BUSINESS_REJECT, rej
    assert rej.get(F.TEXT).startswith("knightwatch:invalid_order SymbolSfx(65) cannot be checked")
    assert [o.clordid for o in rig.venue.working()] == ["Q1"]
