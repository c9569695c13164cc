"""With `instrument = "security_id"` a reference price is filed under the SecurityID.

The Guard checks an order under its SecurityID(48); the venue's market data snapshot
names the instrument by Symbol(55) and SecurityID(48). Before, the gateway filed every
snapshot's mid under its Symbol: no order was ever checked against it. With
`require_reference_price = false` (what docs/gateway.md advised for SecurityIDs) a limit
order far through the market passed with no collar at all (fail open); with it on, every
order was refused `no_reference_price` although the venue sent the price. A snapshot
that names no SecurityID is recorded `venue_price_refused`, never filed under its Symbol.
Real QuickFIX sessions (`conftest.Rig`).
"""

from __future__ import annotations

from collections.abc import Callable

from knightwatch.gateway import fields as F
from knightwatch.limits import Limits

from .conftest import LIMITS, Rig, eventually
from .test_gateway import BUY

ISIN = "US0000L00001"


def _order(rig: Rig, clordid: str, price: float) -> str:
    ids = [(F.SECURITY_ID, ISIN), (F.ID_SOURCE, "4")]
    rig.oms.new_order(clordid, "L000", BUY, 10, price, extra=ids)
    report = rig.oms.wait_for(
        lambda r: r.get(F.CL_ORD_ID) == clordid and r.get(F.EXEC_TYPE) in ("0", "8", "F"),
        what=f"{clordid} answered",
    )
    return report.get(F.EXEC_TYPE) + " " + (report.get(F.TEXT) or "")


def test_an_order_named_by_security_id_is_collared_at_the_price_the_venue_sends_for_it(
    rig_factory: Callable[..., Rig],
) -> None:
    kept = {f: getattr(LIMITS, f) for f in LIMITS.__struct_fields__}
    limits = Limits(**{**kept, "require_reference_price": False})
    rig = rig_factory(
        limits=limits,
        config={"instrument": "security_id", "security_id_source": "4"},
        venue={"security_ids": {"L000": ISIN}},
    ).start()
    rig.ready((ISIN,))  # before, no price was ever held under the SecurityID
    touch = rig.venue.books["L000"].touch(True)
    # far through the market: before, accepted with no collar (and filled)
    assert _order(rig, "C1", round(touch * 1.5, 2)).startswith("8 knightwatch:price_collar")
    assert _order(rig, "C2", round(touch - 0.5, 2)).startswith("0")
    assert rig.guard.position("L000") == 0 and rig.venue.stats.orders == 1


def test_a_snapshot_naming_no_security_id_is_refused_not_filed_under_its_symbol(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(
        config={"instrument": "security_id", "security_id_source": "4"}, venue={"security_ids": {}}
    ).start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    refused = eventually(lambda: rig.events("venue_price_refused"), what="price refused")
    assert "SecurityID(48)" in refused[0]["data"]["why"]
    assert not rig._has_price("L000")
    # with the price required, an order is refused for want of one, never checked against
    # another instrument's
    assert _order(rig, "N1", 100.0).startswith("8 knightwatch:no_reference_price")
