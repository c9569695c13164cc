"""Order handling through the gateway, over real QuickFIX sessions on loopback."""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from knightwatch.clock import SystemClock
from knightwatch.decision import RejectReason
from knightwatch.gateway import fields as F
from knightwatch.gateway import gateway as gateway_module
from knightwatch.gateway.client import FixClient, Received
from knightwatch.gateway.config import ClientSession
from knightwatch.gateway.engine import GatewayError, fix
from knightwatch.gateway.gateway import Gateway
from knightwatch.gateway.metrics import gateway_snapshot
from knightwatch.gateway.venue import FixVenue, VenueOrder
from knightwatch.guard import LockedGuard
from knightwatch.limits import Limits, Override
from knightwatch.state import Scope

from .conftest import LIMITS, WAIT_S, Rig, eventually

BUY, SELL = "1", "2"


def below(rig: Rig, symbol: str, ticks: int = 50) -> float:
    """A buy price that rests (does not cross) but stays inside the collar."""
    return round(rig.venue.books[symbol].touch(False) - ticks * 0.01, 2)


def rest(rig: Rig, clordid: str, qty: int = 100, symbol: str = "L000") -> Received:
    rig.oms.new_order(clordid, symbol, BUY, qty, below(rig, symbol))
    return rig.oms.wait_report(clordid, "0")


# --- new orders ----------------------------------------------------------------------


def test_accepted_order_goes_to_the_venue_unchanged_and_fills(rig: Rig) -> None:
    oms = rig.oms
    assert oms.new_order("A1", "L000", BUY, 100, 101.0, extra=[(F.ACCOUNT, "acct-7")])
    fill = oms.wait_report("A1", "F")
    assert fill.get(F.ORD_STATUS) == "2"
    assert rig.venue.stats.orders == 1
    venue_order = rig.venue.find("A1")
    assert venue_order is not None and venue_order.clordid == "A1"  # the client's id on the wire
    assert rig.guard.position("L000") == 100
    decided = [r for r in rig.records() if r["kind"] == "decision"]
    assert [(r["order_id"], r["accepted"]) for r in decided] == [("OMS1:A1", True)]


def test_refused_order_is_an_execution_report_with_the_reason_and_never_leaves(rig: Rig) -> None:
    oms = rig.oms
    oms.new_order("B1", "L000", BUY, 50_000, 100.0)
    rej = oms.wait_report("B1", "8")
    assert rej.get(F.ORD_STATUS) == "8"
    assert rej.get(F.ORD_REJ_REASON) == F.REJ_EXCEEDS_LIMIT
    assert rej.get(F.TEXT).startswith("knightwatch:max_order_qty ")
    assert rej.get(F.ORDER_ID) == "NONE" and rej.get(F.LEAVES_QTY) == "0"
    assert not any(r.mtype == F.SESSION_REJECT for r in oms.received)
    time.sleep(0.05)
    assert rig.venue.stats.orders == 0


def test_limit_order_without_price_is_refused_invalid(rig: Rig) -> None:
    msg = rig.oms.order_message("B2", "L000", BUY, 100, 100.0)
    msg.removeField(F.PRICE)
    rig.oms.send(msg)
    assert rig.oms.wait_report("B2", "8").get(F.TEXT).startswith("knightwatch:invalid_order ")


@pytest.mark.parametrize(
    ("price", "text"),
    [("0", "Price(44): must be > 0 (got 0.0)"), ("-5", "Price(44): must be > 0 (got -5.0)")],
)
def test_a_refusal_from_the_orders_own_validation_names_the_fix_tag(
    rig: Rig, price: str, text: str
) -> None:
    """A price the order's own rules refuse was answered "price: must be > 0", the rule
    without the tag: every other refusal names the FIX tag (an OMS looks it up). A
    replace's refusal names it too."""
    msg = rig.oms.order_message("B3", "L000", BUY, 100, 100.0)
    msg.setField(F.PRICE, price)
    rig.oms.send(msg)
    assert rig.oms.wait_report("B3", "8").get(F.TEXT) == f"knightwatch:invalid_order {text}"
    rest(rig, "B4")
    rig.oms.replace("B5", "B4", "L000", BUY, 100, float(price))
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "B5")
    assert rej.get(F.TEXT) == f"knightwatch:invalid_order {text}"
    assert rig.venue.stats.orders == 1 and rig.guard.working_qty("L000") == (100, 0)


