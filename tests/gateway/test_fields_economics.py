"""Fields that change the trade's economics beyond what the Guard checks are refused, named.

The earlier round refused the fields that name another instrument or read Price(44)
otherwise (`test_fields_terms.py`, `test_instrument_qualifiers.py`); the rest of that
family went to the venue as the client sent them: Product(460) and Factor(228) under a
Symbol the Guard checks alone, an instrument built on underlyings (711), a financing
agreement, a swap's far leg (OrderQty2(192)), a quantity the venue works out otherwise
(OrderPercent(516), RoundingModulus(469), QtyType(854) contracts), a price against a
benchmark or a yield (Spread(218)), a discretion or peg offset that lets the venue trade
past the Price(44) the Guard collared, stipulations, an FX trade to settle in another
currency (ForexReq(121)=Y, SettlCurrency(120)). Now each is refused `invalid_order`
naming the tag and why, on an order and on a replace, nothing sent to the venue. Real
QuickFIX sessions, as the other gateway tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from knightwatch.gateway import fields as F

from .conftest import Rig
from .test_gateway import BUY, below, rest

Extra = list[tuple[int, str]]


def _group(msg: Any, count: int, first: int, fields: Extra) -> None:
    g = F.fix().Group(count, first)
    for tag, value in fields:
        g.setField(tag, value)
    msg.addGroup(g)


def _order(rig: Rig, clordid: str, extra: Extra, group: tuple[int, int, Extra] | None) -> Any:
    msg = rig.oms.order_message(clordid, "L000", BUY, 100, below(rig, "L000"), extra=extra)
    if group is not None:
        _group(msg, *group)
    return msg


UNDERLYING = (711, 311, [(311, "L001")])
STIPULATION = (232, 233, [(233, "MAXSUBS"), (234, "3")])


@pytest.mark.parametrize(
    ("extra", "group", "starts"),
    [
        ([(460, "4")], None, 'Product(460) cannot be checked with instrument = "symbol"'),
        ([(228, "0.5")], None, 'Factor(228) cannot be checked with instrument = "symbol"'),
        ([(223, "5.25")], None, 'CouponRate(223) cannot be checked with instrument = "symbol"'),
        ([], UNDERLYING, "NoUnderlyings(711) cannot be checked (the instrument is built on"),
        ([(916, "20261201"), (917, "20261231")], None, "StartDate(916), EndDate(917) cannot"),
        ([(192, "1000000")], None, "OrderQty2(192) cannot be checked (a second trade"),
        ([(516, "50")], None, "OrderPercent(516) cannot be checked (the venue would work"),
        ([(468, "1"), (469, "1000000")], None, "RoundingDirection(468), RoundingModulus(469)"),
        ([(218, "150")], None, "Spread(218) cannot be checked (the venue would read the price"),
        ([(236, "4.5")], None, "Yield(236) cannot be checked (the venue would read the price"),
        ([(388, "0"), (389, "5")], None, "DiscretionInst(388), DiscretionOffsetValue(389)"),
        ([(211, "2")], None, "PegOffsetValue(211) cannot be checked (a peg or a discretion"),
        ([], STIPULATION, "NoStipulations(232) cannot be checked (stipulations change"),
        ([(854, "1")], None, "QtyType(854)='1' cannot be checked (the Guard reads OrderQty(38)"),
        ([(121, "Y")], None, "ForexReq(121)='Y' cannot be checked (the venue would also trade"),
        ([(120, "EUR")], None, "SettlCurrency(120)='EUR' cannot be checked (no currency is"),
    ],
)
def test_a_field_that_changes_the_economics_is_refused_on_an_order_and_a_replace(
    rig: Rig, extra: Extra, group: tuple[int, int, Extra] | None, starts: str
) -> None:
    want = f"knightwatch:invalid_order {starts}"
    rig.oms.send(_order(rig, "E1", extra, group))
    assert rig.oms.wait_report("E1", "8").get(F.TEXT).startswith(want)
    rest(rig, "E2")
    if group != STIPULATION:  # not a field of a replace: the FIX engine refuses it there
        msg = _order(rig, "E3", extra, group)
        msg.setField(F.ORIG_CL_ORD_ID, "E2")
        msg.getHeader().setField(F.MSG_TYPE, F.REPLACE)
        rig.oms.send(msg)
        rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "E3")
        assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
        assert str(rej.get(F.TEXT)).startswith(want)
    time.sleep(0.1)
    assert rig.venue.find("E1") is None and rig.venue.find("E3") is None
    assert rig.venue.stats.orders == 1
    assert rig.guard.working_qty("L000") == (100, 0)


def test_what_restates_the_guards_reading_goes_on(rig_factory: Callable[..., Rig]) -> None:
    """QtyType 0 (units), ForexReq N, the configured currency to settle in, a description
    of the instrument: nothing the Guard reads otherwise, so the order reaches the venue;
    another settlement currency is refused naming the configured one."""
    rig = rig_factory(config={"currency": "USD"}).start().ready()
    fine = [(854, "0"), (121, "N"), (120, "USD"), (107, "Lot zero")]
    rig.oms.new_order("G1", "L000", BUY, 100, below(rig, "L000"), extra=fine)
    rig.oms.wait_report("G1", "0")
    rig.oms.new_order("G2", "L000", BUY, 100, below(rig, "L000"), extra=[(120, "EUR")])
    assert (
        rig.oms.wait_report("G2", "8")
        .get(F.TEXT)
        .startswith(
            "knightwatch:invalid_order SettlCurrency(120)='EUR' is not the gateway's currency "
            "USD (the Guard counts the trade in it, not converted into another)"
        )
    )
    assert rig.venue.stats.orders == 1


def test_with_security_ids_the_instruments_own_terms_restate_it_the_trades_do_not(
    rig_factory: Callable[..., Rig],
) -> None:
    """With `instrument = "security_id"` Product(460) and Factor(228) only restate the
    instrument the SecurityID names; a discretion offset still trades past the price."""
    rig = (
        rig_factory(config={"instrument": "security_id", "security_id_source": "8"}).start().ready()
    )
    ids = [(F.SECURITY_ID, "L000"), (F.ID_SOURCE, "8")]
    rig.oms.new_order(
        "S1", "L000", BUY, 100, below(rig, "L000"), extra=[*ids, (460, "5"), (228, "1")]
    )
    rig.oms.wait_report("S1", "0")
    rig.oms.new_order(
        "S2", "L000", BUY, 100, below(rig, "L000"), extra=[*ids, (388, "0"), (389, "5")]
    )
    assert (
        rig.oms.wait_report("S2", "8")
        .get(F.TEXT)
        .startswith("knightwatch:invalid_order DiscretionInst(388), DiscretionOffsetValue(389)")
    )
    assert rig.venue.stats.orders == 1
