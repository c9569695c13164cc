"""Reading back the order ids a node accepted (`accepted_ids`), for a restarted node."""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.audit import FlightRecorder
from knightwatch.audit import read as audit_read
from knightwatch.audit.read import UnreadableRecord, accepted_ids
from knightwatch.clock import SimClock
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.order import Order, Side

T0 = 1_343_828_400_000_000_000
S = 1_000_000_000


def _order(oid: str, qty: int = 10) -> Order:
    return Order(oid, "s1", "IBM", Side.BUY, qty, 100.0, None)


def _node_file(path: Path, clock: SimClock) -> None:
    """What a node's Guard records: accepts, blocks, a replace, a session start."""
    rec = FlightRecorder(path, clock=clock)
    g = Guard(Limits.off(max_order_qty=100), node="n1", clock=clock, recorder=rec)
    g.arm("test")
    g.on_price("IBM", 100.0)
    assert g.check(_order("a1")).accepted
    clock.advance(S)
    assert not g.check(_order("big", qty=1000)).accepted  # blocked: never used
    assert not g.check(_order("a1")).accepted  # the duplicate itself is a block
    clock.advance(S)
    assert g.check(_order("a2")).accepted
    assert g.check_replace("a2", _order("a2r", qty=5)).accepted  # the replace's new id
    clock.advance(S)
    g.note("memo", accepted=True, order_id="not-a-decision")  # an event says nothing
    rec.close()


def _read(path: Path, **kw: int | None) -> list[tuple[str, int]]:
    with path.open("rb") as f:
        got = accepted_ids(f, path, **kw)
    return list(zip(got.ids, got.ts, strict=True))


def test_the_ids_of_accepted_decisions_come_back_in_order_with_their_times(
    tmp_path: Path,
) -> None:
    path = tmp_path / "n1.jsonl"
    _node_file(path, SimClock(T0))
    assert _read(path) == [("a1", T0), ("a2", T0 + 2 * S), ("a2r", T0 + 2 * S)]
    assert _read(path, since=T0) == [("a2", T0 + 2 * S), ("a2r", T0 + 2 * S)]


def test_ids_before_the_last_session_start_are_not_taken_back(tmp_path: Path) -> None:
    clock = SimClock(T0)
    path = tmp_path / "n1.jsonl"
    rec = FlightRecorder(path, clock=clock)
    g = Guard(Limits.off(duplicate_id_window_s=None), node="n1", clock=clock, recorder=rec)
    g.arm("test")
    g.on_price("IBM", 100.0)
    assert g.check(_order("s1")).accepted
    g.start_session("ops")
    assert g.check(_order("s2")).accepted
    rec.close()
    assert _read(path) == [("s2", T0)]


def test_lines_across_many_chunks_are_read_whole_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "n1.jsonl"
    _node_file(path, SimClock(T0))
    monkeypatch.setattr(audit_read, "_ID_CHUNK", 97)  # every line straddles a chunk
    assert [oid for oid, _ in _read(path)] == ["a1", "a2", "a2r"]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines) + b'{"seq":1,"kind":"decision","accepted":"yes"}\n')
    with pytest.raises(UnreadableRecord, match=rf": line {len(lines) + 1}: a decision whose"):
        _read(path)


def test_an_adopted_orders_id_comes_back_even_after_it_ended(tmp_path: Path) -> None:
    """An order a gateway took over at a start-up (`Guard.adopt`) was never decided here,
    yet its id is used: after it ended and the node restarted again, it is still taken
    back, as an accepted one's is."""
    clock = SimClock(T0)
    path = tmp_path / "n1.jsonl"
    rec = FlightRecorder(path, clock=clock)
    g = Guard(Limits.off(), node="n1", clock=clock, recorder=rec)
    g.adopt(_order("venue-held"), remaining=10)
    clock.advance(S)
    g.on_cancel("venue-held")  # ended before the next restart
    g.arm("test")
    g.on_price("IBM", 100.0)
    assert g.check(_order("a1")).accepted
    rec.close()
    assert _read(path) == [("venue-held", T0), ("a1", T0 + S)]
    assert _read(path, since=T0) == [("a1", T0 + S)]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b"not json", "not a record"),
        (b"", "not a record"),  # a blank line
        (b'{"kind":"decision"} {"kind":"decision"}', "not a record"),  # two on one line
        (b'{"ts":1,"kind":"decision","order_id":"x","accepted":1}', "verdict is not true"),
        (b'{"ts":1,"kind":"decision","order_id":7,"accepted":true}', "without its order id"),
        (b'{"ts":"1","kind":"decision","order_id":"x","accepted":true}', "without its order"),
        (b'{"ts":1,"kind":null}', "without its kind"),
        (b'{"ts":1,"kind":"adopt","data":{"order_id":null}}', "adopt event without"),
        (b'{"ts":1.5,"kind":"adopt","data":{"order_id":"x"}}', "adopt event without"),
    ],
)
def test_a_line_that_could_hide_a_used_id_is_named_not_skipped(
    bad: bytes, why: str, tmp_path: Path
) -> None:
    path = tmp_path / "n1.jsonl"
    _node_file(path, SimClock(T0))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + bad + b"\n" + b"".join(lines[2:]))
    with pytest.raises(UnreadableRecord) as err:
        _read(path)
    assert str(err.value).startswith(f"{path}: line 3: ")
    assert why in str(err.value) and "\n" not in str(err.value)


def test_a_line_longer_than_any_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "n1.jsonl"
    """Refused once it is longer than a read (never held whole: a hostile file without
    newlines cannot exhaust memory)."""
    path.write_bytes(b'{"kind":"x"}\n' + b"x" * (audit_read._ID_CHUNK + 2) + b"\n")
    with pytest.raises(UnreadableRecord, match=r": line 2: longer than"):
        _read(path)


def test_the_held_file_is_read_up_to_where_the_recorder_found_its_end(tmp_path: Path) -> None:
    """Through the recorder that reopened it: the torn tail it cut is not read, the zero
    bytes allocated after the data are not read, nor what it appends."""
    clock = SimClock(T0)
    path = tmp_path / "n1.jsonl"
    _node_file(path, clock)
    with path.open("ab") as f:
        f.write(b'{"seq":99,"ts":1,"kind":"deci')  # a crash cut the last record short
    rec = FlightRecorder(path, clock=clock)
    try:
        with rec.reader() as f:
            got = accepted_ids(f, path, end=rec.opened_at)
    finally:
        rec.close()
    assert got.ids == ["a1", "a2", "a2r"]