def test_duplicate_clordid_across_sessions_is_refused(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(clients=("OMS1", "OMS2")).start().ready()
    a, b = rig.clients["OMS1"], rig.clients["OMS2"]
    a.new_order("SAME", "L000", BUY, 100, below(rig, "L000"))
    a.wait_report("SAME", "0")
    b.new_order("SAME", "L000", BUY, 100, below(rig, "L000"))
    assert b.wait_report("SAME", "8").get(F.TEXT).startswith("knightwatch:duplicate_order_id ")
    assert rig.venue.stats.orders == 1


def test_decimal_quantities_count_in_lots(rig_factory: Callable[..., Rig]) -> None:
    limits = Limits(
        **{f: getattr(LIMITS, f) for f in LIMITS.__struct_fields__ if f not in ("symbol",)},
        symbol={"L001": Override(lot_size=0.001)},
    )
    rig = rig_factory(limits=limits, venue={"lots": {"L001": Decimal("0.001")}}).start().ready()
    rig.oms.new_order("D1", "L001", BUY, "0.5", 101.0)
    fill = rig.oms.wait_report("D1", "F")
    assert Decimal(fill.get(F.CUM_QTY)) == Decimal("0.5")
    assert rig.guard.position("L001") == 500  # lots of 0.001
    rig.oms.new_order("D2", "L001", BUY, "0.0005", 101.0)
    assert "lot_size 0.001" in rig.oms.wait_report("D2", "8").get(F.TEXT)


def test_instrument_ids_longer_than_sixteen_characters(rig_factory: Callable[..., Rig]) -> None:
    occ = "AAPL  260116C00150000"  # 21 characters, as OCC writes an option
    limits = Limits.off(max_order_qty=5_000, require_reference_price=False)
    rig = (
        rig_factory(limits=limits, config={"instrument": "security_id", "security_id_source": "8"})
        .start()
        .ready(())
    )
    rig.oms.new_order(
        "O1", "L000", BUY, 10, 101.0, extra=[(F.SECURITY_ID, occ), (F.ID_SOURCE, "8")]
    )
    rig.oms.wait_report("O1", "F")
    assert rig.guard.position(occ) == 10


# --- resends, duplicates, unsupported types, malformed FIX ---------------------------------


def test_resent_order_is_answered_from_the_decision_not_sent_twice(rig: Rig) -> None:
    oms = rig.oms
    first = oms.order_message("R1", "L000", BUY, 100, below(rig, "L000"))
    oms.send(first)
    oms.wait_report("R1", "0")
    again = oms.order_message("R1", "L000", BUY, 100, below(rig, "L000"))
    again.getHeader().setField(F.POSS_RESEND, "Y")
    oms.send(again)
    status = oms.wait_report("R1", "I")
    assert status.get(F.ORD_STATUS) == "0"
    refused = oms.order_message("R2", "L000", BUY, 90_000, 100.0)
    oms.send(refused)
    oms.wait_report("R2", "8")
    blocked = sum(rig.guard.counters()[1].values())
    resent = oms.order_message("R2", "L000", BUY, 90_000, 100.0)
    resent.getHeader().setField(F.POSS_RESEND, "Y")
    oms.send(resent)
    eventually(lambda: len([r for r in oms.reports("R2") if r.get(F.EXEC_TYPE) == "8"]) == 2)
    assert rig.venue.stats.orders == 1
    assert sum(rig.guard.counters()[1].values()) == blocked  # not checked again
    assert len(rig.events("fix_resend")) == 2


def test_a_fresh_order_reusing_a_clordid_is_a_duplicate(rig: Rig) -> None:
    rest(rig, "U1")
    rig.oms.new_order("U1", "L000", BUY, 100, below(rig, "L000"))
    rej = rig.oms.wait_report("U1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:duplicate_order_id ")


def test_a_refused_duplicate_does_not_change_how_a_resend_of_the_order_is_answered(
    rig: Rig,
) -> None:
    oms = rig.oms
    rest(rig, "R1")
    oms.new_order("R1", "L000", BUY, 100, below(rig, "L000"))  # fresh, not a resend
    assert oms.wait_report("R1", "8").get(F.TEXT).startswith("knightwatch:duplicate_order_id ")
    again = oms.order_message("R1", "L000", BUY, 100, below(rig, "L000"))
    again.getHeader().setField(F.POSS_RESEND, "Y")
    oms.send(again)
    status = oms.wait_report("R1", "I")
    assert status.get(F.ORD_STATUS) == "0"  # working, as the venue has it
    assert [o.clordid for o in rig.venue.working()] == ["R1"]


def test_finished_orders_are_forgotten_after_the_duplicate_scope_live_ones_never(
    rig_factory: Callable[..., Rig],
) -> None:
    """The book holds one duplicate scope of finished orders: after two scopes a cancelled
    order is no longer held and its ClOrdID is no longer the gateway's to refuse, while an
    order that stayed working is still known (and can be cancelled)."""
    limits = msgspec.structs.replace(LIMITS, duplicate_id_window_s=1.0)
    rig = rig_factory(limits=limits).start().ready()
    book = rig.gateway.book
    rest(rig, "W1")
    rest(rig, "F1")
    rig.oms.cancel("F1x", "F1", "L000", BUY, 100)
    rig.oms.wait_report("F1x", "4")
    assert "F1" in book.orders and "F1" in book.owner
    time.sleep(2.2)
    for i in range(3):  # forgetting rides on later orders
        rest(rig, f"N{i}")
    assert "F1" not in book.orders and "F1" not in book.owner and "OMS1:F1" not in book.decided
    assert book.working["W1"].live and "OMS1:W1" in book.decided
    acks = len(rig.oms.reports("F1"))
    rig.oms.new_order("F1", "L000", BUY, 100, below(rig, "L000"))  # out of scope: new again
    eventually(lambda: len(rig.oms.reports("F1")) > acks)
    # forwarded, not refused by the gateway: the venue, which keeps its own day, answers
    assert not rig.oms.reports("F1")[-1].get(F.TEXT).startswith("knightwatch:")
    rig.oms.cancel("W1x", "W1", "L000", BUY, 100)
    assert rig.oms.wait_report("W1x", "4").get(F.ORIG_CL_ORD_ID) == "W1"
    assert {o.clordid for o in book.live()} == {"N0", "N1", "N2"}


def test_a_bust_of_a_forgotten_order_halts(rig_factory: Callable[..., Rig]) -> None:
    """After the duplicate scope a finished order is forgotten with its fills; the venue
    busting one of them later moves the position at the venue with nothing to take back
    in the Guard. It halts `fill_mismatch`, as the book promises (before, it was recorded
    as an unknown report and ignored: the busted trade stayed in the position)."""
    limits = msgspec.structs.replace(LIMITS, duplicate_id_window_s=1.0)
    rig = rig_factory(limits=limits).start().ready()
    rig.oms.new_order("F1", "L000", BUY, 100, 104.0)
    exec_id = rig.oms.wait_report("F1", "F").get(F.EXEC_ID)
    time.sleep(2.2)
    for i in range(3):  # forgetting rides on later orders
        rest(rig, f"N{i}")
    assert "F1" not in rig.gateway.book.orders and exec_id not in rig.gateway.book.fills
    rig.venue.bust(exec_id)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ClOrdID F1" in halt.reason


def test_a_quote_is_refused_with_business_reject(rig: Rig) -> None:
    rig.oms.send(F.message("S", [(117, "q1"), (F.SYMBOL, "L000")]))
    got = rig.oms.wait_for(lambda r: r.mtype == F.BUSINESS_REJECT)
    assert got.get(F.BUSINESS_REJECT_REASON) == F.BIZ_UNSUPPORTED_TYPE
    assert got.get(F.BUSINESS_REJECT_REF_ID) == "q1"
    assert got.get(F.TEXT).startswith("knightwatch:unsupported_message ")
    assert rig.venue.stats.orders == 0


def test_new_order_list_is_refused_with_business_reject(rig: Rig) -> None:
    msg = F.message("E", [(66, "L1"), (394, "3"), (68, "1")])
    g = F.fix().Group(73, F.CL_ORD_ID)
    for tag, value in (
        (F.CL_ORD_ID, "LO1"),
        (67, "1"),
        (F.SYMBOL, "L000"),
        (F.SIDE, BUY),
        (F.ORDER_QTY, "10"),
    ):
        g.setField(tag, value)
    msg.addGroup(g)
    rig.oms.send(msg)
    got = rig.oms.wait_for(lambda r: r.mtype == F.BUSINESS_REJECT)
    assert got.get(F.REF_MSG_TYPE) == "E" and got.get(F.BUSINESS_REJECT_REF_ID) == "L1"
    assert got.get(F.TEXT).startswith("knightwatch:unsupported_message ")
    assert rig.events("fix_refused")[0]["data"]["msg_type"] == "E"


def test_wrong_type_and_missing_tag_get_a_session_reject_that_is_recorded(rig: Rig) -> None:
    bad_qty = rig.oms.order_message("M1", "L000", BUY, "abc", 100.0)
    rig.oms.send(bad_qty)
    no_side = rig.oms.order_message("M2", "L000", BUY, 100, 100.0)
    no_side.removeField(F.SIDE)
    rig.oms.send(no_side)
    eventually(lambda: len([r for r in rig.oms.received if r.mtype == F.SESSION_REJECT]) == 2)
    rejects = [r for r in rig.oms.received if r.mtype == F.SESSION_REJECT]
    assert {r.get(F.SESSION_REJECT_REASON) for r in rejects} == {"6", "1"}
    rest(rig, "M3")  # the session carries on; the next order is handled
    notes = rig.events("fix_session_reject")
    assert {n["data"]["reason"] for n in notes} == {6, 1}
    assert rig.venue.stats.orders == 1


def _raw(fields: list[tuple[int, str | bytes]], *, seq: int, corrupt: bool = False) -> bytes:
    """A FIX message as bytes on the wire (values may be raw bytes, not UTF-8)."""
    body = b"".join(
        f"{t}=".encode() + (v if isinstance(v, bytes) else v.encode()) + b"\x01" for t, v in fields
    )
    head = f"8=FIX.4.4\x019={len(body)}\x01".encode()
    total = sum(head + body) % 256
    if corrupt:
        total = (total + 1) % 256
    return head + body + f"10={total:03d}\x01".encode()


def test_bad_checksum_is_dropped_and_recovered_by_resend(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(clients=("OMS1", "RAW")).start(connect=("OMS1",)).ready()
    gw = rig.gw_comp

    def hdr(mtype: str, seq: int) -> list[tuple[int, str]]:
        return [(35, mtype), (49, "RAW"), (56, gw), (34, str(seq)), (52, F.now_utc())]

    with socket.create_connection(("127.0.0.1", rig.gw_port), timeout=5) as s:
        s.sendall(_raw([*hdr("A", 1), (98, "0"), (108, "5"), (141, "Y")], seq=1))
        time.sleep(0.3)
        order = [(11, "C1"), (55, "L000"), (54, "1"), (38, "10"), (40, "1"), (60, F.now_utc())]
        s.sendall(_raw([*hdr("D", 2), *order], seq=2, corrupt=True))
        time.sleep(0.2)
        assert rig.venue.stats.orders == 0  # a garbled message is not acted on
        s.sendall(_raw([*hdr("0", 3)], seq=3))
        data = b""
        deadline = time.monotonic() + WAIT_S
        while b"35=2\x01" not in data and time.monotonic() < deadline:
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                data += s.recv(65536)
    assert b"35=2\x01" in data and b"7=2\x01" in data  # ResendRequest from seq 2: nothing lost


def test_bytes_that_are_not_utf8_get_a_refusal_and_nothing_is_forwarded(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(clients=("OMS1", "RAW")).start(connect=("OMS1",)).ready()
    gw = rig.gw_comp

    def hdr(mtype: str, seq: int) -> list[tuple[int, str | bytes]]:
        return [(35, mtype), (49, "RAW"), (56, gw), (34, str(seq)), (52, F.now_utc())]

    def order(cid: str | bytes, symbol: str | bytes = "L000") -> list[tuple[int, str | bytes]]:
        px = f"{below(rig, 'L000'):.2f}"
        return [(11, cid), (55, symbol), (54, "1"), (38, "10"), (40, "2"), (44, px),
                (60, F.now_utc())]  # fmt: skip

    sent = [
        ("D", order(b"N1\xff\xfe")),  # ClOrdID
        ("D", order("N2", b"L\xff00")),  # Symbol
        ("D", [*order("N3"), (1, b"AC\xe9")]),  # Account, echoed in the answer
        ("F", [(11, b"N4\xff"), (41, "N9"), *order("N4")[1:3], (38, "10"), (60, F.now_utc())]),
        ("D", order("N5")),  # and the session carries on
    ]
    data = b""
    with socket.create_connection(("127.0.0.1", rig.gw_port), timeout=5) as s:
        s.sendall(_raw([*hdr("A", 1), (98, "0"), (108, "5"), (141, "Y")], seq=1))
        time.sleep(0.3)
        for seq, (mtype, body) in enumerate(sent, 2):
            s.sendall(_raw([*hdr(mtype, seq), *body], seq=seq))
        deadline = time.monotonic() + WAIT_S
        while data.count(b"\x0139=") < 5 and time.monotonic() < deadline:
            s.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                data += s.recv(65536)
        # while the session is up: closing it cancels N5 (cancel on disconnect)
        assert [o.clordid for o in rig.venue.working()] == ["N5"]
    answers = [m for m in data.split(b"\x0110=") if b"\x0139=" in m]
    assert len(answers) == 5, data
    for m in answers[:4]:
        assert b"knightwatch:invalid_order tag " in m and b"not UTF-8" in m, m
    assert b"\x0135=9\x01" in answers[3]  # the cancel: an OrderCancelReject
    assert b"\x0139=0\x01" in answers[4]  # the next order is routed
    assert rig.gateway.errors.count == 0
    assert len(rig.events("fix_refused")) == 4


# --- callbacks that raise ----------------------------------------------------------------


def test_a_callback_that_raises_rejects_the_message_and_the_gateway_lives(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("mapping bug")

    monkeypatch.setattr(rig.gateway, "_parse_order", boom)
    rig.oms.new_order("X1", "L000", BUY, 100, 100.0)
    rej = rig.oms.wait_report("X1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:gateway_error ")
    assert "mapping bug" in rig.events("gateway_error")[0]["data"]["error"]
    monkeypatch.undo()
    rest(rig, "X2")
    assert rig.gateway.errors.count == 1


def test_the_metrics_count_an_order_the_venue_session_did_not_take_as_refused(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send to the venue that raised: the order was refused to its client, and the error
    recorded. Before, the gateway's metrics counted it forwarded (never refused), and the
    error, caught on the send rather than in `on_error`, showed as 0 callback errors."""
    real_send = F.send

    def send(msg: Any, sid: Any) -> bool:
        if F.session_key(sid) == rig.gateway.venue_key and F.msg_type(msg) == F.NEW_ORDER:
            raise RuntimeError("engine trouble")
        return real_send(msg, sid)

    before = gateway_snapshot(rig.gateway).counts
    monkeypatch.setattr(F, "send", send)
    rig.oms.new_order("X1", "L000", BUY, 100, below(rig, "L000"))
    rig.oms.wait_report("X1", "8")
    monkeypatch.undo()
    after = gateway_snapshot(rig.gateway).counts
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in ("forwarded", "refused")}
    assert moved == {"forwarded": 0, "refused": 1}
    assert after["callback_errors"] == rig.gateway.errors.count == 1
    rest(rig, "X2")  # counted once sent: the venue's ack may come first
    forwarded = before.get("forwarded", 0) + 1
    eventually(lambda: gateway_snapshot(rig.gateway).counts.get("forwarded") == forwarded)


@pytest.mark.parametrize("fault", ["build", "send"])
def test_an_accepted_order_that_cannot_be_sent_is_released_and_refused(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The Guard accepted the order, then the message for the venue could not be made
    (or the send raised): before, the order stayed counted working in the Guard for ever
    (and with a raising send the client got no answer it could match). Its working
    quantity is released, the client gets a reject, and both are recorded."""

    def boom(*_: Any) -> Any:
        raise RuntimeError("engine trouble")

    real_send = F.send

    def send(msg: Any, sid: Any) -> bool:
        if F.session_key(sid) == rig.gateway.venue_key and F.msg_type(msg) == F.NEW_ORDER:
            raise RuntimeError("engine trouble")
        return real_send(msg, sid)

    if fault == "build":
        monkeypatch.setattr(F, "forward_copy", boom)
    else:
        monkeypatch.setattr(F, "send", send)
    rig.oms.new_order("X1", "L000", BUY, 100, below(rig, "L000"))
    rej = rig.oms.wait_report("X1", "8")
    assert rej.get(F.TEXT).startswith(
        "knightwatch:gateway_error " if fault == "build" else "knightwatch:venue_unavailable "
    )
    assert rig.guard.working_qty("L000") == (0, 0) and rig.guard.remaining("OMS1:X1") is None
    assert [(r["data"]["order_id"], r["data"]["reason"]) for r in rig.events("not_sent")] == [
        ("OMS1:X1", "gateway_error" if fault == "build" else "venue_unavailable")
    ]
    assert rig.gateway.book.live() == [] and rig.venue.stats.orders == 0
    monkeypatch.undo()
    again = rig.oms.order_message("X1", "L000", BUY, 100, below(rig, "L000"))
    again.getHeader().setField(F.POSS_RESEND, "Y")
    rig.oms.send(again)  # a resend is answered with the reject, not the order's status
    eventually(lambda: len([r for r in rig.oms.reports("X1") if r.get(F.EXEC_TYPE) == "8"]) == 2)
    rest(rig, "X2")
    assert rig.guard.working_qty("L000") == (100, 0)


def test_a_replace_or_cancel_the_venue_session_does_not_take_is_answered_and_rolled_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replace the venue session did not take (the send failed): before, its
    reservation stayed in the Guard and the request in flight for ever, and the client
    never had an answer. It rolls back and the client gets an OrderCancelReject; a
    cancel too, and a kill's cancel is sent again by its drain."""
    rest(rig, "G1", qty=100)
    real_send = F.send
    refuse = {F.REPLACE, F.CANCEL}

    def send(msg: Any, sid: Any) -> bool:
        if F.session_key(sid) == rig.gateway.venue_key and F.msg_type(msg) in refuse:
            return False
        return real_send(msg, sid)

    monkeypatch.setattr(F, "send", send)
    rig.oms.replace("G2", "G1", "L000", BUY, 300, below(rig, "L000"))
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G2")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2" and rej.get(F.ORIG_CL_ORD_ID) == "G1"
    assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    assert rig.guard.working_qty("L000") == (100, 0) and not rig.gateway.book.requests
    rig.oms.cancel("G1x", "G1", "L000", BUY, 100)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G1x")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "1"
    rig.gateway.cancel_scope(Scope.STRATEGY, "OMS1", "drill")  # one cancel per order
    assert rig.gateway.book.live()[0].cancel_sent is None  # not in flight: sent again
    assert len(rig.events("not_sent")) == 3
    monkeypatch.undo()
    rig.gateway.retry_cancels(Scope.STRATEGY, "OMS1")
    assert rig.oms.wait_report("G1", "4").get(F.TEXT) == "knightwatch kill: drill"
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="cancelled")


# --- cancels and replaces ----------------------------------------------------------------


def test_cancel_is_forwarded_in_every_state(rig: Rig) -> None:
    rest(rig, "C1")
    rig.guard.halt(Scope.FLEET, "fleet", "drill", "ops")
    rig.oms.cancel("C1x", "C1", "L000", BUY, 100)
    done = rig.oms.wait_report("C1x", "4")
    assert done.get(F.ORIG_CL_ORD_ID) == "C1"
    assert rig.guard.working_qty("L000") == (0, 0)
    rig.oms.cancel("C9x", "NOPE", "L000", BUY, 100)  # unknown: the venue decides
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "C9x")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "1"


def test_replace_reserves_the_larger_leaves_then_commits(rig: Rig) -> None:
    rest(rig, "G1", qty=100)
    px = below(rig, "L000")
    with rig.venue.lock:  # hold the venue: the replace is in flight
        rig.oms.replace("G2", "G1", "L000", BUY, 300, px)
        eventually(lambda: rig.guard.working_qty("L000") == (300, 0), what="reservation")
    done = rig.oms.wait_report("G2", "5")
    assert done.get(F.ORIG_CL_ORD_ID) == "G1" and done.get(F.LEAVES_QTY) == "300"
    assert rig.guard.working_qty("L000") == (300, 0)
    assert rig.guard.remaining("OMS1:G2") == 300


def test_a_cancel_naming_the_id_before_a_replace_ends_the_order(rig: Rig) -> None:
    """An OMS that has not seen the replace's answer cancels under the ClOrdID it knows
    (FIX: the previous non-rejected one); the venue resolves it to the order. The Guard
    lets go of the order's working quantity and the client gets its cancel (before, the
    answer was an unknown report: the order stayed counted working and the client's
    cancel was never answered)."""
    rest(rig, "H1", qty=100)
    px = below(rig, "L000")
    rig.oms.replace("H2", "H1", "L000", BUY, 200, px)
    rig.oms.wait_report("H2", "5")
    assert rig.guard.working_qty("L000") == (200, 0)
    rig.oms.cancel("H3", "H1", "L000", BUY, 200)
    done = rig.oms.wait_report("H3", "4")
    assert done.get(F.ORIG_CL_ORD_ID) == "H1"
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="released")
    assert rig.guard.remaining("OMS1:H2") is None
    assert rig.gateway.book.find("H1") is rig.gateway.book.find("H2")


def test_an_order_the_venue_ends_under_a_replaces_clordid_releases_the_reservation(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue ends the order (cancelled, expired) in its answer to a replace, under the
    replace's ClOrdID: before, the replace was forgotten without being rolled back, so the
    Guard held its reservation (200 more) for ever, counted working though nothing was."""
    rest(rig, "G1", qty=100)
    venue = rig.venue

    def end_it(msg: F.In, sid: Any, key: str) -> None:
        o = venue.orders[(key, msg[F.ORIG_CL_ORD_ID])]
        o.status = "4"
        venue._report(o, "4", clordid=msg[F.CL_ORD_ID], orig=msg[F.ORIG_CL_ORD_ID])

    monkeypatch.setattr(venue, "_replace", end_it)
    rig.oms.replace("G2", "G1", "L000", BUY, 300, below(rig, "L000"))
    rig.oms.wait_report("G2", "4")
    assert rig.guard.remaining("OMS1:G1") is None and rig.guard.remaining("OMS1:G2") is None
    assert rig.guard.working_qty("L000") == (0, 0)
    assert rig.gateway.book.requests == {} and not rig.guard.halts()


def hold_replaces(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[tuple[F.In, Any]]:
    """The venue takes replaces and answers none of them (yet): each is kept with its session."""
    held: list[tuple[F.In, Any]] = []
    monkeypatch.setattr(rig.venue, "_replace", lambda msg, sid, key: held.append((msg, sid)))
    return held


@pytest.mark.parametrize("late", ["reject", "replaced", "none"])
def test_an_order_the_venue_cancels_on_its_own_while_a_replace_is_in_flight_frees_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, late: str
) -> None:
    """The venue cancels order G1 on its own (150=4 under G1) while the client's replace
    G2 (up to 300) is in flight. Before, the replace's reservation (200 more) stayed held
    in the Guard until the venue answered the replace, and for ever if it never did.
    It is given back when the order ends; the venue's late answer still reaches the
    client if it refuses the replace, and one saying it replaced the finished order is
    never applied (recorded `venue_report_unapplied`, the node halts, nothing relayed)."""
    rest(rig, "G1", qty=100)
    held = hold_replaces(rig, monkeypatch)
    rig.oms.replace("G2", "G1", "L000", BUY, 300, below(rig, "L000"))
    eventually(lambda: held, what="replace reached the venue")
    assert rig.guard.working_qty("L000") == (300, 0)
    order_id = rig.venue.find("G1").order_id
    rig.venue.misreport("G1", "4", [(F.EXEC_ID, "XC1"), (F.ORD_STATUS, "4"),
                                    (F.LEAVES_QTY, "0")])  # fmt: skip
    rig.oms.wait_report("G1", "4")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="reservation given back")
    assert rig.gateway.book.live() == [] and rig.guard.remaining("OMS1:G1") is None
    _, sid = held[0]
    if late == "reject":
        rig.venue._cancel_reject(sid, "G2", "G1", None, "2", F.CXL_TOO_LATE)
        rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G2")
        assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
        assert rig.guard.halts() == {} and rig.gateway.book.requests == {}
    elif late == "replaced":
        venue_says(rig, [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "G2"), (F.ORIG_CL_ORD_ID, "G1"),
                         (F.EXEC_ID, "XR1"), (F.EXEC_TYPE, "5"), (F.ORD_STATUS, "0"),
                         (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "300"),
                         (F.LEAVES_QTY, "300"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
                         (F.TRANSACT_TIME, F.now_utc())])  # fmt: skip
        eventually(lambda: rig.guard.halts(), what="halt")
        (halt,) = rig.guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH and "OMS1:G1" in halt.reason
        assert [e["data"]["exec_id"] for e in rig.events("venue_report_unapplied")] == ["XR1"]
        assert rig.gateway.book.live() == [] and rig.guard.working_qty("L000") == (0, 0)
        assert rig.guard.remaining("OMS1:G2") is None
    assert not [r for r in rig.oms.received if r.get(F.EXEC_ID) == "XR1"]
    assert rig.guard.working_qty("L000") == (0, 0)


def test_an_order_the_venue_refuses_while_a_replace_is_in_flight_frees_the_replace(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client replaces its order before the venue answered it, and the venue then
    refuses the order (BusinessMessageReject naming its ClOrdID). Before, the order left
    the Guard's working count but the replace's reservation (200 more) stayed held until
    the venue answered the replace, for ever if it never did."""
    orders: list[F.In] = []
    monkeypatch.setattr(rig.venue, "_new", lambda msg, sid, key: orders.append(msg))
    held = hold_replaces(rig, monkeypatch)
    rig.oms.new_order("N1", "L000", BUY, 100, below(rig, "L000"))
    eventually(lambda: orders, what="order reached the venue")
    rig.oms.replace("N2", "N1", "L000", BUY, 300, below(rig, "L000"))
    eventually(lambda: held, what="replace reached the venue")
    assert rig.guard.working_qty("L000") == (300, 0)
    sid = held[0][1]
    refusal = [(F.REF_SEQ_NUM, str(orders[0].seq)), (F.REF_MSG_TYPE, F.NEW_ORDER),
               (F.BUSINESS_REJECT_REF_ID, "N1"), (F.BUSINESS_REJECT_REASON, "0"),
               (F.TEXT, "throttled")]  # fmt: skip
    assert F.send(F.message(F.BUSINESS_REJECT, refusal), sid)
    rig.oms.wait_report("N1", "8")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="reservation given back")
    rig.venue._cancel_reject(sid, "N2", "N1", None, "2", F.CXL_UNKNOWN_ORDER)  # late answer
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "N2")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
    assert rig.guard.working_qty("L000") == (0, 0) and rig.guard.halts() == {}


def test_a_status_request_under_the_clordid_before_a_replace_answers_the_order(
    rig: Rig,
) -> None:
    """An OMS that has not seen the replace's answer asks the status of its order under
    the ClOrdID it knows. Before, the gateway answered "unknown order" (39=8) while the
    order worked at the venue: an OMS could take a live order for dead. The order's
    current status is the answer, under its current ClOrdID, OrigClOrdID the one asked."""
    rest(rig, "Q1", qty=100)
    rig.oms.replace("Q2", "Q1", "L000", BUY, 200, below(rig, "L000"))
    rig.oms.wait_report("Q2", "5")
    rig.oms.send(F.message(F.STATUS_REQUEST, [(F.CL_ORD_ID, "Q1"), (F.SYMBOL, "L000"),
                                               (F.SIDE, BUY)]))  # fmt: skip
    got = rig.oms.wait_for(lambda r: r.get(F.EXEC_TYPE) == "I", what="status")
    assert (got.get(F.CL_ORD_ID), got.get(F.ORIG_CL_ORD_ID)) == ("Q2", "Q1")
    assert (got.get(F.ORD_STATUS), got.get(F.LEAVES_QTY)) == ("0", "200")
    assert got.get(F.TEXT) != "unknown order"


def mass_status(rig: Rig, req: str, fields: list[tuple[int, str]]) -> list[Any]:
    """Send an OrderMassStatusRequest; the answers to it (ExecutionReports naming it, or a
    BusinessMessageReject naming it), once complete."""
    rig.oms.send(F.message(F.MASS_STATUS, [(F.MASS_STATUS_REQ_ID, req), *fields]))

    def answers() -> list[Any]:
        got = [
            r
            for r in rig.oms.received
            if r.get(F.MASS_STATUS_REQ_ID) == req or r.get(F.BUSINESS_REJECT_REF_ID) == req
        ]
        done = any(r.mtype == F.BUSINESS_REJECT or r.get(F.LAST_RPT_REQUESTED) == "Y" for r in got)
        return got if done else []

    result: list[Any] = eventually(answers, what=f"answers to {req}")
    return result


def test_an_order_mass_status_request_honours_its_type(rig: Rig) -> None:
    """MassStatusReqType(585) was ignored: a client asking for one instrument's orders got
    every working order of its session. 7 is every order of the session, 1 one
    instrument; any other type (or 1 naming no instrument) is refused with a
    BusinessMessageReject naming 585 (or the missing tag), never an answer of all."""
    rest(rig, "M1", symbol="L000")
    rest(rig, "M2", symbol="L001")
    every = mass_status(rig, "S7", [(F.MASS_STATUS_REQ_TYPE, "7")])
    assert sorted(r.get(F.CL_ORD_ID) for r in every) == ["M1", "M2"]
    one = mass_status(rig, "S1", [(F.MASS_STATUS_REQ_TYPE, "1"), (F.SYMBOL, "L001")])
    assert [(r.get(F.CL_ORD_ID), r.get(F.TOT_NUM_REPORTS)) for r in one] == [("M2", "1")]
    none = mass_status(rig, "S0", [(F.MASS_STATUS_REQ_TYPE, "1"), (F.SYMBOL, "M000")])
    assert [r.get(F.TOT_NUM_REPORTS) for r in none] == ["0"]
    for req, fields, text in (
        ("S3", [(F.MASS_STATUS_REQ_TYPE, "3")], "MassStatusReqType(585) 3 is not supported"),
        ("S5", [(F.MASS_STATUS_REQ_TYPE, "5")], "MassStatusReqType(585) 5 is not supported"),
        ("S1x", [(F.MASS_STATUS_REQ_TYPE, "1")], "Symbol(55) is required with MassStatusReq"),
    ):
        (rej,) = mass_status(rig, req, fields)
        assert rej.mtype == F.BUSINESS_REJECT and rej.get(F.REF_MSG_TYPE) == F.MASS_STATUS
        assert rej.get(F.TEXT).startswith(f"knightwatch:invalid_order {text}")


def test_replace_down_keeps_the_old_leaves_reserved_until_the_venue_answers(rig: Rig) -> None:
    rest(rig, "G3", qty=400)
    with rig.venue.lock:
        rig.oms.replace("G4", "G3", "L000", BUY, 100, below(rig, "L000"))
        eventually(lambda: rig.events("replace"), what="replace decided")
        assert rig.guard.working_qty("L000") == (400, 0)
    rig.oms.wait_report("G4", "5")
    assert rig.guard.working_qty("L000") == (100, 0)


def test_replace_refused_by_the_guard_is_an_order_cancel_reject(rig: Rig) -> None:
    rest(rig, "G5", qty=100)
    rig.oms.replace("G6", "G5", "L000", BUY, 9_000, below(rig, "L000"))
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G6")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
    assert rej.get(F.TEXT).startswith("knightwatch:max_order_qty ")
    assert rig.guard.working_qty("L000") == (100, 0)
    assert rig.venue.find("G5") is not None and rig.venue.find("G6") is None


def test_replace_the_venue_refuses_rolls_back(rig: Rig) -> None:
    rest(rig, "G7", qty=100)
    with rig.venue.lock:
        rig.oms.replace("G8", "G7", "L000", BUY, 500, below(rig, "L000"))
        eventually(lambda: rig.guard.working_qty("L000") == (500, 0))
        rig.venue.execute("G7", 100, 99.0)  # filled before the venue reads the replace
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G8")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
    assert rig.guard.working_qty("L000") == (0, 0)
    assert rig.guard.position("L000") == 100


def test_a_security_id_is_refused_when_the_guard_checks_the_symbol(rig: Rig) -> None:
    """With `instrument = "symbol"` the Guard checks Symbol(55); a SecurityID(48) on the
    order went to the venue unchecked, which may trade that instrument instead (before,
    the order was forwarded as it came). Refused `invalid_order`, a replace too."""
    isin = [(F.SECURITY_ID, "US0000000001"), (F.ID_SOURCE, "4")]
    rig.oms.new_order("I1", "L000", BUY, 100, below(rig, "L000"), extra=isin)
    rej = rig.oms.wait_report("I1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:invalid_order SecurityID(48) cannot be")
    rest(rig, "I2")
    msg = rig.oms.order_message("I3", "L000", BUY, 100, below(rig, "L000"))
    msg.setField(F.ORIG_CL_ORD_ID, "I2")
    msg.getHeader().setField(F.MSG_TYPE, F.REPLACE)
    for tag, value in isin:
        msg.setField(tag, value)
    rig.oms.send(msg)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "I3")
    assert "SecurityID(48)" in rej.get(F.TEXT)
    time.sleep(0.1)
    assert rig.venue.stats.orders == 1 and [o.clordid for o in rig.venue.working()] == ["I2"]
    assert rig.venue.find("I1") is None and rig.venue.find("I3") is None


def venue_asks_resend(rig: Rig, seq: int) -> None:
    """The venue asks the gateway to resend from `seq` (it lost what came after)."""
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.gw_comp)
    assert F.send(F.message("2", [(7, str(seq)), (16, "0")]), sid)


