"""With `instrument = "security_id"` the gateway's own reports name the instrument as the
client named it.

The Guard keys an order by its SecurityID(48). Before, a report the gateway wrote itself
(an answer to an OrderStatusRequest or an OrderMassStatusRequest, an "unknown order"
answer, an order's state the venue left unknown) carried that SecurityID as Symbol(55)
and no SecurityID(48) or SecurityIDSource(22): a client OMS matching reports by
instrument took the order for another instrument's, or dropped the report. Now they
carry the Symbol(55), SecurityID(48) and SecurityIDSource(22) the order was sent with.
Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.gateway import fields as F
from knightwatch.gateway.client import Received
from knightwatch.limits import Limits

from .conftest import Rig
from .test_gateway import BUY, below, mass_status

ISIN = "US0000L00001"
LIMITS = Limits.off(max_order_qty=5_000, require_reference_price=False)
IDS = [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")]
CONFIG = {"instrument": "security_id", "security_id_source": "4"}


def _named(r: Received) -> tuple[str, str, str]:
    return r.get(F.SYMBOL), r.get(F.SECURITY_ID), r.get(F.ID_SOURCE)


def test_status_answers_name_the_instrument_as_the_client_named_it(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(limits=LIMITS, config=CONFIG).start().ready(())
    rig.oms.new_order("K1", "L000", BUY, 10, below(rig, "L000"), extra=IDS)
    rig.oms.wait_report("K1", "0")
    rig.oms.send(
        F.message(F.STATUS_REQUEST, [(F.CL_ORD_ID, "K1"), (F.SYMBOL, "L000"), (F.SIDE, BUY), *IDS])
    )
    status = rig.oms.wait_report("K1", "I")
    # before: ("US0000L00001", "", "")
    assert _named(status) == ("L000", ISIN, "4")
    (one,) = mass_status(rig, "S1", [(F.MASS_STATUS_REQ_TYPE, "1"), *IDS])
    assert one.get(F.CL_ORD_ID) == "K1" and _named(one) == ("L000", ISIN, "4")
    (every,) = mass_status(rig, "S7", [(F.MASS_STATUS_REQ_TYPE, "7")])
    assert _named(every) == ("L000", ISIN, "4")


def test_an_unknown_order_is_answered_under_the_instrument_asked_about(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(limits=LIMITS, config=CONFIG).start().ready(())
    rig.oms.send(
        F.message(F.STATUS_REQUEST, [(F.CL_ORD_ID, "U1"), (F.SYMBOL, "L000"), (F.SIDE, BUY), *IDS])
    )
    unknown = rig.oms.wait_report("U1", "I")
    assert unknown.get(F.ORD_STATUS) == "8" and unknown.get(F.TEXT) == "unknown order"
    # before: Symbol(55)=L000 alone, the SecurityID asked about dropped
    assert _named(unknown) == ("L000", ISIN, "4")
