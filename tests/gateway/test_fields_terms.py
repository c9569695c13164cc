"""Fields that change what the venue trades or how it reads Price(44) are refused, named.

Currency(15), PriceType(423), SecurityExchange(207), the SecurityAltID group
(454/455/456), SecurityType(167), CFICode(461) and ContractMultiplier(231) went to the
venue as the client sent them: a PriceType of percentage or yield, another currency,
another listing or product was traded while the Guard had checked the Symbol per unit in
its own currency. Now refused `invalid_order` naming the tag (a replace too), or taken only
at the value the Guard assumes (PriceType 2, the configured `currency`). A refused request
also leaves no parent registered: before, a refused replace naming a new parent left it
at that quantity, and the parent's next child, with its true quantity, was refused.
Real QuickFIX sessions, as the other gateway tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from knightwatch.gateway import fields as F
from knightwatch.gateway.config import GatewayConfig
from knightwatch.gateway.engine import GatewayError

from .conftest import Rig
from .test_gateway import BUY, below, rest

ALT_ID = [(454, "1"), (455, "US0378331005"), (456, "4")]
ALT_NAMES = "NoSecurityAltID(454), SecurityAltID(455), SecurityAltIDSource(456)"


def _replace_with(rig: Rig, clordid: str, orig: str, extra: list[tuple[int, str]]) -> str:
    """Send a replace of `orig` carrying `extra`; the Text of its OrderCancelReject."""
    msg = rig.oms.order_message(clordid, "L000", BUY, 200, below(rig, "L000"))
    msg.setField(F.ORIG_CL_ORD_ID, orig)
    msg.getHeader().setField(F.MSG_TYPE, F.REPLACE)
    for tag, value in extra:
        msg.setField(tag, value)
    rig.oms.send(msg)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == clordid)
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
    return str(rej.get(F.TEXT))


@pytest.mark.parametrize(
    ("extra", "starts"),
    [
        ([(15, "EUR")], "Currency(15)='EUR' cannot be checked (no currency is configured"),
        ([(15, "USD")], "Currency(15)='USD' cannot be checked (no currency is configured"),
        ([(423, "1")], "PriceType(423)='1' cannot be checked (the Guard reads Price(44) per"),
        ([(423, "8")], "PriceType(423)='8' cannot be checked"),
        ([(423, "6")], "PriceType(423)='6' cannot be checked"),
        ([(207, "XLON")], "SecurityExchange(207) cannot be checked (the Guard checks Symbol(55)"),
        (ALT_ID, f"{ALT_NAMES} cannot be checked (the Guard checks Symbol(55) alone)"),
        ([(167, "OPT")], 'SecurityType(167) cannot be checked with instrument = "symbol"'),
        ([(461, "OCASPS")], 'CFICode(461) cannot be checked with instrument = "symbol"'),
        ([(231, "100")], 'ContractMultiplier(231) cannot be checked with instrument = "symbol"'),
    ],
)
def test_a_field_that_changes_the_trade_is_refused_on_an_order_and_a_replace(
    rig: Rig, extra: list[tuple[int, str]], starts: str
) -> None:
    want = f"knightwatch:invalid_order {starts}"
    rig.oms.new_order("T1", "L000", BUY, 100, below(rig, "L000"), extra=extra)
    assert rig.oms.wait_report("T1", "8").get(F.TEXT).startswith(want)
    rest(rig, "T2")
    assert _replace_with(rig, "T3", "T2", extra).startswith(want)
    time.sleep(0.1)
    assert rig.venue.find("T1") is None and rig.venue.find("T3") is None
    assert rig.venue.stats.orders == 1
    assert rig.guard.working_qty("L000") == (100, 0)


def test_per_unit_price_type_and_the_configured_currency_go_on(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(config={"currency": "USD"}).start().ready()
    rig.oms.new_order("U1", "L000", BUY, 100, below(rig, "L000"), extra=[(15, "USD"), (423, "2")])
    rig.oms.wait_report("U1", "0")
    rig.oms.new_order("U2", "L000", BUY, 100, below(rig, "L000"), extra=[(15, "EUR")])
    text = rig.oms.wait_report("U2", "8").get(F.TEXT)
    assert text.startswith(
        "knightwatch:invalid_order Currency(15)='EUR' is not the gateway's currency USD"
    )
    # ISO codes are upper case: a lower-case one is not the configured currency
    rig.oms.new_order("U3", "L000", BUY, 100, below(rig, "L000"), extra=[(15, "usd")])
    assert (
        rig.oms.wait_report("U3", "8")
        .get(F.TEXT)
        .startswith("knightwatch:invalid_order Currency(15)='usd' is not")
    )
    assert rig.venue.stats.orders == 1


def test_with_security_ids_another_listing_is_refused_a_restated_type_is_not(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = (
        rig_factory(config={"instrument": "security_id", "security_id_source": "8"}).start().ready()
    )
    ids = [(F.SECURITY_ID, "L000"), (F.ID_SOURCE, "8")]
    rig.oms.new_order("S1", "L000", BUY, 100, below(rig, "L000"), extra=[*ids, (207, "XLON")])
    assert (
        rig.oms.wait_report("S1", "8")
        .get(F.TEXT)
        .startswith(
            "knightwatch:invalid_order SecurityExchange(207) cannot be checked (the Guard checks "
            "SecurityID(48) alone)"
        )
    )
    rig.oms.new_order("S2", "L000", BUY, 100, below(rig, "L000"), extra=[*ids, (167, "CS")])
    rig.oms.wait_report("S2", "0")
    assert rig.venue.stats.orders == 1


def test_a_refused_replace_naming_a_new_parent_leaves_no_parent(rig: Rig) -> None:
    rest(rig, "P1")
    text = _replace_with(rig, "P2", "P1", [(5001, "NEWPARENT"), (5002, "300")])
    assert text.startswith("knightwatch:invalid_order tag 5001 (parent): a replace keeps")
    assert rig.guard.parent_qty("NEWPARENT") is None
    # the parent's real first child, with its true quantity, is taken
    parent = [(5001, "NEWPARENT"), (5002, "1000")]
    rig.oms.new_order("P3", "L000", BUY, 100, below(rig, "L000"), extra=parent)
    rig.oms.wait_report("P3", "0")
    assert rig.guard.parent_qty("NEWPARENT") == 1000


def test_a_new_order_the_gateway_refuses_leaves_no_parent(rig: Rig) -> None:
    rest(rig, "N1")
    # a fresh order reusing a ClOrdID in use: refused by the gateway before the Guard
    rig.oms.new_order(
        "N1", "L000", BUY, 100, below(rig, "L000"), extra=[(5001, "PX"), (5002, "300")]
    )
    rig.oms.wait_for(
        lambda r: r.get(F.CL_ORD_ID) == "N1" and r.get(F.EXEC_TYPE) == "8", what="N1 refused"
    )
    assert rig.guard.parent_qty("PX") is None
    rig.oms.new_order(
        "N2", "L000", BUY, 100, below(rig, "L000"), extra=[(5001, "PX"), (5002, "1000")]
    )
    rig.oms.wait_report("N2", "0")
    assert rig.guard.parent_qty("PX") == 1000


@pytest.mark.parametrize("bad", ["usd", "US", "USDX", "U5D", "USD\n", ""])
def test_a_currency_that_is_no_iso_code_is_refused_naming_the_key(tmp_path: Path, bad: str) -> None:
    p = tmp_path / "gw.toml"
    p.write_text(
        f"listen_port = 9878\nassume_flat = true\ncurrency = {bad!r}\n"
        '[venue]\nport = 9880\n[[clients]]\ncomp_id = "OMS1"\n'.replace("'", '"')
    )
    with pytest.raises(GatewayError) as exc:
        GatewayConfig.from_toml(p)
    assert f"currency: must be an ISO 4217 code, three letters A-Z (got {bad!r})" in str(exc.value)