def test_a_replace_the_venue_never_got_is_not_resent_and_the_client_told(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replace the engine would resend late is gap-filled instead (never sent twice,
    never late); its reservation rolls back and the client gets an OrderCancelReject
    (before, the client was never answered: its replace stayed pending for ever)."""
    rest(rig, "G1", qty=100)
    lost: list[int] = []
    monkeypatch.setattr(rig.venue, "_replace", lambda msg, sid, key: lost.append(msg.seq))
    rig.oms.replace("G2", "G1", "L000", BUY, 300, below(rig, "L000"))
    eventually(lambda: lost, what="replace reached the venue")
    assert rig.guard.working_qty("L000") == (300, 0)  # reserved while in flight
    venue_asks_resend(rig, lost[0])
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "G2")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2" and rej.get(F.ORIG_CL_ORD_ID) == "G1"
    assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    assert rig.guard.working_qty("L000") == (100, 0)
    assert len(lost) == 1 and rig.events("not_resent")
    rig.oms.cancel("G1x", "G1", "L000", BUY, 100)  # the order works on under G1
    rig.oms.wait_report("G1x", "4")


def test_a_replace_the_venue_refuses_by_execution_report_leaves_the_order_working(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some venues refuse a replace with an ExecutionReport 150=8 under the replace's
    ClOrdID, not an OrderCancelReject. The order works on at the venue, so it stays
    working in the Guard at its old quantity (before, the Guard ended the order, as if
    the venue had rejected it: an order working at the venue that no limit counted)."""
    rest(rig, "G1", qty=100)

    def refuse(msg: F.In, sid: Any, key: str) -> None:
        o = rig.venue.find(msg[F.ORIG_CL_ORD_ID])
        assert o is not None
        er = F.message(
            F.EXECUTION_REPORT,
            [(F.ORDER_ID, o.order_id), (F.CL_ORD_ID, msg[F.CL_ORD_ID]),
             (F.ORIG_CL_ORD_ID, msg[F.ORIG_CL_ORD_ID]), (F.EXEC_ID, "RJ1"),
             (F.EXEC_TYPE, "8"), (F.ORD_STATUS, "0"), (F.SYMBOL, "L000"), (F.SIDE, BUY),
             (F.ORDER_QTY, "300"), (F.LEAVES_QTY, "0"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
             (F.TEXT, "replace refused"), (F.TRANSACT_TIME, F.now_utc())],
        )  # fmt: skip
        F.send(er, sid)

    monkeypatch.setattr(rig.venue, "_replace", refuse)
    rig.oms.replace("G2", "G1", "L000", BUY, 300, below(rig, "L000"))
    assert rig.oms.wait_report("G2", "8").get(F.TEXT) == "replace refused"
    eventually(lambda: rig.guard.working_qty("L000") == (100, 0), what="reservation back")
    assert rig.guard.remaining("OMS1:G1") == 100
    assert [o.clordid for o in rig.gateway.book.live()] == ["G1"]
    rig.gateway.cancel_scope(Scope.FLEET, "fleet", "drill")  # a kill still finds it
    rig.oms.wait_report("G1", "4")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="cancelled")
    assert rig.guard.halts() == {}


def with_v1_resting(rig_factory: Callable[..., Rig]) -> tuple[Rig, FixClient, FixClient]:
    """Two clients on one gateway (OMS1, OMS2), with OMS2's order V1 resting at the venue."""
    rig = rig_factory(clients=("OMS1", "OMS2")).start().ready()
    a, b = rig.clients["OMS1"], rig.clients["OMS2"]
    b.new_order("V1", "L000", BUY, 100, below(rig, "L000"))
    b.wait_report("V1", "0")
    return rig, a, b


def refuse_cancel_by_report(exec_id: str) -> Callable[[F.In, Any, str], None]:
    """A venue `_cancel` that refuses every cancel by ExecutionReport 150=8 ("unknown
    order") under the cancel's ClOrdID, not by OrderCancelReject."""

    def refuse(msg: F.In, sid: Any, key: str) -> None:
        er = F.message(
            F.EXECUTION_REPORT,
            [(F.ORDER_ID, "NONE"), (F.CL_ORD_ID, msg[F.CL_ORD_ID]),
             (F.ORIG_CL_ORD_ID, msg[F.ORIG_CL_ORD_ID]), (F.EXEC_ID, exec_id),
             (F.EXEC_TYPE, "8"), (F.ORD_STATUS, "8"), (F.SYMBOL, "L000"), (F.SIDE, BUY),
             (F.ORDER_QTY, "100"), (F.LEAVES_QTY, "0"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
             (F.TEXT, "unknown order"), (F.TRANSACT_TIME, F.now_utc())],
        )  # fmt: skip
        F.send(er, sid)

    return refuse


def test_a_cancel_of_an_order_not_yet_known_refused_by_execution_report_leaves_it_working(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel naming an order the gateway did not hold yet (sent before the order) is
    forwarded; the venue refuses it with an ExecutionReport 150=8 under the cancel's
    ClOrdID, naming the order (now routed) as OrigClOrdID. Before, that refusal of the
    cancel was taken for the order's own reject: the Guard ended an order working at
    the venue (no limit counted it). The cancel is refused, the order works on."""

    monkeypatch.setattr(rig.venue, "_cancel", refuse_cancel_by_report("RJC1"))
    px = below(rig, "L000")
    with rig.venue.lock:  # the venue reads both once the gateway has forwarded both
        rig.oms.cancel("C1", "A", "L000", BUY, 100)
        rig.oms.new_order("A", "L000", BUY, 100, px)
        eventually(lambda: rig.guard.remaining("OMS1:A") == 100, what="A accepted")
    assert rig.oms.wait_report("C1", "8").get(F.TEXT) == "unknown order"
    rig.oms.wait_report("A", "0")
    assert rig.guard.remaining("OMS1:A") == 100 and rig.guard.working_qty("L000") == (100, 0)
    rig.venue.execute("A", 100, px)
    rig.oms.wait_report("A", "F")
    assert rig.guard.position("L000") == 100 and not rig.guard.halts()


def test_a_cancel_of_an_unknown_order_refused_by_execution_report_is_answered(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel of an order the gateway does not hold goes to the venue, which decides;
    one that refuses it by ExecutionReport 150=8 under the cancel's ClOrdID (not an
    OrderCancelReject) answers the client's request: the client gets it, and the cancel
    is no longer in flight. Before, it was recorded as an unknown report only: the
    client never got an answer and the gateway held its ClOrdID as in flight for good."""

    monkeypatch.setattr(rig.venue, "_cancel", refuse_cancel_by_report("RJU1"))
    rig.oms.cancel("C1", "NOPE", "L000", BUY, 100)
    answer = rig.oms.wait_report("C1", "8")
    assert answer.get(F.ORIG_CL_ORD_ID) == "NOPE" and answer.get(F.TEXT) == "unknown order"
    assert rig.gateway.book.requests == {} and not rig.guard.halts()


def test_a_cancel_of_another_clients_order_is_refused_and_never_reaches_the_venue(
    rig_factory: Callable[..., Rig],
) -> None:
    rig, a, b = with_v1_resting(rig_factory)
    a.cancel("C2", "V1", "L000", BUY, 100)
    rej = a.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "C2")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "1" and rej.get(F.CXL_REJ_REASON) == "1"
    assert rej.get(F.TEXT).startswith(
        "knightwatch:invalid_order OrigClOrdID(41): order V1 is not an order of"
    )
    time.sleep(0.1)
    assert [o.clordid for o in rig.venue.working()] == ["V1"]  # nothing reached the venue
    assert not [r for r in b.received if r.get(F.CL_ORD_ID) == "C2"]
    assert rig.guard.working_qty("L000") == (100, 0)
    b.cancel("V1x", "V1", "L000", BUY, 100)  # its own client still cancels it
    b.wait_report("V1x", "4")


def test_a_cancel_naming_another_clients_order_by_its_previous_clordid_is_refused(
    rig_factory: Callable[..., Rig],
) -> None:
    """After a replace the order answers to its new ClOrdID, but the venue may still
    resolve the old one: that id keeps its owner, and only its owner may cancel by it."""
    rig, a, b = with_v1_resting(rig_factory)
    b.replace("V2", "V1", "L000", BUY, 100, below(rig, "L000", 40))
    b.wait_report("V2", "5")
    a.cancel("C2", "V1", "L000", BUY, 100)
    rej = a.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "C2")
    assert rej.get(F.TEXT).startswith(
        "knightwatch:invalid_order OrigClOrdID(41): order V1 is not an order of"
    )
    time.sleep(0.1)
    assert rig.venue.stats.cancels == 0 and [o.clordid for o in rig.venue.working()] == ["V2"]
    b.cancel("V2x", "V1", "L000", BUY, 100)  # its own client may
    eventually(lambda: rig.venue.stats.cancels == 1, what="forwarded")


def test_a_cancel_is_never_refused_for_its_clordid(rig_factory: Callable[..., Rig]) -> None:
    """The stop direction: a cancel whose ClOrdID names another order (another client's,
    or the order itself), another session's earlier cancel, or another session's refused
    order still cancels. It goes to the venue under the gateway's own id (the venue's
    answer under the client's id would be applied to that other order) and is answered
    under the client's own; the order that id names is untouched."""
    rig, a, b = with_v1_resting(rig_factory)
    b.new_order("B1", "L001", BUY, 100, below(rig, "L001"))  # cancelled by OMS2 as "CX"
    b.wait_report("B1", "0")
    b.cancel("CX", "B1", "L001", BUY, 100)
    b.wait_report("CX", "4")
    b.new_order("BIG", "L000", BUY, 90_000, 100.0)  # refused: it never reached the venue
    b.wait_report("BIG", "8")
    for cid, orig in (("V1", "C2"), ("C3", "C3"), ("CX", "C4"), ("BIG", "C5")):
        rest(rig, orig)
        a.cancel(cid, orig, "L000", BUY, 100)
        done = a.wait_for(
            lambda r, cid=cid: r.get(F.CL_ORD_ID) == cid and r.get(F.EXEC_TYPE) == "4"
        )
        assert done.get(F.ORIG_CL_ORD_ID) == orig
    time.sleep(0.1)
    assert [o.clordid for o in rig.venue.working()] == ["V1"]
    assert [o.clordid for o in rig.gateway.book.live()] == ["V1"]
    assert len(b.reports("V1")) == 1 and rig.guard.working_qty("L000") == (100, 0)
    assert not [r for r in a.received if r.mtype == F.CANCEL_REJECT]
    assert rig.guard.halts() == {}


def test_an_order_or_replace_reusing_the_clordid_of_a_cancel_in_flight_is_a_duplicate(
    rig: Rig,
) -> None:
    """The venue's answer to the cancel would carry that id: applied to the new order (or
    the replaced one), while the cancelled order stayed working in the Guard."""
    oms = rig.oms
    rest(rig, "A")
    rest(rig, "B", symbol="L001")
    with rig.venue.lock:  # hold the venue: the cancel is in flight
        oms.cancel("X", "A", "L000", BUY, 100)
        eventually(lambda: "X" in rig.gateway.book.requests, what="cancel in flight")
        oms.replace("X", "B", "L001", BUY, 100, below(rig, "L001"))
        rej = oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "X")
        assert rej.get(F.TEXT).startswith("knightwatch:duplicate_order_id ")
        oms.new_order("X", "L001", BUY, 100, below(rig, "L001"))
        assert oms.wait_report("X", "8").get(F.TEXT).startswith("knightwatch:duplicate_order_id ")
    done = oms.wait_report("X", "4")
    assert done.get(F.ORIG_CL_ORD_ID) == "A"
    time.sleep(0.1)
    assert [o.clordid for o in rig.venue.working()] == ["B"]
    assert [o.clordid for o in rig.gateway.book.live()] == ["B"]
    assert rig.guard.working_qty("L000") == (0, 0) and rig.guard.working_qty("L001") == (100, 0)
    assert rig.guard.halts() == {}


