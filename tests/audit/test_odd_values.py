"""Whatever the Guard was handed is recorded and stays readable, never crashing a flush."""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.audit import DecisionRecord, FlightRecorder, decode_record, verify_lines
from knightwatch.audit.log import is_seal
from knightwatch.clock import SimClock
from knightwatch.decision import Decision, RejectReason
from knightwatch.order import Order, Side

from .helpers import CTX, RULES, order

BAD = Decision(False, RejectReason.INVALID_ORDER, "order could not be checked")


def readable(rec: FlightRecorder) -> list[DecisionRecord]:
    assert rec.flush()
    assert verify_lines((line + b"\n" for line in rec.lines), "m").intact
    out = [decode_record(line) for line in rec.lines if not is_seal(line)]
    assert all(isinstance(r, DecisionRecord) for r in out)
    return out  # type: ignore[return-value]


def test_order_that_bypassed_validation_is_recorded_as_text(clock: SimClock) -> None:
    raw = msgspec.convert(
        {"id": "x1", "strategy": "s", "symbol": "X", "side": "buy", "qty": 5},
        Order,
    )
    msgspec.structs.force_setattr(raw, "qty", 2.5)
    msgspec.structs.force_setattr(raw, "price", "cheap")
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(raw, BAD, CTX, ("validity",))
    rec.record_decision(order(2), BAD, CTX, RULES)  # a good record in the same batch
    (odd, good) = readable(rec)
    assert (odd.order_id, odd.qty, odd.price) == ("x1", 0, None)
    assert "2.5" in odd.detail and "'cheap'" in odd.detail and odd.reason == "invalid_order"
    assert good.order_id == "o2" and good.qty == 100


def test_object_that_is_not_an_order_is_recorded(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(None, BAD, CTX, ("validity",))  # type: ignore[arg-type]
    (odd,) = readable(rec)
    assert odd.order_id == "None" and not odd.accepted and odd.rules == ("validity",)


def test_lone_surrogate_in_an_id_is_recorded(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_decision(Order("a\ud800", "s", "X", Side.SELL, 1, 2.0), BAD, CTX, RULES)
    (odd,) = readable(rec)
    assert odd.order_id == repr("a\ud800")


def test_huge_quantity_is_kept_exactly(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    big = Order("big", "s", "X", Side.BUY, 1, 1.0)
    msgspec.structs.force_setattr(big, "qty", 10**30)  # beyond MAX_QTY: only around validation
    rec.record_decision(big, BAD, CTX, RULES)
    (rec0,) = readable(rec)
    assert rec0.qty == 10**30


def test_event_fields_must_be_scalars(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    with pytest.raises(TypeError, match=r"halt\.who: must be str, int, float, bool or None"):
        rec.record_event("halt", CTX, who=["a"])
    with pytest.raises(ValueError, match="kind"):
        rec.record_event("decision", CTX)
    with pytest.raises(ValueError, match="kind"):
        rec.record_event("", CTX)
    with pytest.raises(ValueError, match="kind"):
        rec.record_event("seal", CTX)
    assert rec.pending == 0


def test_event_with_surrogate_text_is_recorded(clock: SimClock) -> None:
    rec = FlightRecorder(None, clock=clock)
    rec.record_event("halt", CTX, reason="bad\udcff", actor="ops")
    assert rec.flush()
    (line, _seal) = rec.lines
    assert msgspec.json.decode(line)["data"] == {"reason": repr("bad\udcff"), "actor": "ops"}