def test_an_order_or_replace_the_venue_session_rejects_is_answered_and_stops_counting(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venue's session-level Reject (35=3) of an order or replace the gateway forwarded
    names only the MsgSeqNum it came under. The order leaves the Guard's working count
    (the replace's reservation rolls back) and the client gets its ExecutionReport 39=8
    (an OrderCancelReject for the replace); before, the order stayed counted working and
    the client was never answered."""
    real_new, real_replace = rig.venue._new, rig.venue._replace

    def picky(real: Callable[[F.In, Any, str], None]) -> Callable[[F.In, Any, str], None]:
        def handle(msg: F.In, sid: Any, key: str) -> None:
            if msg[F.CL_ORD_ID].startswith("BAD"):
                raise F.fix().IncorrectTagValue(F.ORD_TYPE)  # QuickFIX: a session Reject
            real(msg, sid, key)

        return handle

    monkeypatch.setattr(rig.venue, "_new", picky(real_new))
    monkeypatch.setattr(rig.venue, "_replace", picky(real_replace))
    rig.oms.new_order("BAD1", "L000", BUY, 100, below(rig, "L000"))
    rej = rig.oms.wait_report("BAD1", "8")
    assert rej.get(F.ORD_STATUS) == "8" and rej.get(F.LEAVES_QTY) == "0"
    assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable venue session reject")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="not counted")
    assert rig.guard.remaining("OMS1:BAD1") is None
    assert not rig.gateway.book.live()
    rest(rig, "G1", qty=100)
    rig.oms.replace("BAD2", "G1", "L000", BUY, 400, below(rig, "L000"))
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "BAD2")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2" and rej.get(F.ORIG_CL_ORD_ID) == "G1"
    eventually(lambda: rig.guard.working_qty("L000") == (100, 0), what="reservation back")
    assert [e["data"]["ref_id"] for e in rig.events("venue_session_reject")] == ["BAD1", "BAD2"]
    assert rig.guard.halts() == {}


def throttle_cancels(rig: Rig, monkeypatch: pytest.MonkeyPatch, n: int) -> list[str]:
    """The venue answers its next `n` cancels with a BusinessMessageReject naming their
    ClOrdID (a throttled venue), then cancels as usual; returns the ids it refused."""
    real = rig.venue._cancel
    refused: list[str] = []

    def throttled(msg: F.In, sid: Any, key: str) -> None:
        if len(refused) == n:
            real(msg, sid, key)
            return
        refused.append(msg[F.CL_ORD_ID])
        reject = F.message(
            F.BUSINESS_REJECT,
            [(F.REF_SEQ_NUM, msg[F.MSG_SEQ_NUM]), (F.REF_MSG_TYPE, F.CANCEL),
             (F.BUSINESS_REJECT_REF_ID, msg[F.CL_ORD_ID]), (F.BUSINESS_REJECT_REASON, "0"),
             (F.TEXT, "throttled")],
        )  # fmt: skip
        F.send(reject, sid)

    monkeypatch.setattr(rig.venue, "_cancel", throttled)
    return refused


def test_a_cancel_the_venue_business_rejects_is_answered_and_a_kill_sends_another(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venue that will not take a cancel (throttled) may answer it with a
    BusinessMessageReject naming its ClOrdID. The client's cancel gets its
    OrderCancelReject; the gateway's own (a kill's) is sent again by the drain (before,
    the client's cancel was never answered and the kill's order stayed working: its
    cancel counted as in flight forever, so the drain never sent another)."""
    rest(rig, "A")
    rest(rig, "B", symbol="L001")
    refused = throttle_cancels(rig, monkeypatch, 2)
    rig.oms.cancel("Ax", "A", "L000", BUY, 100)
    rej = rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == "Ax")
    assert rej.get(F.CXL_REJ_RESPONSE_TO) == "1" and "throttled" in rej.get(F.TEXT)
    assert rej.get(F.ORIG_CL_ORD_ID) == "A" and rej.get(F.ORD_STATUS) == "0"
    rig.guard.halt(Scope.STRATEGY, "OMS1", "runaway", "ops")
    rig.gateway.cancel_scope(Scope.STRATEGY, "OMS1", "runaway")  # one cancel per order

    def drained() -> bool:
        rig.gateway.retry_cancels(Scope.STRATEGY, "OMS1")  # what the kill's drain does
        return not rig.gateway.still_working(Scope.STRATEGY, "OMS1")

    eventually(drained, what="every order cancelled")
    assert len(refused) == 2 and rig.venue.working() == []
    assert rig.guard.working_qty("L000") == (0, 0) == rig.guard.working_qty("L001")
    assert rig.events("own_cancel_rejected")


def test_a_clients_own_cancel_is_answered_under_its_clordid_after_a_gateway_cancel_failed(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's mass cancel becomes the gateway's own cancel, which the venue refuses;
    the client then cancels the order itself: that cancel is answered under its own
    ClOrdID (before, the answer was shown as the mass cancel's, under the order's
    ClOrdID, and the client's cancel was never answered)."""
    rest(rig, "A")
    refused = throttle_cancels(rig, monkeypatch, 1)
    rig.oms.mass_cancel("MC")
    assert rig.oms.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT).get(F.TOTAL_AFFECTED) == "1"
    eventually(lambda: rig.events("own_cancel_rejected"), what="the gateway's cancel refused")
    rig.oms.cancel("Ax", "A", "L000", BUY, 100)
    done = rig.oms.wait_report("Ax", "4")
    assert done.get(F.ORIG_CL_ORD_ID) == "A" and "mass cancel" not in done.get(F.TEXT)
    assert len(refused) == 1 and rig.venue.working() == []
    assert not [r for r in rig.oms.reports("A") if r.get(F.EXEC_TYPE) == "4"]


def test_a_replace_keeps_the_instrument_and_side_the_guard_checked(rig: Rig) -> None:
    rest(rig, "R1", qty=100)
    px = below(rig, "L000")
    for cid, symbol, side, tag in (
        ("R2", "L001", BUY, "Symbol(55)"),
        ("R3", "L000", SELL, "Side(54)"),
    ):
        rig.oms.replace(cid, "R1", symbol, side, 100, px)
        rej = rig.oms.wait_for(
            lambda r, cid=cid: r.mtype == F.CANCEL_REJECT and r.get(F.CL_ORD_ID) == cid
        )
        assert rej.get(F.CXL_REJ_RESPONSE_TO) == "2"
        assert rej.get(F.TEXT).startswith(f"knightwatch:invalid_order {tag}: a replace keeps")
    time.sleep(0.1)
    assert rig.venue.find("R2") is None and rig.venue.find("R3") is None
    assert rig.guard.working_qty("L000") == (100, 0)


def test_a_message_no_order_needs_the_size_of_is_refused(rig: Rig) -> None:
    rig.oms.new_order("Z1", "L000", BUY, 10, 100.0, extra=[(F.TEXT, "x" * 20_000)])
    rej = rig.oms.wait_report("Z1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:invalid_order message of ")
    assert "> 16,384" in rej.get(F.TEXT)
    time.sleep(0.05)
    assert rig.venue.stats.orders == 0
    rest(rig, "Z2")  # an order of the usual size still goes


def test_a_cash_sized_order_is_refused(rig: Rig) -> None:
    rig.oms.new_order("K1", "L000", BUY, 1, 100.0, extra=[(F.CASH_ORDER_QTY, "100000000")])
    rej = rig.oms.wait_report("K1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:invalid_order CashOrderQty(152)")
    time.sleep(0.05)
    assert rig.venue.stats.orders == 0


def test_client_mass_cancel_only_touches_that_clients_orders(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(clients=("OMS1", "OMS2")).start().ready()
    a, b = rig.clients["OMS1"], rig.clients["OMS2"]
    for c, ids in ((a, ("Q1", "Q2")), (b, ("Q3",))):
        for cid in ids:
            c.new_order(cid, "L000", BUY, 100, below(rig, "L000"))
            c.wait_report(cid, "0")
    a.mass_cancel("QX")
    report = a.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT)
    assert report.get(F.TOTAL_AFFECTED) == "2"
    for cid in ("Q1", "Q2"):
        assert a.wait_report(cid, "4").get(F.TEXT) == "mass cancel QX"
    assert [o.clordid for o in rig.venue.working()] == ["Q3"]


def test_the_gateways_own_cancel_ids_never_take_a_clients_clordid(rig: Rig) -> None:
    """A client may name an order `KW-<n>`, the form of the gateway's own cancels: the
    gateway's next cancel skips that id, so the venue's answer to it is applied to the
    order it cancelled, not to the client's order of the same name."""
    oms = rig.oms
    rest(rig, "A")
    with rig.guard.lock:
        n = int(rig.gateway.book.next_id("KW-").removeprefix("KW-"))
    mine = [f"KW-{n + 1}", f"KW-{n + 2}"]  # what the gateway's next cancels would be named
    for cid in mine:
        rest(rig, cid, symbol="L001")
    oms.mass_cancel("MC", "L000")  # one cancel, the gateway's own, for A
    assert oms.wait_report("A", "4").get(F.TEXT) == "mass cancel MC"
    time.sleep(0.1)
    assert sorted(o.clordid for o in rig.venue.working()) == mine
    assert sorted(o.clordid for o in rig.gateway.book.live()) == mine
    assert rig.guard.working_qty("L000") == (0, 0) and rig.guard.working_qty("L001") == (200, 0)
    assert not [r for r in oms.reports(mine[0]) if r.get(F.EXEC_TYPE) == "4"]


def test_a_mass_cancel_by_an_instrument_it_does_not_name_is_refused_not_reported_done(
    rig: Rig,
) -> None:
    """A mass cancel by instrument (530=1) that names no Symbol (the instrument the
    gateway keys orders by; here a SecurityID only) found no order and was reported as
    done, 0 affected: the client believed its orders cancelled while they worked on. It
    is answered MassCancelResponse 0 naming the missing tag."""
    rest(rig, "A")
    msg = F.message(
        F.MASS_CANCEL,
        [(F.CL_ORD_ID, "MQ"), (F.MASS_CANCEL_REQUEST_TYPE, "1"),
         (F.SECURITY_ID, "US0000000001"), (F.ID_SOURCE, "4"), (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip
    rig.oms.send(msg)
    got = rig.oms.wait_for(lambda r: r.mtype == F.MASS_CANCEL_REPORT)
    assert got.get(F.MASS_CANCEL_RESPONSE) == "0"
    assert (
        got.get(F.TEXT)
        == "knightwatch:invalid_order Symbol(55) is required to cancel by instrument"
    )
    assert [o.clordid for o in rig.venue.working()] == ["A"]


# --- each ExecType -------------------------------------------------------------------------


def test_venue_reject_and_expiry_free_the_order_without_counting_a_cancel(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(venue={"reject_symbols": frozenset({"M000"})}).start().ready()
    rig.oms.new_order("V1", "M000", BUY, 100, 40.0)
    assert rig.oms.wait_report("V1", "8").get(F.TEXT).startswith("unknown symbol")
    rig.oms.new_order("V2", "L000", BUY, 100, below(rig, "L000"), tif="3")  # IOC: expires
    rig.oms.wait_report("V2", "C")
    rest(rig, "V3")
    rig.venue.expire("V3")
    rig.oms.wait_report("V3", "C")
    rest(rig, "V4")
    assert rig.venue.end_of_day() == 1
    rig.oms.wait_report("V4", "3")
    assert rig.guard.working_qty("L000") == (0, 0)
    assert rig.guard.working_qty("M000") == (0, 0)
    with rig.guard.lock:
        assert rig.guard._ledger.cancels == 0
    kinds = [r["kind"] for r in rig.records()]
    assert kinds.count("reject") == 1 and kinds.count("expire") == 3


@pytest.mark.parametrize("begin", ["FIX.4.4", "FIX.4.2"])
def test_partial_fills_restate_bust_and_correct(
    rig_factory: Callable[..., Rig], begin: str
) -> None:
    fix42 = begin == "FIX.4.2"  # fills are ExecType 1/2, busts and corrections ExecTransType
    rig = rig_factory(begin=begin, venue={"clip": 100}).start().ready()
    oms = rig.oms

    def is_fill(r: Received) -> bool:
        if fix42:
            return r.get(F.EXEC_TYPE) in ("1", "2") and r.get(F.EXEC_TRANS_TYPE) == "0"
        return r.get(F.EXEC_TYPE) == "F"

    def correction(kind44: str, trans42: str) -> Received:
        def match(r: Received) -> bool:
            if r.get(F.CL_ORD_ID) != "P1":
                return False
            return r.get(F.EXEC_TRANS_TYPE) == trans42 if fix42 else r.get(F.EXEC_TYPE) == kind44

        return oms.wait_for(match)

    oms.new_order("P1", "L000", BUY, 250, 101.0)
    eventually(lambda: len([r for r in oms.reports("P1") if is_fill(r)]) == 3)
    fills = [r for r in oms.reports("P1") if is_fill(r)]
    assert [r.get(F.ORD_STATUS) for r in fills] == ["1", "1", "2"]
    assert rig.guard.position("L000") == 250
    rig.venue.bust(fills[0].get(F.EXEC_ID))
    correction("H", "1")
    assert rig.guard.position("L000") == 150
    rig.venue.correct(fills[1].get(F.EXEC_ID), 60, 100.5)
    correction("G", "2")
    assert rig.guard.position("L000") == 110
    rest(rig, "P2", qty=300)
    rig.venue.restate("P2", 120)
    assert oms.wait_report("P2", "D").get(F.LEAVES_QTY) == "120"
    assert rig.guard.working_qty("L000") == (120, 0)
    assert rig.guard.halts() == {}


def test_a_correction_is_checked_as_a_fill_is(rig: Rig) -> None:
    """A correction of a working order's fill: its working quantity follows the venue's
    LeavesQty. One that leaves an order filled beyond its quantity (complete, so out of
    the Guard's working list) halts the node with fill_mismatch, as an overfill does."""
    rest(rig, "C1", qty=100)
    exec_id = rig.venue.execute("C1", 10, 99.0)
    rig.oms.wait_report("C1", "F")
    rig.venue.correct(exec_id, 60, 99.0)
    corrected = rig.oms.wait_report("C1", "G")
    assert rig.guard.remaining("OMS1:C1") == int(corrected.get(F.LEAVES_QTY)) == 40
    assert rig.guard.position("L000") == 60 and rig.guard.halts() == {}
    rest(rig, "C2", qty=100)
    exec_id = rig.venue.execute("C2", 100, 99.0)
    rig.oms.wait_report("C2", "F")
    rig.venue.correct(exec_id, 250, 99.0)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "filled 250 of 100" in halt.reason


def test_a_bust_that_reopens_an_order_restores_its_working_quantity(rig: Rig) -> None:
    """A bust's report carries the venue's LeavesQty: a working order's quantity follows it
    (before, it stayed short, and the venue's later fill of the reopened quantity halted
    the node as an overfill); a finished order reopened at the venue halts the node."""
    rest(rig, "B1", qty=100)
    exec_id = rig.venue.execute("B1", 10, 99.0)
    rig.oms.wait_report("B1", "F")
    rig.venue.bust(exec_id)
    busted = rig.oms.wait_report("B1", "H")
    assert rig.guard.remaining("OMS1:B1") == int(busted.get(F.LEAVES_QTY)) == 100
    rig.venue.execute("B1", 100, 99.0)
    rig.oms.wait_for(lambda r: r.get(F.CL_ORD_ID) == "B1" and r.get(F.ORD_STATUS) == "2")
    assert rig.guard.position("L000") == 100 and rig.guard.halts() == {}


def test_a_finished_order_a_bust_reopens_is_cancelled_at_the_venue(rig: Rig) -> None:
    """The Guard cannot count a finished order working again, and nothing may work at the
    venue that it does not count: the gateway cancels the reopened order and tells the
    client why (before, it was only noted and worked on, uncounted)."""
    rest(rig, "B2", qty=100)
    exec_id = rig.venue.execute("B2", 100, 99.0)
    rig.oms.wait_report("B2", "F")
    assert rig.guard.remaining("OMS1:B2") is None and rig.guard.position("L000") == 100
    rig.venue.bust(exec_id)
    rig.oms.wait_report("B2", "H")
    done = rig.oms.wait_report("B2", "4")
    assert "reopened by a trade bust" in (done.get(F.TEXT) or "")
    assert not [o for o in rig.venue.working() if o.clordid == "B2"]
    assert rig.guard.position("L000") == 0 and rig.guard.working_qty("L000") == (0, 0)
    assert rig.events("bust_reopened") and rig.guard.halts() == {}


def test_duplicate_exec_ids_are_applied_once(rig: Rig) -> None:
    rest(rig, "E1", qty=200)
    exec_id = rig.venue.execute("E1", 100, 99.5)
    rig.oms.wait_report("E1", "F")
    rig.venue.misreport("E1", "F", [(F.EXEC_ID, exec_id), (F.LAST_QTY, "100"), (F.LAST_PX, "99.5")])
    eventually(lambda: rig.events("duplicate_exec"))
    assert rig.guard.position("L000") == 100
    assert len([r for r in rig.oms.reports("E1") if r.get(F.EXEC_TYPE) == "F"]) == 1


def test_fill_for_an_unknown_order_halts_with_fill_mismatch(rig: Rig) -> None:
    rig.venue.stray_fill(rig.gw_comp, "GHOST", "L000", BUY, 100)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "GHOST" in halt.reason
    rig.oms.new_order("H1", "L000", BUY, 100, 101.0)
    assert rig.oms.wait_report("H1", "8").get(F.TEXT).startswith("knightwatch:fill_mismatch ")


def venue_says(rig: Rig, fields: list[tuple[int, str]]) -> None:
    """An ExecutionReport from the venue's own session to the gateway, fields as given (a
    venue that leaves out what FIX does not require)."""
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.gw_comp)
    assert F.send(F.message(F.EXECUTION_REPORT, fields), sid)


def test_a_venue_fill_missing_a_field_halts_and_its_complete_resend_is_applied(rig: Rig) -> None:
    """Nothing of it is applied, the node halts (a fill lost would leave the Guard wrong),
    and its ExecID is not taken as seen: the venue's complete report is applied once."""
    rest(rig, "A")
    order_id = rig.venue.find("A").order_id
    fill = [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "A"), (F.EXEC_ID, "EXM1"), (F.EXEC_TYPE, "F"),
            (F.ORD_STATUS, "1"), (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "100"),
            (F.LEAVES_QTY, "90"), (F.CUM_QTY, "10"), (F.AVG_PX, "99"), (F.LAST_QTY, "10"),
            (F.LAST_PX, "99"), (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    venue_says(rig, [(t, v) for t, v in fill if t != F.LAST_PX])
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and f"tag {F.LAST_PX} missing" in halt.reason
    venue_says(rig, [(t, v) for t, v in fill if t != F.CL_ORD_ID])  # OrderID only
    eventually(lambda: len(rig.events("venue_report_unapplied")) == 2, what="both recorded")
    assert rig.guard.position("L000") == 0 and rig.guard.remaining("OMS1:A") == 100
    assert rig.gateway.errors.count == 0
    venue_says(rig, fill)  # the complete report, same ExecID
    eventually(lambda: rig.guard.position("L000") == 10, what="fill applied")
    assert rig.guard.remaining("OMS1:A") == 90 and not rig.events("duplicate_exec")


@pytest.mark.parametrize(("exec_type", "status"), [("9", "9"), ("0", "7"), ("B", "B")])
def test_a_report_the_gateway_has_no_meaning_for_halts_and_a_kill_still_cancels_the_order(
    rig: Rig, exec_type: str, status: str
) -> None:
    """A venue reports an order suspended (ExecType 9), stopped (OrdStatus 7) or calculated
    (ExecType B): nothing the gateway can apply exactly. It is recorded, not relayed, the
    node halts, and the order stays working to the gateway, so a kill cancels it. Before,
    it was relayed and its OrdStatus taken: a suspended order left the working index (a
    kill skipped it and counted the drain done) while the Guard counted it working."""
    rest(rig, "S1", qty=100)
    rig.venue.misreport("S1", exec_type, [(F.ORD_STATUS, status), (F.EXEC_ID, "XS1")])
    eventually(lambda: rig.guard.halts(), what="halt")
    halt = rig.guard.halts()[(Scope.NODE, "gw")]
    assert halt.code is RejectReason.FILL_MISMATCH
    assert f"ExecType(150)={exec_type} with OrdStatus(39)={status} for OMS1:S1" in halt.reason
    assert [e["data"]["exec_id"] for e in rig.events("venue_report_unapplied")] == ["XS1"]
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == ["OMS1:S1"]
    assert rig.gateway.cancel_scope(Scope.SYMBOL, "L000", "x") == ["OMS1:S1"]
    rig.oms.wait_report("S1", "4")
    assert [r.get(F.EXEC_TYPE) for r in rig.oms.reports("S1")] == ["0", "4"]
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="drained")
    assert rig.guard.working_qty("L000") == (0, 0) and not rig.venue.working()


@pytest.mark.parametrize(
    ("exec_type", "status"), [("6", "4"), ("0", "2"), ("4", "0"), ("C", "1"), ("8", "0")]
)
def test_a_report_whose_exec_type_and_ord_status_disagree_halts_and_is_not_applied(
    rig: Rig, exec_type: str, status: str
) -> None:
    """A pending or new report saying the order is finished, or a cancel, expiry or
    reject saying it still works. Before, the first took the order out of the gateway's
    working index while the Guard counted it (a kill skipped it, its drain counted it
    done), the second ended it in the Guard while the book kept it working (an order at
    the venue no limit counted). Neither is applied or relayed: recorded, the node
    halts, the order stays counted and working, and a kill cancels it."""
    rest(rig, "S1", qty=100)
    rig.venue.misreport("S1", exec_type, [(F.ORD_STATUS, status), (F.EXEC_ID, "XS1")])
    rig.venue.misreport("S1", "0", [(F.EXEC_ID, "MARK")])  # after it on the same session
    rig.oms.wait_for(lambda r: r.get(F.EXEC_ID) == "MARK", what="marker")
    assert not [r for r in rig.oms.received if r.get(F.EXEC_ID) == "XS1"]
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert f"ExecType(150)={exec_type} " in halt.reason and "disagree" in halt.reason
    assert [e["data"]["exec_id"] for e in rig.events("venue_report_unapplied")] == ["XS1"]
    assert rig.guard.remaining("OMS1:S1") == 100
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == ["OMS1:S1"]
    assert rig.gateway.cancel_scope(Scope.SYMBOL, "L000", "x") == ["OMS1:S1"]
    rig.oms.wait_report("S1", "4")
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="drained")
    assert rig.guard.working_qty("L000") == (0, 0) and not rig.venue.working()


def test_a_venue_report_the_fix_engine_refuses_halts(rig: Rig) -> None:
    """A fill without a field the data dictionary requires (LeavesQty) is refused by the
    engine with a session Reject before the gateway sees it, and dropped: before, nothing
    was applied and nothing halted (a fill lost, the Guard's picture wrong). It halts
    `fill_mismatch` and is recorded."""
    rest(rig, "A")
    order_id = rig.venue.find("A").order_id
    venue_says(rig, [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "A"), (F.EXEC_ID, "EXR1"),
                     (F.EXEC_TYPE, "F"), (F.ORD_STATUS, "1"), (F.SYMBOL, "L000"),
                     (F.SIDE, BUY), (F.ORDER_QTY, "100"), (F.CUM_QTY, "10"), (F.AVG_PX, "99"),
                     (F.LAST_QTY, "10"), (F.LAST_PX, "99"),
                     (F.TRANSACT_TIME, F.now_utc())])  # fmt: skip
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert halt.reason.startswith("venue message 8 (MsgSeqNum ")
    assert "the FIX engine refused it (session reject reason 1" in halt.reason
    (note,) = rig.events("venue_report_unapplied")
    assert note["data"]["msg_type"] == "8" and rig.guard.position("L000") == 0


def test_a_fill_of_another_symbol_or_side_than_its_order_halts_with_fill_mismatch(
    rig_factory: Callable[..., Rig],
) -> None:
    """The fill reaches the Guard as the venue reports it, not as the order was sent, so
    the Guard's own check of side and symbol sees the disagreement (and books the fill as
    the venue's truth, as it does any mismatched fill)."""
    for field, value, booked in ((F.SYMBOL, "L001", (0, 10)), (F.SIDE, SELL, (-10, 0))):
        rig = rig_factory().start().ready()
        rest(rig, "A")  # buy 100 L000
        rig.venue.misreport("A", "F", [(F.EXEC_ID, "EXBAD"), (field, value), (F.LAST_QTY, "10"),
                                       (F.LAST_PX, "100"), (F.LEAVES_QTY, "90")])  # fmt: skip
        eventually(lambda rig=rig: rig.guard.halts(), what="halt")
        (halt,) = rig.guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH
        assert (rig.guard.position("L000"), rig.guard.position("L001")) == booked
        rig.stop()


def test_a_replace_under_a_clordid_never_sent_halts_with_fill_mismatch(rig: Rig) -> None:
    """The venue has the order at 4,000 under an id the gateway cannot match to it; the
    Guard still counts 100 working: its picture is wrong until a person reconciles."""
    rest(rig, "A")
    rig.venue.misreport("A", "5", [(F.EXEC_ID, "X5"), (F.CL_ORD_ID, "ZZZ"),
                                   (F.ORDER_QTY, "4000"), (F.LEAVES_QTY, "4000")])  # fmt: skip
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ZZZ" in halt.reason


def test_a_replaced_report_with_no_replace_in_flight_is_recorded_not_relayed_or_applied(
    rig: Rig,
) -> None:
    """The venue reports order A replaced (150=5, 4,000 working) under A's own ClOrdID
    though no replace of it is in flight. Before, the node halted but the report was
    relayed to A's client (told its order now works 4,000) and its status and LeavesQty
    taken into the book. Like any report the gateway cannot apply exactly, it is
    recorded `venue_report_unapplied`, never relayed, and A stays as it was."""
    rest(rig, "A")
    rig.venue.misreport("A", "5", [(F.EXEC_ID, "X5"), (F.ORDER_QTY, "4000"),
                                   (F.LEAVES_QTY, "4000")])  # fmt: skip
    rig.venue.misreport("A", "0", [(F.EXEC_ID, "MARK")])  # after it on the same session
    rig.oms.wait_for(lambda r: r.get(F.EXEC_ID) == "MARK", what="marker")
    assert not [r for r in rig.oms.received if r.get(F.EXEC_ID) == "X5"]
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert "ExecType(150)=5 (replaced) for OMS1:A" in halt.reason
    assert [e["data"]["exec_id"] for e in rig.events("venue_report_unapplied")] == ["X5"]
    go = rig.gateway.book.orders["A"]
    assert (go.status, go.qty, go.leaves) == ("0", 100, 100)
    assert rig.guard.remaining("OMS1:A") == 100


def test_a_fill_under_a_foreign_clordid_naming_an_order_as_orig_halts_and_is_booked_apart(
    rig: Rig,
) -> None:
    """A fill under a ClOrdID the gateway never sent whose OrigClOrdID names its order A
    answers nothing the gateway sent: before, it was applied to A (A's working quantity
    cut, A's client told it filled) without a halt. It is booked as the venue reports it,
    never as A's own, and the node halts `fill_mismatch` naming it."""
    rest(rig, "A")
    rig.venue.misreport("A", "F", [(F.EXEC_ID, "XF1"), (F.CL_ORD_ID, "ZZZ"),
                                   (F.ORIG_CL_ORD_ID, "A"), (F.ORD_STATUS, "1"),
                                   (F.LAST_QTY, "10"), (F.LAST_PX, "99"),
                                   (F.LEAVES_QTY, "90"), (F.CUM_QTY, "10")])  # fmt: skip
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ZZZ" in halt.reason
    assert rig.guard.position("L000") == 10  # the venue says the firm traded
    assert rig.guard.remaining("OMS1:A") == 100  # never taken from A
    assert rig.events("unknown_report")[0]["data"]["clordid"] == "ZZZ"
    assert not [r for r in rig.oms.received if r.get(F.EXEC_TYPE) == "F"]


def test_foreign_cancels_expiries_pending_and_status_are_recorded_never_told_or_applied(
    rig: Rig,
) -> None:
    """Reports under a ClOrdID the gateway never sent naming its order A as OrigClOrdID
    that are no fills: never applied to A (the Guard keeps counting it), never told to
    A's client (a status report was relayed to it, an order it never sent shown as its
    own), the node halts, and the recorder shows each as it came: both ids, the ExecType,
    the venue's OrderID and OrdStatus (before, only the foreign ClOrdID)."""
    rest(rig, "A")
    order_id = rig.venue.find("A").order_id
    sent = [("4", "4"), ("C", "C"), ("6", "6"), ("E", "E"), ("I", "4")]
    for n, (exec_type, status) in enumerate(sent):
        rig.venue.misreport("A", exec_type, [(F.EXEC_ID, f"XN{n}"), (F.CL_ORD_ID, f"ZZ{n}"),
                                             (F.ORIG_CL_ORD_ID, "A"), (F.ORD_STATUS, status),
                                             (F.LEAVES_QTY, "0")])  # fmt: skip
    rig.venue.misreport("A", "0", [(F.EXEC_ID, "MARK")])  # after them on the same session
    rig.oms.wait_for(lambda r: r.get(F.EXEC_ID) == "MARK", what="marker")
    assert not [r for r in rig.oms.received if (r.get(F.CL_ORD_ID) or "").startswith("ZZ")]
    assert [r.get(F.EXEC_TYPE) for r in rig.oms.reports("A")] == ["0", "0"]  # ack, marker
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "names order OMS1:A" in halt.reason
    assert rig.guard.remaining("OMS1:A") == 100 and rig.guard.working_qty("L000") == (100, 0)
    seen = [(e["data"]["clordid"], e["data"]["orig_clordid"], e["data"]["order_id"],
             e["data"]["exec_type"], e["data"]["ord_status"], e["data"]["venue_order_id"])
            for e in rig.events("foreign_report")]  # fmt: skip
    assert seen == [(f"ZZ{n}", "A", "OMS1:A", t, s, order_id) for n, (t, s) in enumerate(sent)]


def test_a_fill_under_a_clordid_from_before_a_replace_is_applied_to_its_order_once(
    rig: Rig,
) -> None:
    """A venue reports a fill under the ClOrdID the order had before its replace, with no
    OrigClOrdID: the book knows that id is the order's, so it is applied to the order
    (position, working quantity, the client told as the venue reports it), once for its
    ExecID. Before, it halted the node as a fill of an unknown order."""
    rest(rig, "P1", qty=100)
    rig.oms.replace("P2", "P1", "L000", BUY, 200, below(rig, "L000"))
    rig.oms.wait_report("P2", "5")
    fill = [(F.EXEC_ID, "XOLD1"), (F.CL_ORD_ID, "P1"), (F.ORD_STATUS, "1"), (F.LAST_QTY, "30"),
            (F.LAST_PX, "99"), (F.LEAVES_QTY, "170"), (F.CUM_QTY, "30")]  # fmt: skip
    rig.venue.misreport("P2", "F", fill)
    rig.venue.misreport("P2", "F", fill)  # sent twice: applied once
    got = rig.oms.wait_for(lambda r: r.get(F.EXEC_ID) == "XOLD1", what="the fill relayed")
    assert got.get(F.CL_ORD_ID) == "P1" and got.get(F.LAST_QTY) == "30"
    eventually(lambda: rig.events("duplicate_exec"), what="the second one dropped")
    assert not rig.guard.halts() and not rig.events("unknown_report")
    assert rig.guard.position("L000") == 30 and rig.guard.remaining("OMS1:P2") == 170
    order = rig.gateway.book.find("P1")
    assert order is not None and order is rig.gateway.book.find("P2") and order.cum == 30


def test_a_mass_cancel_answered_under_its_own_clordid_ends_each_order_it_names(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venue may answer the gateway's mass cancel with one report per order under the
    mass cancel's ClOrdID, naming the order by OrigClOrdID: an answer to what the gateway
    sent, applied to the order (no halt), its client told under the order's ClOrdID."""
    rest(rig, "A")
    rest(rig, "B")
    venue = rig.venue

    def answer(msg: F.In, sid: Any, key: str) -> None:
        for o in venue.working(F.target_of(sid)):
            o.status = "4"
            venue._report(o, "4", clordid=msg[F.CL_ORD_ID], orig=o.clordid)

    monkeypatch.setattr(venue, "_mass_cancel", answer)
    assert sorted(rig.gateway.cancel_scope(Scope.FLEET, "fleet", "drill")) == ["OMS1:A", "OMS1:B"]
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="cancelled")
    for clordid in ("A", "B"):
        report = rig.oms.wait_report(clordid, "4")
        assert report.get(F.TEXT) == "knightwatch kill: drill"
        assert rig.guard.remaining(f"OMS1:{clordid}") is None
    assert not rig.guard.halts() and not rig.events("unknown_report")


def test_an_acknowledgement_whose_leaves_disagree_with_the_guard_halts(rig: Rig) -> None:
    """The venue acknowledges an order of 100 as working 1,000: more works at the venue
    than the Guard checked and counts. Before, the ack was relayed and nothing else
    happened (the LeavesQty was checked only on fills): the order worked uncounted."""
    rest(rig, "N1", qty=100)
    rig.venue.misreport("N1", "0", [(F.LEAVES_QTY, "1000"), (F.ORDER_QTY, "1000")])
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert "LeavesQty 1000 from the venue for OMS1:N1 != 100 in the Guard" in halt.reason


def test_leaves_that_disagree_with_the_guard_halt(rig: Rig) -> None:
    rest(rig, "L1", qty=200)
    rig.venue.misreport("L1", "F", [(F.LAST_QTY, "50"), (F.LAST_PX, "99"), (F.LEAVES_QTY, "10")])
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "LeavesQty 10" in halt.reason


def test_a_snapshot_without_a_usable_price_is_no_reference_and_no_halt(rig: Rig) -> None:
    """A venue's "no bid" sent as 0, or a negative price, is not a reference: the previous
    one stays (before, 0 made the mid half the ask, and every market order's notional
    was checked at half its value; a negative price halted the node as fill_mismatch)."""
    book = rig.venue.books["L000"]
    mid = (book.touch(False) + book.touch(True)) / 2
    with rig.guard.lock:
        assert rig.guard._ledger.books["L000"].ref == pytest.approx(mid)
    with rig.venue.lock:
        rig.venue._md.clear()  # the venue's stream stops: only the snapshots below arrive
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.gw_comp)
    touch = f"{book.touch(True):.2f}"
    for symbol, bid, ask in (("L000", "0", touch), ("L000", "-5", "-4"), ("M001", "41", "41.02")):
        snap = F.message(F.MD_SNAPSHOT, [(F.SYMBOL, symbol), (F.MD_REQ_ID, "md")])
        for entry, px in (("0", bid), ("1", ask)):
            g = F.fix().Group(F.NO_MD_ENTRIES, F.MD_ENTRY_TYPE)
            g.setField(F.MD_ENTRY_TYPE, entry)
            g.setField(F.MD_ENTRY_PX, px)
            snap.addGroup(g)
        assert F.send(snap, sid)
    # one session, handled in order: the last one applied means the first two were handled
    eventually(lambda: rig._has_price("M001"), what="the last snapshot applied")
    with rig.guard.lock:
        assert rig.guard._ledger.books["L000"].ref == pytest.approx(mid)
    assert rig.guard.halts() == {}
    assert [e["data"]["why"] for e in rig.events("venue_price_refused")] == [
        "bid 0",
        "bid -5, ask -4",
    ]
    rest(rig, "A")


# --- sessions ----------------------------------------------------------------------------


def test_venue_session_loss_refuses_new_orders_then_recovers(rig: Rig, tmp_path: Path) -> None:
    rig.venue.stop()
    eventually(lambda: not rig.gateway.venue_up, what="venue down")
    rig.oms.new_order("S1", "L000", BUY, 100, 100.0)
    rej = rig.oms.wait_report("S1", "8")
    assert rej.get(F.TEXT).startswith("knightwatch:venue_unavailable ")
    rig.oms.cancel("S1x", "S0", "L000", BUY, 100)
    rig.oms.wait_for(lambda r: r.mtype == F.CANCEL_REJECT and "venue_unavailable" in r.get(F.TEXT))
    venue = FixVenue(
        tmp_path / "venue2",
        port=rig.venue_port,
        sessions=[rig.gw_comp],
        comp_id=rig.venue_comp,
        store="memory",
        md_interval_s=0.5,
        log_messages=False,
    )
    venue.start()
    rig._started.append(venue)
    eventually(lambda: rig.gateway.venue_up, what="venue back")
    rig.oms.new_order("S2", "L000", BUY, 100, 101.0)
    rig.oms.wait_report("S2", "F")


def test_client_disconnect_cancels_per_policy_and_execinst(rig_factory: Callable[..., Rig]) -> None:
    clients = (ClientSession("OMS1"), ClientSession("OMS2", cancel_on_disconnect=False))
    rig = rig_factory(clients=("OMS1", "OMS2"), config={"clients": clients}).start().ready()
    a, b = rig.clients["OMS1"], rig.clients["OMS2"]
    a.new_order("K1", "L000", BUY, 100, below(rig, "L000"))
    b.new_order("K2", "L000", BUY, 100, below(rig, "L000"))
    b.new_order("K3", "L000", BUY, 100, below(rig, "L000"), extra=[(F.EXEC_INST, "Q")])
    for c, cid in ((a, "K1"), (b, "K2"), (b, "K3")):
        c.wait_report(cid, "0")
    a.stop()
    b.stop()
    eventually(lambda: sorted(o.clordid for o in rig.venue.working()) == ["K2"], what="COD")
    eventually(lambda: rig.guard.working_qty("L000") == (100, 0), what="Guard follows")


def test_cancels_decided_while_the_venue_session_was_down_are_sent_when_it_is_back(
    rig_factory: Callable[..., Rig],
) -> None:
    """A client lost while the venue session is down: its cancel-on-disconnect cannot be
    sent then. It goes out when the venue session is back (before, it was dropped: the
    order worked on at the venue, counted in the Guard, its session gone; a kill
    decided during the outage was lost the same way once its drain gave up)."""
    rig = rig_factory(venue={"cancel_on_disconnect": False}).start().ready()
    rest(rig, "A")
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: venue session down")  # and stays down until logon()
    eventually(lambda: not rig.gateway.venue_up, what="venue session down")
    rig.oms.stop()
    eventually(
        lambda: any(not e["data"]["up"] for e in rig.events("client_session")),
        what="client session lost",
    )
    assert [o.clordid for o in rig.venue.working()] == ["A"]  # nothing could be sent
    session.logon()
    eventually(lambda: rig.gateway.venue_up, what="venue session back")
    eventually(lambda: not rig.venue.working(), what="cancelled at the venue")
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="Guard follows")


@pytest.mark.parametrize("how", ["logon", "sequence_reset"])
def test_a_venue_that_resets_its_sequence_numbers_with_orders_working_halts(
    rig: Rig, how: str
) -> None:
    """The venue session's numbers begin again (a Logon with ResetSeqNumFlag=Y, or a
    SequenceReset that is no gap fill) while an order works: whatever the venue sent in
    between is never resent, a fill of it perhaps. Before, QuickFIX took the reset and the
    gateway said nothing (the Guard counted the order working, its position without the
    fill). The node halts `fill_mismatch` naming the reset, and the order stays counted."""
    rest(rig, "A")
    vsid = F.fix().SessionID(rig.begin, rig.venue_comp, rig.gw_comp)
    session = F.fix().Session.lookupSession(vsid)
    msg = F.fix().Message()
    if how == "logon":
        session.setNextSenderMsgSeqNum(1)  # a reset in session, as FIX 4.4 allows
        msg.getHeader().setField(F.MSG_TYPE, F.LOGON)
        msg.setField(98, "0")
        msg.setField(108, "5")
        msg.setField(F.RESET_SEQ_NUM_FLAG, "Y")
    else:
        ahead = session.getExpectedSenderNum() + 5  # what lies between is skipped
        msg.getHeader().setField(F.MSG_TYPE, F.SEQUENCE_RESET)
        msg.setField(F.NEW_SEQ_NO, str(ahead))
    assert F.send(msg, vsid)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH
    assert "reset its sequence numbers" in halt.reason and "1 order(s) working" in halt.reason
    (note,) = [e["data"] for e in rig.events("venue_sequence_reset")][:1]
    assert note["working"] == 1
    assert rig.guard.remaining("OMS1:A") == 100  # still counted: a kill cancels it


# --- parents: Power Peg over FIX ------------------------------------------------------------


def test_power_peg_over_fix_is_stopped_by_parent_reconciliation(
    rig_factory: Callable[..., Rig],
) -> None:
    limits = Limits(
        **{
            **{f: getattr(LIMITS, f) for f in LIMITS.__struct_fields__},
            "require_registered_parent": True,
        }
    )
    rig = rig_factory(limits=limits).start().ready()
    oms = rig.oms
    tags = [(5001, "PARENT-1"), (5002, "1000")]
    for i in range(15):  # a runaway: a child per quote update, fills never read
        oms.new_order(f"PP{i}", "L000", BUY, 100, 104.0, extra=tags)
    eventually(lambda: all(oms.reports(f"PP{i}") for i in range(15)))
    refused = [r for i in range(15) for r in oms.reports(f"PP{i}") if r.get(F.EXEC_TYPE) == "8"]
    routed = [i for i in range(15) if oms.reports(f"PP{i}")[0].get(F.EXEC_TYPE) == "0"]
    assert routed == list(range(10)) and len(refused) == 5
    assert all(r.get(F.TEXT).startswith("knightwatch:parent_qty_exceeded ") for r in refused)
    assert rig.venue.stats.orders == 10
    oms.new_order("PPx", "L000", BUY, 100, 101.0, extra=[(5001, "NOBODY")])
    assert oms.wait_report("PPx", "8").get(F.TEXT).startswith("knightwatch:unknown_parent ")


# --- reconciliation ----------------------------------------------------------------------


def test_start_up_adopts_orders_working_at_the_venue_before_arming(
    rig_factory: Callable[..., Rig],
) -> None:
    keep = (ClientSession("OMS1", cancel_on_disconnect=False),)
    first = rig_factory(
        venue={"cancel_on_disconnect": False}, config={"store": "file", "clients": keep}
    )
    first.start().ready()
    rest(first, "W1", qty=300)
    first.clients["OMS1"].stop()
    first.gateway.stop()  # a restart: same state directory, persisted sequence numbers
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    second = Gateway(
        first.config,
        guard,
        first.root / "gateway",
        log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )
    assert not guard.armed
    second.start()
    try:
        eventually(lambda: guard.armed, what="armed after reconciliation")
        assert guard.working_qty("L000") == (300, 0)
        assert guard.remaining("reconciled:W1") == 300
        guard.flush_records()
        kinds = [msgspec.json.decode(line)["kind"] for line in first.recorder.lines]
        last = {k: i for i, k in enumerate(kinds)}
        assert last["adopt"] < last["reconciled"] < last["arm"]  # adopted before arming
        second.cancel_scope(Scope.FLEET, "fleet", "flatten")
        eventually(lambda: not first.venue.working(), what="adopted order cancelled")
    finally:
        second.stop()


def mass_status_of(rig: Rig, monkeypatch: pytest.MonkeyPatch, last: list[tuple[int, str]]) -> None:
    """The rig's venue answers the gateway's start-up mass status with two working orders
    of its own, W8 (300 L000 buy at 99) and W9 (the same with `last` over it), W9 last."""
    venue = rig.venue

    def answer(msg: F.In, sid: Any, key: str) -> None:
        req = msg[F.MASS_STATUS_REQ_ID]
        for i, (clordid, fields) in enumerate((("W8", []), ("W9", last)), 1):
            o = VenueOrder(clordid, f"V9{i}", sid, "L000", BUY, Decimal(300), 99.0, "2", "0")
            extra = [(F.MASS_STATUS_REQ_ID, req), (F.TOT_NUM_REPORTS, "2"),
                     (F.LAST_RPT_REQUESTED, "Y" if i == 2 else "N"), *fields]  # fmt: skip
            venue._report(o, "I", extra=extra)

    monkeypatch.setattr(venue, "_mass_status", answer)


@pytest.mark.parametrize(
    ("last", "adopted", "needle"),
    [
        ([(F.PRICE, "-5")], True, "Price(44)=-5 is no usable price; adopted at no price"),
        ([(F.LEAVES_QTY, "0"), (F.CUM_QTY, "0")], False, "working with no quantity: not adopted"),
        ([(F.LEAVES_QTY, "2.5")], False, "LeavesQty(151)/CumQty(14): qty: must be a positive"),
    ],
)
def test_an_unreadable_last_mass_status_report_halts_naming_it_and_reconciliation_finishes(
    rig_factory: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    last: list[tuple[int, str]],
    adopted: bool,
    needle: str,
) -> None:
    """The last report of the venue's mass status the gateway cannot adopt as sent (a
    price that is no price, no quantity) ends start-up reconciliation all the same: the
    node halts naming the report, one it can count is counted (at no price). Before, the
    node halted on it and reconciliation never finished: start-up failed at its timeout
    asking whether the venue session was logging on."""
    rig = rig_factory()
    mass_status_of(rig, monkeypatch, last)
    rig.start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    halt = rig.guard.halts()[(Scope.NODE, "gw")]
    assert halt.code is RejectReason.FILL_MISMATCH
    assert (
        halt.reason.startswith("reconciled order W9 (venue OrderID V92): ")
        and needle in halt.reason
    )
    assert rig.guard.remaining("reconciled:W8") == 300
    assert rig.guard.remaining("reconciled:W9") == (300 if adopted else None)
    assert rig.gateway.reconcile_error == "" and rig.gateway.errors.count == 0


def twins_at_start_up(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> tuple[Rig, dict[str, VenueOrder], list[tuple[str, str]]]:
    """A started rig whose venue's start-up mass status reported two working orders under
    ClOrdID W8 (300 L000 buy each, OrderIDs V81 and V82), both adopted. Its venue finds
    the order a cancel is for by OrderID(37), and with none by the ClOrdID alone (the
    first order under it, as a venue holding two would); it answers a mass cancel with
    one report per order under the mass cancel's ClOrdID, naming W8 as OrigClOrdID.
    Returns the rig, the venue's orders by OrderID and the cancels it took (OrigClOrdID,
    OrderID)."""
    rig = rig_factory()
    venue = rig.venue
    held: dict[str, VenueOrder] = {}
    cancels: list[tuple[str, str]] = []

    def answer(msg: F.In, sid: Any, key: str) -> None:
        req = msg[F.MASS_STATUS_REQ_ID]
        for i in (1, 2):
            o = VenueOrder("W8", f"V8{i}", sid, "L000", BUY, Decimal(300), 99.0, "2", "0")
            held[o.order_id] = o
            extra = [(F.MASS_STATUS_REQ_ID, req), (F.TOT_NUM_REPORTS, "2"),
                     (F.LAST_RPT_REQUESTED, "Y" if i == 2 else "N")]  # fmt: skip
            venue._report(o, "I", extra=extra)

    def cancel(msg: F.In, sid: Any, key: str) -> None:
        named = msg.get(F.ORDER_ID)
        o = held[named] if named in held else held["V81"]
        if o.status not in ("0", "1"):
            venue._cancel_reject(
                sid, msg[F.CL_ORD_ID], msg[F.ORIG_CL_ORD_ID], o, "1", F.CXL_TOO_LATE
            )
            return
        cancels.append((msg[F.ORIG_CL_ORD_ID], o.order_id))
        o.status = "4"
        venue._report(o, "4", clordid=msg[F.CL_ORD_ID], orig=msg[F.ORIG_CL_ORD_ID])

    def mass_cancel(msg: F.In, sid: Any, key: str) -> None:
        for o in held.values():
            if o.status in ("0", "1"):
                cancels.append(("mass", o.order_id))
                o.status = "4"
                venue._report(o, "4", clordid=msg[F.CL_ORD_ID], orig=o.clordid)

    monkeypatch.setattr(venue, "_mass_status", answer)
    monkeypatch.setattr(venue, "_cancel", cancel)
    monkeypatch.setattr(venue, "_mass_cancel", mass_cancel)
    rig.start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    eventually(lambda: rig.guard.armed, what="armed")
    return rig, held, cancels


def test_two_working_orders_under_one_clordid_at_start_up_are_both_counted_and_halt(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venue's start-up mass status reports two working orders under ClOrdID W8
    (OrderIDs V81, V82). Before, the second was skipped: it executed uncounted and no kill
    cancelled it. Now it is adopted under its own Guard id, its fills are its own (told
    apart by OrderID), a kill cancels it (by OrderID) and the node halts naming both."""
    rig, held, cancels = twins_at_start_up(rig_factory, monkeypatch)
    venue = rig.venue
    halt = rig.guard.halts()[(Scope.NODE, "gw")]
    assert halt.code is RejectReason.FILL_MISMATCH
    assert "two working orders" in halt.reason and "V81" in halt.reason and "V82" in halt.reason
    assert rig.guard.working_qty("L000") == (600, 0)
    assert rig.guard.remaining("reconciled:W8") == 300
    assert rig.guard.remaining("reconciled:W8#V82") == 300
    with venue.lock:
        venue._trade(held["V82"], Decimal(100), 99.0)  # ClOrdID W8, OrderID V82
    eventually(lambda: rig.guard.remaining("reconciled:W8#V82") == 200, what="fill applied")
    assert rig.guard.remaining("reconciled:W8") == 300 and rig.guard.position("L000") == 100
    killed = rig.gateway.cancel_scope(Scope.STRATEGY, "OMS1", "runaway")
    assert sorted(killed) == ["reconciled:W8", "reconciled:W8#V82"]
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="cancelled")
    assert sorted(cancels) == [("W8", "V81"), ("W8", "V82")]
    assert rig.guard.working_qty("L000") == (0, 0)


def test_a_clients_cancel_of_a_clordid_two_adopted_orders_share_cancels_both(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's cancel naming W8, under which start-up adopted two working orders, is
    sent for each, each naming its own OrderID; the client gets both answers under its
    ClOrdID and the Guard ends both. Before, one cancel naming only W8 went out: the
    venue cancelled one order, and no client could reach the other (the gateway's own
    id for it, W8#V82, means nothing to the venue)."""
    rig, _held, cancels = twins_at_start_up(rig_factory, monkeypatch)
    rig.oms.cancel("C1", "W8", "L000", BUY, 300)
    eventually(lambda: len(rig.oms.reports("C1")) == 2, what="both answers")
    answers = rig.oms.reports("C1")
    assert sorted((r.get(F.EXEC_TYPE), r.get(F.ORDER_ID)) for r in answers) == [
        ("4", "V81"),
        ("4", "V82"),
    ]
    assert sorted(cancels) == [("W8", "V81"), ("W8", "V82")]
    eventually(lambda: rig.guard.working_qty("L000") == (0, 0), what="both ended")
    assert rig.guard.remaining("reconciled:W8") is None
    assert rig.guard.remaining("reconciled:W8#V82") is None
    assert not rig.gateway.still_working(Scope.FLEET, "fleet")


def test_a_cancel_naming_one_of_two_adopted_orders_by_order_id_ends_that_one_only(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's cancel naming W8 and OrderID V82 cancels V82 at the venue, and the Guard
    ends V82's order, not V81's. Before, the venue's answer was applied to the order the
    ClOrdID names first: V81 was ended in the Guard while it worked on at the venue,
    and V82, cancelled, stayed counted working."""
    rig, _held, cancels = twins_at_start_up(rig_factory, monkeypatch)
    cancel = F.message(
        F.CANCEL,
        [(F.CL_ORD_ID, "C2"), (F.ORIG_CL_ORD_ID, "W8"), (F.ORDER_ID, "V82"),
         (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "300"),
         (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip
    assert rig.oms.send(cancel)
    done = rig.oms.wait_report("C2", "4")
    assert done.get(F.ORDER_ID) == "V82" and cancels == [("W8", "V82")]
    eventually(lambda: rig.guard.working_qty("L000") == (300, 0), what="one ended")
    assert rig.guard.remaining("reconciled:W8#V82") is None
    assert rig.guard.remaining("reconciled:W8") == 300
    assert rig.gateway.still_working(Scope.FLEET, "fleet") == ["reconciled:W8"]


def test_a_mass_cancel_kill_answered_under_its_own_clordid_ends_both_adopted_orders(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet kill goes as one mass cancel; the venue answers under its ClOrdID naming W8
    as OrigClOrdID for each of the two orders adopted under it. Each answer ends the order
    its OrderID names. Before, both were applied to the first: the second, cancelled at
    the venue, stayed counted working, and the kill never drained."""
    rig, _held, cancels = twins_at_start_up(rig_factory, monkeypatch)
    killed = rig.gateway.cancel_scope(Scope.FLEET, "fleet", "runaway")
    assert sorted(killed) == ["reconciled:W8", "reconciled:W8#V82"]
    eventually(lambda: len(cancels) == 2, what="the venue's mass cancel")
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="drained")
    assert rig.guard.working_qty("L000") == (0, 0)
    assert sorted(cancels) == [("mass", "V81"), ("mass", "V82")]


@pytest.mark.parametrize(
    ("last", "needle"),
    [
        ([(F.ORD_STATUS, "D")], None),  # accepted for bidding: live, as the book has it
        ([(F.ORD_STATUS, "9")], "OrdStatus(39)=9 is not one the gateway can count: not adopted"),
        ([(F.ORD_STATUS, "7")], "OrdStatus(39)=7 is not one the gateway can count: not adopted"),
        ([(F.SIDE, "8")], "Side(54)=8 unsupported: not adopted"),
    ],
)
def test_a_mass_status_report_in_a_status_the_gateway_cannot_count_is_never_skipped(
    rig_factory: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    last: list[tuple[int, str]],
    needle: str | None,
) -> None:
    """A working order reported accepted for bidding (OrdStatus D, live in the book) is
    adopted; one in a status the gateway does not count as live or finished (suspended,
    stopped) or with a Side it cannot map is recorded and halts the node naming
    it. Before, every such order was skipped in silence and executed uncounted."""
    rig = rig_factory()
    mass_status_of(rig, monkeypatch, last)
    rig.start()
    eventually(lambda: rig.gateway.reconciled.is_set(), what="reconciliation")
    assert rig.guard.remaining("reconciled:W8") == 300
    if needle is None:
        assert rig.guard.remaining("reconciled:W9") == 300 and not rig.guard.halts()
        return
    halt = rig.guard.halts()[(Scope.NODE, "gw")]
    assert halt.code is RejectReason.FILL_MISMATCH
    assert halt.reason == f"reconciled order W9 (venue OrderID V92): {needle}"
    assert [e["data"]["clordid"] for e in rig.events("venue_report_unapplied")] == ["W9"]


def test_a_mass_status_the_venue_refuses_fails_start_up_naming_that(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venue that refuses the start-up OrderMassStatusRequest (BusinessMessageReject), or
    whose last report its FIX engine refuses (a price that is no number), sends nothing
    that ends reconciliation: start-up fails naming the real cause (`reconcile_error`,
    which the node's start-up raises) instead of timing out and asking whether the venue
    session is logging on."""
    rig = rig_factory()

    def unsupported(msg: F.In, sid: Any, key: str) -> None:
        raise fix().UnsupportedMessageType()

    monkeypatch.setattr(rig.venue, "_mass_status", unsupported)
    rig.start()
    eventually(lambda: rig.gateway.reconcile_error, what="start-up failed")
    assert rig.gateway.reconcile_error.startswith(
        "the venue refused the OrderMassStatusRequest KWMS"
    )
    assert "set venue.mass_status = false" in rig.gateway.reconcile_error
    assert not rig.gateway.reconciled.is_set() and not rig.guard.armed
    rig.stop()
    rig = rig_factory()
    mass_status_of(rig, monkeypatch, [(F.PRICE, "abc")])
    rig.start()
    eventually(lambda: rig.gateway.reconcile_error, what="start-up failed")
    assert "was refused by the FIX engine" in rig.gateway.reconcile_error
    assert "a working order may not be counted" in rig.gateway.reconcile_error
    assert not rig.gateway.reconciled.is_set() and rig.guard.halts()


def restarted_with_adopted(
    rig_factory: Callable[..., Rig], *, status_without_instrument: bool = False
) -> tuple[Rig, Gateway, LockedGuard]:
    """A gateway restarted (same state directory) over orders W1 (300 L000) and W2 (200
    L001) left working at the venue by OMS1: armed, both adopted. OMS2 never logged on
    before; the caller stops the returned gateway. `status_without_instrument`: the
    venue's status reports at the restart name no instrument."""
    keep = (ClientSession("OMS1", cancel_on_disconnect=False), ClientSession("OMS2"))
    first = rig_factory(
        clients=("OMS1", "OMS2"),
        venue={"cancel_on_disconnect": False},
        config={"store": "file", "clients": keep},
    )
    first.start(connect=("OMS1",)).ready()
    rest(first, "W1", qty=300)
    rest(first, "W2", qty=200, symbol="L001")
    first.clients["OMS1"].stop()
    first.gateway.stop()
    first.venue.status_without_instrument = status_without_instrument
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    second = Gateway(
        first.config,
        guard,
        first.root / "gateway",
        log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )
    second.start()
    try:
        eventually(lambda: guard.armed, what="armed after reconciliation")
    except BaseException:
        second.stop()
        raise
    return first, second, guard


def test_a_strategy_kill_cancels_orders_adopted_at_start_up(
    rig_factory: Callable[..., Rig],
) -> None:
    """An adopted order belongs to no known strategy, so it may be the killed one's: a
    strategy kill covers it, a strategy-and-symbol kill in its symbol (before, only a
    fleet, node or symbol kill did; a strategy's kill left them working at the venue)."""
    first, second, guard = restarted_with_adopted(rig_factory)
    try:
        assert second.still_working(Scope.STRATEGY_SYMBOL, "OMS1/L001") == ["reconciled:W2"]
        assert second.cancel_scope(Scope.STRATEGY_SYMBOL, "OMS1/L000", "x") == ["reconciled:W1"]
        eventually(lambda: [o.clordid for o in first.venue.working()] == ["W2"], what="W1")
        # the venue's cancel report reaches the gateway's book after the venue ends W1
        eventually(lambda: not second.still_working(Scope.SYMBOL, "L000"), what="W1 ended")
        assert second.cancel_scope(Scope.STRATEGY, "OMS1", "runaway") == ["reconciled:W2"]
        eventually(lambda: not first.venue.working(), what="W2 cancelled")
        eventually(lambda: not second.still_working(Scope.STRATEGY, "OMS1"), what="drained")
        assert guard.working_qty("L000") == (0, 0) == guard.working_qty("L001")
    finally:
        second.stop()


def test_an_adopted_order_whose_report_names_no_instrument_halts_the_node(
    rig_factory: Callable[..., Rig],
) -> None:
    """A working order the venue reports at start-up without a Symbol is counted (a fleet
    kill still cancels it) and the node halts `fill_mismatch` naming it: no symbol kill
    could find it and no price values it. Before, it was adopted under the symbol "?"
    and traded on unhalted."""
    first, second, guard = restarted_with_adopted(rig_factory, status_without_instrument=True)
    try:
        halt = guard.halts()[(Scope.NODE, "gw")]
        assert halt.code is RejectReason.FILL_MISMATCH, halt
        assert "reconciled order W" in halt.reason and "names no instrument" in halt.reason
        assert sorted(o.guard_id for o in second.in_scope(Scope.FLEET, "fleet")) == [
            "reconciled:W1",
            "reconciled:W2",
        ]
        assert sorted(second.cancel_scope(Scope.FLEET, "fleet", "x")) == [
            "reconciled:W1",
            "reconciled:W2",
        ]
        eventually(lambda: not first.venue.working(), what="both cancelled at the venue")
    finally:
        second.stop()


def test_a_client_cancelling_an_adopted_order_gets_the_answer(
    rig_factory: Callable[..., Rig],
) -> None:
    """An adopted order has no session of its own; the answer to a client's cancel of it
    goes to that client (before, a cancel the venue took was answered to nobody, while
    one it refused was answered)."""
    first, second, guard = restarted_with_adopted(rig_factory)
    try:
        oms2 = first.client("OMS2")
        oms2.cancel("Cx", "W1", "L000", BUY, 300)
        done = oms2.wait_report("Cx", "4")
        assert done.get(F.ORIG_CL_ORD_ID) == "W1"
        assert [o.clordid for o in first.venue.working()] == ["W2"]
        eventually(lambda: guard.working_qty("L000") == (0, 0), what="Guard follows")
        oms2.stop()
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ('L001 = "abc"', "positions.L001: qty must be a decimal number (got 'abc')"),
        ("L001 = 1e300", "positions.L001: qty must be at most 1e+15 lots"),
        ("L001 = { qty = 5, avg_price = -1.0 }", "avg_price must be from 0 to 1e+12"),
        ("L001 = { qty = 5, avg_price = nan }", "avg_price must be from 0 to 1e+12"),
        ("L001 = { qty = 5, avg_price = inf }", "avg_price must be from 0 to 1e+12"),
        ("L001 = { qty = 5, avg_price = 1e300 }", "avg_price must be from 0 to 1e+12"),
        ("L001 = { qty = 5, avgprice = 40.5 }", "positions.L001: unknown key 'avgprice'"),
        ("L001 = 0.5", "positions.L001: qty: must be a positive multiple of lot_size 1"),
        ('"" = 5', "symbol '' must be 1-64 characters"),
        (f'"{"X" * 65}" = 5', "must be 1-64 characters without control characters"),
    ],
)
def test_a_bad_positions_file_entry_is_one_error_naming_it_and_nothing_is_loaded(
    rig_factory: Callable[..., Rig], tmp_path: Path, entry: str, needle: str
) -> None:
    """Before, a qty that is no number or out of range, or a bad avg_price, escaped as a
    traceback in the gateway's worker: start-up then waited for a reconciliation that
    never came, and blamed the venue session; a typo'd key was silently ignored."""
    pos = tmp_path / "positions.toml"
    pos.write_text(f"[positions]\nL000 = 700\n{entry}\n")
    rig = rig_factory(config={"positions_file": str(pos)})
    with pytest.raises(GatewayError) as err:
        rig.gateway.load_positions(pos)
    assert str(err.value).startswith(f"{pos}: ") and needle in str(err.value)
    assert "\n" not in str(err.value)
    assert rig.guard.position("L000") == 0  # checked in full before anything is applied


# --- kill --------------------------------------------------------------------------------


@pytest.mark.parametrize("begin", ["FIX.4.4", "FIX.4.2"])
def test_kill_cancels_every_working_order_at_the_venue_and_tells_the_client(
    rig_factory: Callable[..., Rig], begin: str
) -> None:
    rig = rig_factory(begin=begin).start().ready()
    for cid in ("K1", "K2", "K3"):
        rest(rig, cid)
    rig.guard.halt(Scope.FLEET, "fleet", "runaway", "ops")
    targets = rig.gateway.cancel_scope(Scope.FLEET, "fleet", "runaway")
    assert sorted(targets) == ["OMS1:K1", "OMS1:K2", "OMS1:K3"]
    for cid in ("K1", "K2", "K3"):
        er = rig.oms.wait_report(cid, "4")
        assert er.get(F.TEXT) == "knightwatch kill: runaway"
        assert F.ORIG_CL_ORD_ID not in er.fields
    eventually(lambda: rig.gateway.still_working(Scope.FLEET, "fleet") == [])
    assert rig.venue.working() == []
    assert rig.guard.working_qty("L000") == (0, 0)
    rig.oms.new_order("K4", "L000", BUY, 100, 101.0)
    assert rig.oms.wait_report("K4", "8").get(F.TEXT).startswith("knightwatch:halted ")


def test_symbol_kill_leaves_other_symbols_working(rig: Rig) -> None:
    rest(rig, "Y1", symbol="L000")
    rest(rig, "Y2", symbol="L001")
    rig.gateway.cancel_scope(Scope.SYMBOL, "L000", "bad symbol")
    rig.oms.wait_report("Y1", "4")
    assert [o.clordid for o in rig.venue.working()] == ["Y2"]


def test_a_symbol_kill_by_security_id_cancels_that_instrument_only(
    rig_factory: Callable[..., Rig],
) -> None:
    """With instruments named by SecurityID a symbol kill's key is a SecurityID: it is not
    sent as a mass cancel's Symbol (before, the venue found no order of that Symbol and
    cancelled nothing, or would have cancelled another instrument's), but one cancel per
    order of that instrument."""
    limits = Limits.off(max_order_qty=5_000, require_reference_price=False)
    rig = (
        rig_factory(limits=limits, config={"instrument": "security_id", "security_id_source": "4"})
        .start()
        .ready(())
    )
    for cid, secid in (("S1", "US0000000001"), ("S2", "US0000000002")):
        rig.oms.new_order(
            cid,
            "L000",
            BUY,
            10,
            below(rig, "L000"),
            extra=[(F.SECURITY_ID, secid), (F.ID_SOURCE, "4")],
        )
        rig.oms.wait_report(cid, "0")
    assert rig.gateway.cancel_scope(Scope.SYMBOL, "US0000000001", "bad isin") == ["OMS1:S1"]
    assert rig.oms.wait_report("S1", "4").get(F.TEXT) == "knightwatch kill: bad isin"
    assert [o.clordid for o in rig.venue.working()] == ["S2"]
    assert rig.gateway.still_working(Scope.SYMBOL, "US0000000001") == []


def test_drop_copy_feeds_fills_of_orders_that_bypassed_the_gateway(
    rig_factory: Callable[..., Rig],
) -> None:
    from knightwatch.gateway.client import FixClient

    rig = rig_factory(drop_copy=True)
    rig.start().ready()
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    direct = FixClient(
        rig.root / "direct", comp_id="DIRECT", target=rig.venue_comp, port=rig.venue_port
    )
    direct.start()
    rig._started.append(direct)
    direct.wait_logon()
    direct.new_order("BYPASS1", "L000", SELL, 300, 95.0)  # straight to the venue
    direct.wait_report("BYPASS1", "F")
    eventually(lambda: rig.guard.position("L000") == -300, what="drop-copy fill applied")
    rig.oms.new_order("OWN1", "L000", BUY, 100, 104.0)  # routed: reported once, not twice
    rig.oms.wait_report("OWN1", "F")
    eventually(lambda: rig.guard.position("L000") == -200, what="own fill applied")
    time.sleep(0.2)
    assert rig.guard.position("L000") == -200 and rig.guard.halts() == {}
    assert rig.gateway.counts.get("drop_copy_reports", 0) >= 1


def with_direct(rig: Rig) -> FixClient:
    """A session straight to the venue (DIRECT), bypassing the gateway; the drop copy up."""
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    direct = FixClient(
        rig.root / "direct",
        comp_id="DIRECT",
        target=rig.venue_comp,
        port=rig.venue_port,
        begin_string=rig.begin,
    )
    direct.start()
    rig._started.append(direct)
    direct.wait_logon()
    return direct


@pytest.mark.parametrize("begin", ["FIX.4.4", "FIX.4.2"])
def test_drop_copy_busts_and_corrections_of_bypass_fills_move_the_position_back(
    rig_factory: Callable[..., Rig], begin: str
) -> None:
    """A bust (ExecType H; 4.2 ExecTransType 1) or correction (G; 2) of an execution of an
    order that bypassed the gateway is taken back in the position (before, only the fill
    was booked: a busted trade stayed in the position, a corrected one at its old size)."""
    rig = rig_factory(begin=begin, drop_copy=True).start().ready()
    direct = with_direct(rig)
    direct.new_order("BY1", "L000", SELL, 300, 95.0)
    first = direct.wait_report("BY1", "F" if begin == "FIX.4.4" else "2")
    eventually(lambda: rig.guard.position("L000") == -300, what="bypass fill booked")
    rig.venue.bust(first.get(F.EXEC_ID))
    eventually(lambda: rig.guard.position("L000") == 0, what="bust taken back")
    direct.new_order("BY2", "L001", BUY, 200, 104.0)
    second = direct.wait_report("BY2", "F" if begin == "FIX.4.4" else "2")
    eventually(lambda: rig.guard.position("L001") == 200, what="second fill booked")
    rig.venue.correct(second.get(F.EXEC_ID), 50, 100.5)
    eventually(lambda: rig.guard.position("L001") == 50, what="correction applied")
    assert rig.guard.halts() == {} and rig.guard.position("L000") == 0
    assert [r["data"]["qty"] for r in rig.events("bust")] == [300]


def test_a_drop_copy_execution_under_a_clients_clordid_halts_and_is_booked_apart(
    rig_factory: Callable[..., Rig],
) -> None:
    """An order straight to the venue under a ClOrdID a gateway client's order holds: its
    drop-copy execution is no copy of the client's (another venue OrderID). Before, it was
    ignored as one: a 300 sell nobody counted. It is booked as the venue reports it,
    never onto the client's order, and the node halts `fill_mismatch`."""
    rig = rig_factory(drop_copy=True).start().ready()
    direct = with_direct(rig)
    rest(rig, "SAME")
    direct.new_order("SAME", "L000", SELL, 300, 95.0)  # the venue keeps ids per session
    direct.wait_report("SAME", "F")
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ClOrdID SAME" in halt.reason
    eventually(lambda: rig.guard.position("L000") == -300, what="booked apart")
    assert rig.guard.working_qty("L000") == (100, 0)  # the client's order: untouched
    assert rig.guard.remaining("OMS1:SAME") == 100
    assert [r.get(F.EXEC_TYPE) for r in rig.oms.reports("SAME")] == ["0"]
    assert rig.events("drop_copy_collision")


def test_a_drop_copy_report_under_a_clordid_in_flight_is_checked_when_the_venue_acks(
    rig_factory: Callable[..., Rig],
) -> None:
    """A drop-copy report under the ClOrdID of an order the venue has not yet acked may be
    the copy of that order's ack (the drop copy came first): kept, and checked once the
    venue session names the order's OrderID; another OrderID halts `fill_mismatch`."""
    rig = rig_factory(drop_copy=True).start().ready()
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.dc_comp)
    ack = [(F.ORDER_ID, "ELSEWHERE-1"), (F.CL_ORD_ID, "P1"), (F.EXEC_ID, "DCX1"),
           (F.EXEC_TYPE, "0"), (F.ORD_STATUS, "0"), (F.SYMBOL, "L000"), (F.SIDE, SELL),
           (F.ORDER_QTY, "10"), (F.LEAVES_QTY, "10"), (F.CUM_QTY, "0"), (F.AVG_PX, "0"),
           (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    with rig.venue.lock:  # the venue holds the order: not acked yet
        rig.oms.new_order("P1", "L000", BUY, 100, below(rig, "L000"))
        eventually(lambda: "P1" in rig.gateway.book.orders, what="P1 routed")
        assert F.send(F.message(F.EXECUTION_REPORT, ack), sid)
        marker = [(F.CL_ORD_ID, "MARK") if t == F.CL_ORD_ID else (t, v) for t, v in ack]
        marker = [(F.EXEC_ID, "DCX2") if t == F.EXEC_ID else (t, v) for t, v in marker]
        assert F.send(F.message(F.EXECUTION_REPORT, marker), sid)  # handled after it
        eventually(lambda: rig.events("drop_copy_report"), what="drop copy read")
        assert rig.guard.halts() == {}
    rig.oms.wait_report("P1", "0")
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ELSEWHERE-1" in halt.reason


def test_a_drop_copy_fill_of_a_side_or_instrument_the_gateway_cannot_read_is_not_booked(
    rig_factory: Callable[..., Rig],
) -> None:
    """A drop-copy execution with a Side the gateway has no Guard side for (7,
    undisclosed), or without the instrument (FIX 4.4 does not require Symbol), is not
    booked and halts the node (before, it was booked as a buy, or on an instrument "?":
    a position nobody holds, and no halt); its complete resend is booked once."""
    rig = rig_factory(drop_copy=True).start().ready()
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    sid = next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.dc_comp)
    fill = [(F.ORDER_ID, "X1"), (F.CL_ORD_ID, "BYPASS"), (F.EXEC_ID, "DC1"), (F.EXEC_TYPE, "F"),
            (F.ORD_STATUS, "2"), (F.SYMBOL, "L000"), (F.SIDE, SELL), (F.ORDER_QTY, "300"),
            (F.LEAVES_QTY, "0"), (F.CUM_QTY, "300"), (F.AVG_PX, "99"), (F.LAST_QTY, "300"),
            (F.LAST_PX, "99"), (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    assert F.send(
        F.message(F.EXECUTION_REPORT, [(t, "7" if t == F.SIDE else v) for t, v in fill]), sid
    )
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "Side(54)=7" in halt.reason
    no_symbol = [(t, v) for t, v in fill if t != F.SYMBOL] + [(F.SECURITY_ID, "US0000000001")]
    assert F.send(F.message(F.EXECUTION_REPORT, no_symbol), sid)
    eventually(lambda: len(rig.events("venue_report_unapplied")) == 2, what="both recorded")
    assert rig.guard.position("L000") == 0 and rig.guard.position("?") == 0
    assert rig.guard.exposure()[0] == 0
    assert F.send(F.message(F.EXECUTION_REPORT, fill), sid)  # the complete report
    eventually(lambda: rig.guard.position("L000") == -300, what="booked")


def test_audit_why_shows_the_fix_message_behind_a_decision(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from knightwatch.audit.why import explain_order
    from knightwatch.cli.app import app

    path = tmp_path / "gw.jsonl"
    rig = rig_factory(recorder_path=path).start().ready()
    msg = rig.oms.order_message("W1", "L000", BUY, 100, 101.0)
    rig.oms.send(msg)
    rig.oms.wait_report("W1", "F")
    rig.oms.new_order("W2", "L000", BUY, 90_000, 101.0)
    rig.oms.wait_report("W2", "8")
    rig.stop()
    rig.recorder.close()
    ok = explain_order(path, "OMS1:W1")
    assert ok.decision.accepted and len(ok.fills) == 1
    (fix_in,) = [e for e in ok.events if e.kind == "fix_in"]
    assert fix_in.data["session"] == "OMS1" and fix_in.data["msg_type"] == "D"
    assert fix_in.data["clordid"] == "W1" and len(str(fix_in.data["raw_sha256"])) == 32
    assert int(fix_in.data["seq"] or 0) >= 2  # the client's MsgSeqNum (1 is its logon)
    out = CliRunner().invoke(app, ["audit", "why", "OMS1:W2", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "max_order_qty" in out.output and "fix_in" in out.output and "OMS1" in out.output


# --- drop copy: trade capture reports, replaces, engine rejects ---------------------------


def test_drop_copy_trade_capture_reports_of_bypass_orders_move_the_position(
    rig_factory: Callable[..., Rig],
) -> None:
    """Many venues send drop copies as TradeCaptureReports (35=AE): Side, OrderID and
    ClOrdID in the NoSides group, a bust a cancel (487=1), a correction a replace
    (487=2). Before, the gateway read only ExecutionReports: a fill of an order that
    bypassed it, reported as 35=AE, never reached the position (the loss and position
    limits did not see it). Its copies of the gateway's own fills are still ignored."""
    rig = rig_factory(drop_copy=True, venue={"drop_copy_as": "AE"}).start().ready()
    direct = with_direct(rig)
    direct.new_order("BY1", "L000", SELL, 300, 95.0)
    first = direct.wait_report("BY1", "F")
    eventually(lambda: rig.guard.position("L000") == -300, what="bypass fill booked")
    rig.oms.new_order("OWN1", "L000", BUY, 100, 104.0)  # routed: reported once, not twice
    rig.oms.wait_report("OWN1", "F")
    rig.venue.bust(first.get(F.EXEC_ID))
    eventually(lambda: rig.guard.position("L000") == 100, what="bust taken back")
    direct.new_order("BY2", "L001", BUY, 200, 104.0)
    second = direct.wait_report("BY2", "F")
    eventually(lambda: rig.guard.position("L001") == 200, what="second fill booked")
    rig.venue.correct(second.get(F.EXEC_ID), 50, 100.5)
    eventually(lambda: rig.guard.position("L001") == 50, what="correction applied")
    assert rig.guard.halts() == {} and rig.guard.position("L000") == 100
    assert [r["data"]["qty"] for r in rig.events("bust")] == [300]
    assert not rig.events("drop_copy_collision")


def dc_sid(rig: Rig) -> Any:
    eventually(lambda: rig.venue.logged_on(rig.dc_comp), what="drop copy logged on")
    return next(s for s in rig.venue._logged_on.values() if F.target_of(s) == rig.dc_comp)


def tcr(fields: list[tuple[int, str]], sides: list[list[tuple[int, str]]]) -> Any:
    """A TradeCaptureReport with `fields` and one NoSides(552) entry per side."""
    m = F.message(F.TRADE_CAPTURE_REPORT, fields)
    for side in sides:
        g = F.fix().Group(F.NO_SIDES, F.SIDE)
        for tag, value in side:
            g.setField(tag, value)
        m.addGroup(g)
    return m


def test_a_trade_capture_report_the_gateway_cannot_read_halts_and_its_resend_is_booked(
    rig_factory: Callable[..., Rig],
) -> None:
    """A TCR without an instrument, without LastQty (the engine refuses it with a session
    Reject before the gateway sees it), or with two sides (which is the firm's?) is not
    booked and halts the node, as an unreadable drop-copy ExecutionReport does; the
    complete report is booked once."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    body = [(F.TRADE_REPORT_ID, "T1"), (F.TRADE_REPORT_TRANS_TYPE, "0"), (F.EXEC_TYPE, "F"),
            (F.PREVIOUSLY_REPORTED, "N"), (F.SYMBOL, "L000"), (F.LAST_QTY, "300"),
            (F.LAST_PX, "99"), (F.TRADE_DATE, "20260101"),
            (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    side = [(F.SIDE, SELL), (F.ORDER_ID, "X1"), (F.CL_ORD_ID, "BYPASS")]
    assert F.send(tcr([(t, v) for t, v in body if t != F.SYMBOL], [side]), sid)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and f"tag {F.SYMBOL} missing" in halt.reason
    assert F.send(tcr([(t, v) for t, v in body if t != F.LAST_QTY], [side]), sid)
    assert F.send(tcr(body, [side, [(F.SIDE, BUY), (F.ORDER_ID, "X2")]]), sid)
    eventually(lambda: len(rig.events("venue_report_unapplied")) == 3, what="all recorded")
    errors = sorted(r["data"]["error"] for r in rig.events("venue_report_unapplied"))
    assert "NoSides(552)=2" in errors[0] and f"tag {F.SYMBOL} missing" in errors[1]
    assert "the FIX engine refused it (session reject reason 1" in errors[2]
    assert rig.guard.position("L000") == 0 and rig.guard.position("?") == 0
    assert F.send(tcr(body, [side]), sid)  # the complete report
    eventually(lambda: rig.guard.position("L000") == -300, what="booked")
    assert F.send(tcr(body, [side]), sid)  # sent again: booked once
    assert F.send(tcr([*body[:1], (F.TRADE_REPORT_TRANS_TYPE, "1"), *body[2:]], [side]), sid)
    eventually(lambda: rig.guard.position("L000") == 0, what="cancel taken back")
    assert rig.gateway.errors.count == 0


@pytest.mark.parametrize("copy_as", [F.EXECUTION_REPORT, F.TRADE_CAPTURE_REPORT])
def test_a_replaced_order_the_venue_gives_a_new_order_id_is_no_drop_copy_collision(
    rig_factory: Callable[..., Rig], copy_as: str
) -> None:
    """Some venues give a replaced order a new OrderID. The drop copy reports the
    gateway's own order, replaced, under that OrderID: before, it was taken for another
    order using a client's ClOrdID (the node halted `fill_mismatch` and its fill was
    booked a second time). A genuine collision still halts."""
    venue = {"new_order_id_on_replace": True, "drop_copy_as": copy_as}
    rig = rig_factory(drop_copy=True, venue=venue).start().ready()
    direct = with_direct(rig)
    rest(rig, "G1", qty=100)
    old_id = rig.venue.find("G1").order_id
    with rig.venue.lock:  # the drop copy may come before or after the venue session's
        rig.oms.replace("G2", "G1", "L000", BUY, 200, below(rig, "L000"))
        eventually(lambda: rig.guard.working_qty("L000") == (200, 0), what="reserved")
    rig.oms.wait_report("G2", "5")
    assert rig.venue.find("G2").order_id != old_id
    rig.venue.execute("G2", 150, below(rig, "L000"))
    fill = rig.oms.wait_report("G2", "F")
    # and as a drop copy with ExecIDs of its own sends it (not a resend of the order
    # session's report): only the new OrderID ties it to the order
    new_id, px = fill.get(F.ORDER_ID), fill.get(F.LAST_PX)
    if copy_as == F.EXECUTION_REPORT:
        copy = F.message(
            F.EXECUTION_REPORT,
            [(F.ORDER_ID, new_id), (F.CL_ORD_ID, "G2"), (F.EXEC_ID, "DC-OWN"),
             (F.EXEC_TYPE, "F"), (F.ORD_STATUS, "1"), (F.SYMBOL, "L000"), (F.SIDE, BUY),
             (F.ORDER_QTY, "200"), (F.LEAVES_QTY, "50"), (F.CUM_QTY, "150"), (F.AVG_PX, px),
             (F.LAST_QTY, "150"), (F.LAST_PX, px), (F.TRANSACT_TIME, F.now_utc())],
        )  # fmt: skip
    else:
        copy = tcr(
            [(F.TRADE_REPORT_ID, "DC-OWN"), (F.PREVIOUSLY_REPORTED, "N"), (F.SYMBOL, "L000"),
             (F.LAST_QTY, "150"), (F.LAST_PX, px), (F.TRADE_DATE, "20260101"),
             (F.TRANSACT_TIME, F.now_utc())],
            [[(F.SIDE, BUY), (F.ORDER_ID, new_id)]],  # no ClOrdID: FIX does not require it
        )  # fmt: skip
    assert F.send(copy, dc_sid(rig))
    direct.new_order("MARK", "L001", SELL, 10, 95.0)  # the drop copy reads in order
    eventually(lambda: rig.guard.position("L001") == -10, what="marker booked")
    assert rig.guard.halts() == {} and not rig.events("drop_copy_collision")
    assert rig.guard.position("L000") == 150 and rig.guard.remaining("OMS1:G2") == 50
    direct.new_order("G2", "L000", SELL, 30, 95.0)  # another order under the client's id
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ClOrdID G2" in halt.reason
    eventually(lambda: rig.guard.position("L000") == 120, what="booked apart")


def dc_fill(
    copy_as: str, report_id: str, order_id: str, side: str, qty: int, clordid: str | None = None
) -> Any:
    """A drop-copy fill on L000 at 100 as the venue's drop copy would send it (an
    ExecutionReport or a TradeCaptureReport), with or without a ClOrdID."""
    ids = [(F.CL_ORD_ID, clordid)] if clordid is not None else []
    if copy_as == F.TRADE_CAPTURE_REPORT:
        return tcr(
            [(F.TRADE_REPORT_ID, report_id), (F.PREVIOUSLY_REPORTED, "N"), (F.SYMBOL, "L000"),
             (F.LAST_QTY, str(qty)), (F.LAST_PX, "100"), (F.TRADE_DATE, "20260101"),
             (F.TRANSACT_TIME, F.now_utc())],
            [[(F.SIDE, side), (F.ORDER_ID, order_id), *ids]],
        )  # fmt: skip
    return F.message(
        F.EXECUTION_REPORT,
        [(F.ORDER_ID, order_id), *ids, (F.EXEC_ID, report_id), (F.EXEC_TYPE, "F"),
         (F.ORD_STATUS, "2"), (F.SYMBOL, "L000"), (F.SIDE, side), (F.ORDER_QTY, str(qty)),
         (F.LEAVES_QTY, "0"), (F.CUM_QTY, str(qty)), (F.AVG_PX, "100"),
         (F.LAST_QTY, str(qty)), (F.LAST_PX, "100"), (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip


def dc_marker(rig: Rig, sid: Any, n: int) -> None:
    """A bypass fill of 10 L001 under a ClOrdID of its own, booked at once: the drop copy
    reads in order, so every report sent before it has been read."""
    before = rig.guard.position("L001")
    marker = tcr(
        [(F.TRADE_REPORT_ID, f"MARK-{n}"), (F.PREVIOUSLY_REPORTED, "N"), (F.SYMBOL, "L001"),
         (F.LAST_QTY, "10"), (F.LAST_PX, "100"), (F.TRADE_DATE, "20260101"),
         (F.TRANSACT_TIME, F.now_utc())],
        [[(F.SIDE, SELL), (F.ORDER_ID, f"MARK-{n}"), (F.CL_ORD_ID, f"MARK-{n}")]],
    )  # fmt: skip
    assert F.send(marker, sid)
    eventually(lambda: rig.guard.position("L001") == before - 10, what="marker booked")


@pytest.mark.parametrize("copy_as", [F.EXECUTION_REPORT, F.TRADE_CAPTURE_REPORT])
def test_a_drop_copy_naming_no_clordid_before_the_ack_is_held_never_counted_twice(
    rig_factory: Callable[..., Rig], copy_as: str
) -> None:
    """A drop-copy fill naming no ClOrdID (FIX requires none) of one of the gateway's own
    orders, read before the venue session names that order's OrderID: before, it was
    booked as a bypass fill and the order's own fill booked again (a 100 buy counted
    200, no halt; as an ExecutionReport it halted as unreadable). It is held until the
    venue session names the OrderID, then dropped; one naming an OrderID no order of
    the gateway gets is booked as a bypass fill then, without a halt."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    with rig.venue.lock:  # the venue holds the order: not acked yet
        n = next(rig.venue._ids)
        rig.venue._ids = itertools.count(n)  # the OrderID the venue gives it: V{n}
        rig.oms.new_order("OWN1", "L000", BUY, 100, 104.0)  # marketable: fills at once
        eventually(lambda: "OWN1" in rig.gateway.book.orders, what="OWN1 routed")
        assert F.send(dc_fill(copy_as, "DC-EARLY", f"V{n}", BUY, 100), sid)
        assert F.send(dc_fill(copy_as, "DC-OTHER", "ELSEWHERE-9", SELL, 30), sid)
        dc_marker(rig, sid, 1)
        assert rig.guard.position("L000") == 0 and rig.guard.halts() == {}  # both held
    rig.oms.wait_report("OWN1", "F")
    dc_marker(rig, sid, 2)  # the venue's own copies of OWN1 have been read too
    assert rig.gateway.book.orders["OWN1"].order_id == f"V{n}"
    assert rig.guard.position("L000") == 100 - 30 and rig.guard.halts() == {}
    assert not rig.events("drop_copy_collision")
    assert [r["data"]["venue_order_id"] for r in rig.events("drop_copy_held")] == [
        f"V{n}",
        "ELSEWHERE-9",
    ]
    assert F.send(dc_fill(copy_as, "DC-EARLY", f"V{n}", BUY, 100), sid)  # again: dropped
    dc_marker(rig, sid, 3)
    assert rig.guard.position("L000") == 70 and rig.guard.halts() == {}


@pytest.mark.parametrize("in_flight", ["new", "replace"])
def test_a_held_drop_copy_fill_that_turns_out_a_collision_is_booked_and_halts(
    rig_factory: Callable[..., Rig], in_flight: str
) -> None:
    """A drop-copy fill under the ClOrdID of an order not acked yet (or with a replace in
    flight) is held; when the venue session names another OrderID it was an order that
    bypassed the gateway under the client's ClOrdID. Before, the node halted but the
    fill was never booked (the position missed a 300 sell the venue reports). It is
    booked as the venue reports it, never onto the client's order, and the node halts
    `fill_mismatch`, as for a collision seen at once."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    if in_flight == "replace":
        rest(rig, "P1", qty=100)
    with rig.venue.lock:  # the venue holds the order (or the replace): not answered yet
        if in_flight == "new":
            cid = "P1"
            rig.oms.new_order(cid, "L000", BUY, 100, below(rig, "L000"))
            eventually(lambda: cid in rig.gateway.book.orders, what="P1 routed")
        else:
            cid = "P2"
            rig.oms.replace(cid, "P1", "L000", BUY, 100, below(rig, "L000", 60))
            eventually(lambda: cid in rig.gateway.book.requests, what="replace in flight")
        assert F.send(dc_fill(F.EXECUTION_REPORT, "DC1", "ELSEWHERE-1", SELL, 300, cid), sid)
        dc_marker(rig, sid, 1)
        assert rig.guard.position("L000") == 0 and rig.guard.halts() == {}  # held
    rig.oms.wait_report(cid, "0" if in_flight == "new" else "5")
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ELSEWHERE-1" in halt.reason
    eventually(lambda: rig.guard.position("L000") == -300, what="booked apart")
    assert rig.guard.remaining(f"OMS1:{cid}") == 100  # the client's order: untouched
    assert rig.events("drop_copy_collision")
    assert F.send(dc_fill(F.EXECUTION_REPORT, "DC1", "ELSEWHERE-1", SELL, 300, cid), sid)
    dc_marker(rig, sid, 2)
    assert rig.guard.position("L000") == -300  # sent again: booked once


def test_a_held_drop_copy_whose_order_ends_without_an_order_id_is_booked_not_lost(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order a drop-copy fill was held for ends without the venue session ever naming
    its OrderID (the venue's session Reject of the order): a fill under its ClOrdID was
    another order's (booked, the node halts `fill_mismatch`), and one naming no
    ClOrdID is a bypass fill (booked). Before, the first was held for ever: a 300 sell
    the venue reports, never booked and no halt."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    real_new = rig.venue._new

    def picky(msg: F.In, sid: Any, key: str) -> None:
        if msg[F.CL_ORD_ID].startswith("BAD"):
            raise F.fix().IncorrectTagValue(F.ORD_TYPE)  # QuickFIX: a session Reject
        real_new(msg, sid, key)

    monkeypatch.setattr(rig.venue, "_new", picky)
    with rig.venue.lock:  # the venue holds the order: not answered yet
        rig.oms.new_order("BAD1", "L000", BUY, 100, below(rig, "L000"))
        eventually(lambda: "BAD1" in rig.gateway.book.orders, what="BAD1 routed")
        assert F.send(dc_fill(F.EXECUTION_REPORT, "DC1", "ELSEWHERE-3", SELL, 300, "BAD1"), sid)
        assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "DC2", "ELSEWHERE-4", SELL, 20), sid)
        dc_marker(rig, sid, 1)
        assert rig.guard.position("L000") == 0 and rig.guard.halts() == {}  # both held
    rig.oms.wait_report("BAD1", "8")
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ELSEWHERE-3" in halt.reason
    eventually(lambda: rig.guard.position("L000") == -320, what="both booked")
    assert rig.gateway.book.orders["BAD1"].order_id == "NONE"


def silent_venue(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The venue takes orders whose ClOrdID starts SILENT and never answers them: the
    order session never names their OrderID."""
    real_new = rig.venue._new

    def silent(msg: F.In, sid: Any, key: str) -> None:
        if not msg[F.CL_ORD_ID].startswith("SILENT"):
            real_new(msg, sid, key)

    monkeypatch.setattr(rig.venue, "_new", silent)


def test_drop_copies_still_held_when_the_gateway_stops_are_booked_and_halt(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drop-copy fills held for an OrderID the order session never names (under the
    order's ClOrdID, and one naming no ClOrdID) survive the order session logging out
    and back on, and when the gateway stops they are booked as bypass fills and the
    node halts `fill_mismatch`, each recorded `drop_copy_unresolved`. Before, they
    were dropped with the gateway: a 320 sell the venue reported, never booked, no
    halt and nothing in the flight recorder."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    silent_venue(rig, monkeypatch)
    rig.oms.new_order("SILENT1", "L000", BUY, 100, below(rig, "L000"))
    eventually(lambda: "SILENT1" in rig.gateway.book.orders, what="SILENT1 routed")
    assert F.send(dc_fill(F.EXECUTION_REPORT, "DC1", "ELSEWHERE-5", SELL, 300, "SILENT1"), sid)
    assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "DC2", "ELSEWHERE-6", SELL, 20), sid)
    dc_marker(rig, sid, 1)
    assert len(rig.events("drop_copy_held")) == 2 and rig.guard.halts() == {}
    session = F.fix().Session.lookupSession(rig.gateway.venue_sid)
    session.logout("test: order session down")
    eventually(lambda: not rig.gateway.venue_up, what="order session down")
    session.logon()
    eventually(lambda: rig.gateway.venue_up, what="order session back")
    dc_marker(rig, sid, 2)
    assert rig.guard.position("L000") == 0 and len(rig.gateway._dc_held) == 2  # still held
    rig.gateway.stop()
    assert rig.guard.position("L000") == -320
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "stopped" in halt.reason
    unresolved = rig.events("drop_copy_unresolved")
    assert sorted(r["data"]["venue_order_id"] for r in unresolved) == [
        "ELSEWHERE-5",
        "ELSEWHERE-6",
    ]
    assert rig.gateway._dc_held == []


def two_sided(report_id: str, sides: list[list[tuple[int, str]]], trans: str = "0") -> Any:
    """A TradeCaptureReport of 100 L000 at 100 with both sides of the trade."""
    return tcr(
        [(F.TRADE_REPORT_ID, report_id), (F.TRADE_REPORT_TRANS_TYPE, trans),
         (F.PREVIOUSLY_REPORTED, "N"), (F.SYMBOL, "L000"), (F.LAST_QTY, "100"),
         (F.LAST_PX, "100"), (F.TRADE_DATE, "20260101"), (F.TRANSACT_TIME, F.now_utc())],
        sides,
    )  # fmt: skip


def test_a_trade_capture_report_with_both_sides_is_read_side_by_side(
    rig_factory: Callable[..., Rig],
) -> None:
    """Venues report a cross as one TradeCaptureReport with NoSides(552)=2. Before, any
    such report halted the node as unreadable. Each side is told apart: the side of one
    of the gateway's orders is its copy (dropped, the order session reports it) and the
    other the counterparty's (ignored); with both sides the gateway's (an internal
    cross) both are copies; a side under a client's ClOrdID with another OrderID is
    booked and halts, as a one-sided collision does; with neither side the gateway's,
    the firm's side cannot be told and the node halts, nothing booked."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    rest(rig, "B1", qty=100)
    rig.oms.new_order("S1", "L000", SELL, 100, below(rig, "L000", -200))
    rig.oms.wait_report("S1", "0")
    b1, s1 = rig.venue.find("B1").order_id, rig.venue.find("S1").order_id
    own_buy = [(F.SIDE, BUY), (F.ORDER_ID, b1), (F.CL_ORD_ID, "B1")]
    own_sell = [(F.SIDE, SELL), (F.ORDER_ID, s1), (F.CL_ORD_ID, "S1")]
    counterparty = [(F.SIDE, SELL), (F.ORDER_ID, "CP-1")]
    assert F.send(two_sided("X1", [counterparty, own_buy]), sid)
    assert F.send(two_sided("X2", [own_buy, own_sell]), sid)
    dc_marker(rig, sid, 1)
    assert rig.guard.halts() == {} and rig.guard.position("L000") == 0
    assert not rig.events("venue_report_unapplied")
    collide = [(F.SIDE, BUY), (F.ORDER_ID, "ELSEWHERE-7"), (F.CL_ORD_ID, "B1")]
    assert F.send(two_sided("X3", [counterparty, collide]), sid)
    eventually(lambda: rig.guard.halts(), what="halt")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and "ELSEWHERE-7" in halt.reason
    eventually(lambda: rig.guard.position("L000") == 100, what="the collided side booked")
    assert F.send(two_sided("X3", [counterparty, collide]), sid)  # again: booked once
    assert F.send(two_sided("X3", [counterparty, collide], trans="1"), sid)  # its cancel
    eventually(lambda: rig.guard.position("L000") == 0, what="cancel taken back")
    other = [(F.SIDE, BUY), (F.ORDER_ID, "CP-2")]
    assert F.send(two_sided("X4", [counterparty, other]), sid)
    eventually(lambda: rig.events("venue_report_unapplied"), what="recorded")
    (unapplied,) = rig.events("venue_report_unapplied")
    assert "cannot tell which is the firm's" in unapplied["data"]["error"]
    assert rig.guard.position("L000") == 0 and rig.gateway.errors.count == 0


def restart_before_mass_status(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, *, filled_while_down: int = 0
) -> tuple[Rig, Gateway, LockedGuard, Callable[[], None]]:
    """A gateway restarted (same state directory, drop copy on) over W1 (300 L000 buy)
    left working at the venue, held before start-up reconciliation: the venue keeps the
    mass status request unanswered until the returned `answer` is called, while both the
    order session and the drop copy are logged on. `filled_while_down`: the venue fills
    W1 that much while no gateway is connected (its report is resent at the logon). The
    caller stops the returned gateway."""
    keep = (ClientSession("OMS1", cancel_on_disconnect=False),)
    first = rig_factory(
        drop_copy=True,
        venue={"cancel_on_disconnect": False},
        config={"store": "file", "clients": keep},
    )
    first.start().ready()
    rest(first, "W1", qty=300)
    first.clients["OMS1"].stop()
    first.gateway.stop()
    if filled_while_down:
        first.venue.execute("W1", filled_while_down, below(first, "L000"))
    asked: list[tuple[F.In, Any, str]] = []
    real = first.venue._mass_status
    monkeypatch.setattr(first.venue, "_mass_status", lambda m, s, k: asked.append((m, s, k)))
    guard = LockedGuard(LIMITS, node="gw", clock=SystemClock(), recorder=first.recorder)
    second = Gateway(
        first.config,
        guard,
        first.root / "gateway",
        log_messages=False,
        on_reconciled=lambda: guard.arm("test"),
    )
    second.start()

    def answer() -> None:
        with first.venue.lock:
            real(*asked[0])

    try:
        eventually(lambda: asked, what="mass status asked")
        eventually(lambda: first.venue.logged_on(first.dc_comp), what="drop copy logged on")
    except BaseException:
        second.stop()
        raise
    return first, second, guard, answer


def test_drop_copies_before_start_up_reconciliation_are_read_against_the_adopted_orders(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop copy of a fill of W1 (an order the venue's mass status adopts) read before
    the mass status was answered: before, it was booked as a bypass fill (a 100 buy the
    firm's own order made, counted as flow that bypassed the gateway, and counted again
    by the order's own report). It is held until reconciliation and then read against
    the adopted orders: dropped as W1's copy. A bypass fill held with it is booked once,
    after; a resent one (from before this start, which reconciliation counts) is not."""
    first, second, guard, answer = restart_before_mass_status(rig_factory, monkeypatch)
    try:
        w1 = first.venue.find("W1")
        assert w1 is not None
        sid = dc_sid(first)
        assert F.send(dc_fill(F.EXECUTION_REPORT, "DC-W1", w1.order_id, BUY, 100, "W1"), sid)
        assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "DC-BY", "ELSEWHERE-7", SELL, 30), sid)
        replay = dc_fill(F.EXECUTION_REPORT, "DC-OLD", "ELSEWHERE-8", SELL, 40, "OLD")
        replay.getHeader().setField(F.POSS_RESEND, "Y")  # the engine strips PossDupFlag
        assert F.send(replay, sid)
        # before, the first was booked at once (a bypass buy of 100)
        eventually(
            lambda: first.events("venue_report_replayed") or guard.position("L000"), what="read"
        )
        assert guard.position("L000") == 0 and not guard.armed
        assert len(first.events("drop_copy_held")) == 2  # read in order: both before it
        answer()
        eventually(lambda: guard.armed, what="armed after reconciliation")
        eventually(lambda: guard.position("L000") == -30, what="bypass fill booked")
        assert guard.remaining("reconciled:W1") == 300 and guard.halts() == {}
        assert second._dc_held == []
        (replayed,) = first.events("venue_report_replayed")
        assert replayed["data"]["exec_id"] == "DC-OLD"
        assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "DC-BY", "ELSEWHERE-7", SELL, 30), sid)
        assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "MARK", "MARK-1", SELL, 10, "MARK"), sid)
        eventually(lambda: guard.position("L000") == -40, what="a later report booked")
        assert guard.halts() == {}  # the one sent again before it: booked once
    finally:
        second.stop()


def test_a_fill_the_venue_resends_at_a_restart_is_not_booked_again_and_does_not_halt(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """W1 filled 100 while no gateway was connected: the venue resends that report
    (PossDupFlag) when the restarted gateway logs on, before the mass status answers.
    Before, it was booked as a fill of an unknown order and halted the node
    (`fill_mismatch`), on top of the mass status counting the fill in W1's leaves. It is
    recorded (`venue_report_replayed`), not applied, and does not halt; W1 is adopted
    with the venue's 200 leaves. A fill of an order nobody sent still halts."""
    first, second, guard, answer = restart_before_mass_status(
        rig_factory, monkeypatch, filled_while_down=100
    )
    try:
        # before, it halted the node as an unknown order's fill
        eventually(lambda: first.events("venue_report_replayed") or guard.halts(), what="read")
        assert guard.halts() == {}
        answer()
        eventually(lambda: guard.armed, what="armed after reconciliation")
        assert guard.halts() == {} and guard.position("L000") == 0
        assert guard.remaining("reconciled:W1") == 200
        # the venue may resend more than once (a slow logon asks again): each is recorded
        replayed = [e["data"] for e in first.events("venue_report_replayed")]
        assert {(d["clordid"], d["exec_type"]) for d in replayed} >= {("W1", "trade")}
        assert {d["clordid"] for d in replayed} == {"W1"}
        first.venue.stray_fill(first.gw_comp, "GHOST", "L000", BUY, 100)
        eventually(lambda: guard.halts(), what="halt")
        (halt,) = guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH and "GHOST" in halt.reason
    finally:
        second.stop()


def test_drop_copies_held_for_a_reconciliation_that_never_finished_are_booked_at_stop(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stops before the venue answers the mass status: a drop-copy fill held
    for reconciliation is never dropped with it. Which orders were the gateway's own was
    never learnt, so it is booked as the venue reports it, recorded
    `drop_copy_unresolved` and the node halts `fill_mismatch` (before, it was booked at
    once as a bypass fill, whether or not an adopted order's copy, without a halt)."""
    first, second, guard, _answer = restart_before_mass_status(rig_factory, monkeypatch)
    stopped = False
    try:
        sid = dc_sid(first)
        assert F.send(dc_fill(F.TRADE_CAPTURE_REPORT, "DC-BY", "ELSEWHERE-9", SELL, 30), sid)
        eventually(lambda: first.events("drop_copy_held") or guard.position("L000"), what="read")
        assert guard.position("L000") == 0
        second.stop()
        stopped = True
        assert guard.position("L000") == -30
        (halt,) = guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH and "reconciliation" in halt.reason
        (unresolved,) = first.events("drop_copy_unresolved")
        assert unresolved["data"]["venue_order_id"] == "ELSEWHERE-9"
    finally:
        if not stopped:
            second.stop()


def test_drop_copies_held_for_a_reconciliation_that_never_finishes_are_bounded(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every drop-copy report held for a start-up reconciliation that never came
    stayed in memory, without bound. Past `MAX_DC_HELD` (two here) the next is booked at
    once as the venue reports it, never dropped, and the node halts `fill_mismatch`
    naming the count; those held stay held (and are booked at the stop, as before)."""
    monkeypatch.setattr(gateway_module, "MAX_DC_HELD", 2, raising=False)
    first, second, guard, _answer = restart_before_mass_status(rig_factory, monkeypatch)
    stopped = False
    try:
        sid = dc_sid(first)
        for n in (1, 2):
            assert F.send(dc_fill(F.EXECUTION_REPORT, f"DC-H{n}", f"ELSEWHERE-{n}", SELL, 10), sid)
        eventually(lambda: len(first.events("drop_copy_held")) == 2, what="two held")
        assert guard.position("L000") == 0 and not guard.halts()
        assert F.send(dc_fill(F.EXECUTION_REPORT, "DC-H3", "ELSEWHERE-3", SELL, 30), sid)
        eventually(lambda: guard.halts(), what="halt")
        (halt,) = guard.halts().values()
        assert halt.code is RejectReason.FILL_MISMATCH and "with 2 reports held" in halt.reason
        assert guard.position("L000") == -30 and len(second._dc_held) == 2
        (unresolved,) = first.events("drop_copy_unresolved")
        assert unresolved["data"]["venue_order_id"] == "ELSEWHERE-3"
        second.stop()
        stopped = True
        assert guard.position("L000") == -50 and not second._dc_held
    finally:
        if not stopped:
            second.stop()


def test_an_exec_id_the_drop_copy_used_does_not_hide_a_fill_on_the_order_session(
    rig_factory: Callable[..., Rig],
) -> None:
    """A venue that numbers ExecIDs per session may give a bypass fill on the drop copy
    and a fill of the gateway's own order the same ExecID. Before, the order session's
    fill was dropped as a duplicate (`duplicate_exec`): a 10 buy the venue reports,
    never booked, no halt, and the order's leaves left at 100 in the Guard; and a trade
    cancel on the order session naming that ExecID would have taken back the bypass
    fill as the order's. The two are kept apart: the fill is booked, and its bust takes
    back the order's fill."""
    rig = rig_factory(drop_copy=True).start().ready()
    sid = dc_sid(rig)
    rest(rig, "A")
    order_id = rig.venue.find("A").order_id
    assert F.send(dc_fill(F.EXECUTION_REPORT, "EX-SAME", "ELSEWHERE-2", SELL, 30, "BY"), sid)
    eventually(lambda: rig.guard.position("L000") == -30, what="bypass fill booked")
    fill = [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "A"), (F.EXEC_ID, "EX-SAME"),
            (F.EXEC_TYPE, "F"), (F.ORD_STATUS, "1"), (F.SYMBOL, "L000"), (F.SIDE, BUY),
            (F.ORDER_QTY, "100"), (F.LEAVES_QTY, "90"), (F.CUM_QTY, "10"), (F.AVG_PX, "99"),
            (F.LAST_QTY, "10"), (F.LAST_PX, "99"), (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    venue_says(rig, fill)
    rig.oms.wait_report("A", "F")
    eventually(lambda: rig.guard.position("L000") == -20, what="own fill booked")
    assert rig.guard.remaining("OMS1:A") == 90 and rig.guard.halts() == {}
    assert not rig.events("duplicate_exec")
    bust = [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "A"), (F.EXEC_ID, "EX-BUST"),
            (F.EXEC_TYPE, "H"), (F.EXEC_REF_ID, "EX-SAME"), (F.ORD_STATUS, "0"),
            (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "100"), (F.LEAVES_QTY, "100"),
            (F.CUM_QTY, "0"), (F.AVG_PX, "0"), (F.LAST_QTY, "10"), (F.LAST_PX, "99"),
            (F.TRANSACT_TIME, F.now_utc())]  # fmt: skip
    venue_says(rig, bust)  # the order's own fill: taken back from the order, not the bypass
    eventually(lambda: rig.guard.position("L000") == -30, what="bust applied")
    assert rig.guard.remaining("OMS1:A") == 100 and rig.guard.halts() == {}


@pytest.mark.parametrize("exec_type", ["H", "G"])
def test_a_bust_or_correction_naming_another_orders_execution_halts(
    rig: Rig, exec_type: str
) -> None:
    """A trade cancel (or correction) reported for order B that names the ExecID of a
    fill of order A: before, A's fill was taken back (or corrected) as B's, B's filled
    quantity went to -100 (or 20) and nothing halted. An order's bust or correction
    takes back only its own executions; another is a picture the gateway cannot trust:
    nothing is taken back and the node halts `fill_mismatch`. Nor is it relayed or its
    OrdStatus and LeavesQty taken (before, B's client was told 20 filled): recorded
    `venue_report_unapplied`, as any report the gateway cannot apply exactly."""
    rest(rig, "A", qty=200)
    rest(rig, "B", qty=200)
    exec_id = rig.venue.execute("A", 100, 99.5)
    rig.oms.wait_report("A", "F")
    eventually(lambda: rig.guard.position("L000") == 100, what="A's fill")
    order_id = rig.venue.find("B").order_id
    venue_says(
        rig,
        [(F.ORDER_ID, order_id), (F.CL_ORD_ID, "B"), (F.EXEC_ID, "EX-WRONG"),
         (F.EXEC_TYPE, exec_type), (F.EXEC_REF_ID, exec_id), (F.ORD_STATUS, "1"),
         (F.SYMBOL, "L000"), (F.SIDE, BUY), (F.ORDER_QTY, "200"), (F.LEAVES_QTY, "180"),
         (F.CUM_QTY, "20"), (F.AVG_PX, "99.5"), (F.LAST_QTY, "20"), (F.LAST_PX, "99.5"),
         (F.TRANSACT_TIME, F.now_utc())],
    )  # fmt: skip
    rig.venue.misreport("B", "0", [(F.EXEC_ID, "MARK")])  # after it on the same session
    rig.oms.wait_for(lambda r: r.get(F.EXEC_ID) == "MARK", what="marker")
    (halt,) = rig.guard.halts().values()
    assert halt.code is RejectReason.FILL_MISMATCH and exec_id in halt.reason
    assert rig.guard.position("L000") == 100
    assert rig.gateway.book.orders["B"].cum == 0 and rig.gateway.book.orders["A"].cum == 100
    # not relayed (B's client was told 20 filled, 180 left) nor taken into the book
    assert not [r for r in rig.oms.received if r.get(F.EXEC_ID) == "EX-WRONG"]
    assert [e["data"]["exec_id"] for e in rig.events("venue_report_unapplied")] == ["EX-WRONG"]
    assert (rig.gateway.book.orders["B"].status, rig.gateway.book.orders["B"].leaves) == ("0", 200)


def test_a_symbol_kill_typed_in_another_case_cancels_the_symbols_orders(rig: Rig) -> None:
    """The Guard halts `L000` on a kill of `l000` (a symbol matches in any case); the
    gateway's cancels of the scope's working orders match the same way, one cancel per
    order (a mass cancel would name the symbol as typed, which the venue may not know).
    Before, the orders were left working at the venue."""
    rest(rig, "S1", qty=100)
    assert rig.gateway.cancel_scope(Scope.SYMBOL, "l000", "x") == ["OMS1:S1"]
    assert rig.gateway.cancel_scope(Scope.STRATEGY_SYMBOL, "OMS2/l000", "x") == []
    rig.oms.wait_report("S1", "4")
    eventually(lambda: not rig.gateway.still_working(Scope.FLEET, "fleet"), what="drained")
    assert rig.guard.working_qty("L000") == (0, 0) and not rig.venue.working()
