"""explain_order: the decision, its context, its fills and the control actions before it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knightwatch.audit import FlightRecorder, OrderNotFound, explain_order, verify_file
from knightwatch.audit.record import AuditContext
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason
from knightwatch.order import Order, Side

from .conftest import WriteFile
from .helpers import CTX, RULES, order

HALTED = Decision(False, RejectReason.HALTED, "strategy smars is HALTED (drill by ops)")


def build(path: Path, clock: SimClock) -> None:
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event("arm", CTX, actor="ops")
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        clock.advance(1_000)
        rec.record_event("fill", CTX, order_id="o1", symbol="AAPL", qty=60, price=101.2)
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="drill", actor="ops",
        )  # fmt: skip
        rec.record_event(
            "halt", CTX, scope="strategy", key="other", state="HALTED", code="halted",
            reason="x", actor="ops",
        )  # fmt: skip
        rec.record_event(
            "halt", CTX, scope="symbol", key="MSFT", state="HALTED", code="halted",
            reason="x", actor="ops",
        )  # fmt: skip
        rec.record_event(
            "halt", CTX, scope="strategy_symbol", key="smars/AAPL", state="HALTED", code="halted",
            reason="t", actor="ops",
        )  # fmt: skip
        rec.record_decision(order(2), HALTED, CTX, ("trading_state",))
        rec.record_event("resume", CTX, scope="strategy", key="smars", reason="ok", actor="ops")
        rec.record_event("fill", CTX, order_id="o1", symbol="AAPL", qty=40, price=101.3)
        rec.record_event("fill", CTX, order_id="o11", symbol="AAPL", qty=1, price=1.0)


def test_accepted_order_with_its_fills(audit_path: Path, clock: SimClock) -> None:
    build(audit_path, clock)
    exp = explain_order(audit_path, "o1")
    d = exp.decision
    assert d.accepted and d.reason == "ok" and d.rules == RULES
    assert (d.node, d.release_id, d.flag_snapshot_id, d.limits_version) == (
        "n1",
        "rel-7",
        "snap-3",
        "v2",
    )
    assert [f.data["qty"] for f in exp.fills] == [60, 40]
    assert [c.kind for c in exp.controls] == ["arm"]


def test_blocked_order_shows_the_halts_that_applied(audit_path: Path, clock: SimClock) -> None:
    build(audit_path, clock)
    exp = explain_order(audit_path, "o2")
    assert not exp.decision.accepted and exp.decision.reason == "halted"
    assert exp.fills == ()
    keys = [(c.kind, c.data.get("key")) for c in exp.controls]
    assert keys == [("arm", None), ("halt", "smars"), ("halt", "smars/AAPL")]


def test_unknown_order_is_a_clear_error(audit_path: Path, clock: SimClock) -> None:
    build(audit_path, clock)
    with pytest.raises(OrderNotFound, match="'o404': no decision recorded"):
        explain_order(audit_path, "o404")


def test_duplicate_ids_return_every_decision(audit_path: Path, clock: SimClock) -> None:
    dup = Decision(False, RejectReason.DUPLICATE_ORDER_ID, "order id o1 already seen")
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.record_decision(order(1), dup, AuditContext(node="n1"), ("validity",))
    exp = explain_order(audit_path, "o1")
    assert [d.reason for d in exp.decisions] == ["ok", "duplicate_order_id"]
    assert exp.decision.reason == "duplicate_order_id"


def test_every_decision_of_a_reused_id_carries_its_line(audit_path: Path, clock: SimClock) -> None:
    """A reused id's decisions are each named by their line (the chain check and `audit
    verify` speak in lines), in file order, so the later ones can be found and read."""
    dup = Decision(False, RejectReason.DUPLICATE_ORDER_ID, "order id o1 already seen")
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.record_event("fill", CTX, order_id="o1", qty=100, price=101.0)
        rec.record_decision(order(2), ACCEPTED, CTX, RULES)
        rec.record_decision(order(1), dup, CTX, ("validity",))
    exp = explain_order(audit_path, "o1")
    assert [(d.seq, d.reason) for d in exp.decisions] == [(0, "ok"), (3, "duplicate_order_id")]
    assert exp.decision_lines == (1, 4)


def test_broken_lines_do_not_stop_the_explanation(audit_path: Path, clock: SimClock) -> None:
    build(audit_path, clock)
    with audit_path.open("ab") as f:
        f.write(b'not json but mentions "o1"\n')
        f.write(b'\x80{"order_id":"o1"}\n')
    assert explain_order(audit_path, "o1").decision.accepted


def test_why_verifies_the_chain_through_the_records_it_uses(
    audit_path: Path, clock: SimClock
) -> None:
    from typer.testing import CliRunner

    from knightwatch.cli.app import app

    build(audit_path, clock)
    exp = explain_order(audit_path, "o2")
    assert exp.chain.intact and exp.chain.lines == 12  # through the seal that covers o2
    ok = CliRunner().invoke(app, ["audit", "why", "o2", str(audit_path)])
    assert ok.exit_code == 0 and "chain verified" in ok.output
    # An edit to the halt that explains o2 (same length, so nothing else moves):
    # reported as fact before; now the answer says the chain is broken and exits 1.
    lines = audit_path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"reason":"drill"', b'"reason":"dril!"')
    audit_path.write_bytes(b"".join(lines))
    exp = explain_order(audit_path, "o2")
    assert not exp.chain.intact
    (problem,) = exp.chain.problems  # the seal names its batch, lines 1-11
    assert problem.kind == "edited" and problem.line == 12 and "lines 1-11" in problem.detail
    bad = CliRunner().invoke(app, ["audit", "why", "o2", str(audit_path)])
    assert bad.exit_code == 1 and "CHAIN BROKEN" in bad.output


def test_a_deeply_nested_line_is_a_malformed_record_not_a_crash(audit_path: Path) -> None:
    from knightwatch.audit import verify_file

    audit_path.write_bytes(b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n" + b"x" * 3_000_000)
    report = verify_file(audit_path)
    assert [p.kind for p in report.problems] == ["malformed", "malformed"]
    assert "nested too deeply" in report.problems[0].detail
    assert "longer than" in report.problems[1].detail


def test_each_decision_names_the_seal_that_covers_it(audit_path: Path, clock: SimClock) -> None:
    build(audit_path, clock)
    exp = explain_order(audit_path, "o2")
    seal = exp.seals[exp.decision.seq]
    assert seal.kind == "seal" and seal.seq > exp.decision.seq
    assert seal.hash == verify_file(audit_path).head


def test_a_decision_after_the_last_seal_is_named_unsealed(
    audit_path: Path, clock: SimClock
) -> None:
    build(audit_path, clock)
    lines = audit_path.read_bytes().splitlines(keepends=True)
    audit_path.write_bytes(b"".join(lines[:-1]))  # as a crash before the seal leaves it
    exp = explain_order(audit_path, "o2")
    assert exp.seals == {}


def test_a_halt_recorded_after_the_orders_it_blocked_still_explains_them(
    audit_path: Path, clock: SimClock
) -> None:
    """A node confirms a kill before it records it: orders blocked meanwhile come first in
    the file, and the halt's own time (`latched_ns`) says it was already in force."""
    with FlightRecorder(audit_path, clock=clock) as rec:
        latched = clock.time_ns()
        clock.advance(1_000)
        rec.record_decision(order(3), HALTED, CTX, ("trading_state",))
        clock.advance(1_000)
        later = clock.time_ns()
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="kill", actor="ops", latched_ns=latched,
        )  # fmt: skip
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="next", actor="ops", latched_ns=later,
        )  # fmt: skip
    exp = explain_order(audit_path, "o3")
    assert [c.data["reason"] for c in exp.controls] == ["kill"]
    assert exp.chain.intact


def _decision_then_fill(path: Path, clock: SimClock) -> None:
    """o1's decision sealed in the first batch, its fill in the second."""
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.flush()
        rec.record_event("fill", CTX, order_id="o1", symbol="AAPL", qty=60, price=101.2)


def test_a_damaged_fill_in_a_later_batch_is_not_left_out_of_a_verified_answer(
    audit_path: Path, clock: SimClock
) -> None:
    """The fill line no longer decodes: `why` said "fills: none recorded" and "chain
    verified" (exit 0), checking only through the decision's seal. The line names the
    order, so the chain check now reaches it and names it."""
    from typer.testing import CliRunner

    from knightwatch.cli.app import app

    _decision_then_fill(audit_path, clock)
    audit_path.write_bytes(audit_path.read_bytes().replace(b'"qty":60,', b'"qty":6O,'))
    exp = explain_order(audit_path, "o1")
    assert exp.fills == ()
    assert not exp.chain.intact
    first = exp.chain.problems[0]
    assert (first.kind, first.line) == ("not_json", 3)
    out = CliRunner().invoke(app, ["audit", "why", "o1", str(audit_path)])
    assert out.exit_code == 1 and "CHAIN BROKEN" in out.output and "line 3" in out.output


def test_an_order_whose_only_decision_is_damaged_names_the_line(
    audit_path: Path, clock: SimClock
) -> None:
    _decision_then_fill(audit_path, clock)
    audit_path.write_bytes(
        audit_path.read_bytes().replace(b'"accepted":true', b'"accepted":tru', 1)
    )
    with pytest.raises(OrderNotFound, match=r"line\(s\) 1 name it but cannot be decoded"):
        explain_order(audit_path, "o1")


def test_an_order_id_that_every_seal_line_contains_is_still_covered_by_its_seal(
    audit_path: Path, clock: SimClock
) -> None:
    """The id "hash" is in every seal line, which took the record path and was skipped:
    the decision read as unsealed and the chain as broken."""
    odd = Order("hash", "smars", "AAPL", Side.BUY, 100, 101.25, "p1")
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(odd, ACCEPTED, CTX, RULES)
        rec.record_event("fill", CTX, order_id="o9", symbol="AAPL", qty=1, price=1.0)
    exp = explain_order(audit_path, "hash")
    assert exp.chain.intact, exp.chain.problems
    assert exp.seals[exp.decision.seq].hash == verify_file(audit_path).head


def test_a_damaged_halt_after_the_decision_is_not_left_out_of_a_verified_answer(
    audit_path: Path, clock: SimClock
) -> None:
    """A halt recorded after the order it blocked (latched before it) no longer decodes:
    the answer listed no halt and said the chain was verified, checking only through the
    decision's seal. The line is a control action, so the chain check now reaches it."""
    with FlightRecorder(audit_path, clock=clock) as rec:
        latched = clock.time_ns()
        clock.advance(1_000)
        rec.record_decision(order(3), HALTED, CTX, ("trading_state",))
        rec.flush()
        rec.record_event(
            "halt", CTX, scope="strategy", key="smars", state="HALTED", code="halted",
            reason="kill", actor="ops", latched_ns=latched,
        )  # fmt: skip
    audit_path.write_bytes(audit_path.read_bytes().replace(b'"reason":"kill"', b'"reason":kill"'))
    exp = explain_order(audit_path, "o3")
    assert exp.controls == ()
    assert not exp.chain.intact
    first = exp.chain.problems[0]
    assert (first.kind, first.line) == ("not_json", 3)


def _forged(line: bytes, **changes: object) -> bytes:
    """A copy of a record line with some fields changed, as an editor of the file writes."""
    rec = json.loads(line)
    rec.update(changes)
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("where", ["appended after the last seal", "inside a later batch"])
@pytest.mark.parametrize("forged", ["decision", "fill"])
def test_a_forged_line_reusing_a_sealed_records_seq_is_never_verified(
    write_file: WriteFile, audit_path: Path, where: str, forged: str
) -> None:
    """The seal covering a record was looked up by its seq: a line forged with the seq of
    a sealed record the answer uses (the order's own decision) was shown as sealed by that
    record's seal and the chain verified only through it (`why` exit 0, "chain verified"),
    the forged line never checked."""
    lines = write_file(30, 8)
    i = next(k for k, raw in enumerate(lines) if b'"order_id":"o4",' in raw)
    if forged == "decision":
        fake = _forged(lines[i], accepted=True, reason="ok", detail="forged")
    else:
        fake = _forged(lines[i], kind="fill", data={"order_id": "o4", "qty": 100, "price": 1.0})
    at = len(lines) if where.startswith("appended") else len(lines) - 3
    audit_path.write_bytes(b"".join([*lines[:at], fake, *lines[at:]]))
    exp = explain_order(audit_path, "o4")
    assert exp.chain.lines >= at + 1, exp.chain  # verified through the forged line
    assert not exp.chain.intact
    if forged == "decision":
        assert exp.decision.detail == "forged" and exp.decision_lines[-1] == at + 1
        if where.startswith("appended"):  # after the last seal: never shown as sealed
            assert exp.decision_seals[-1] is None and exp.decision.seq not in exp.seals
    else:
        assert [f.data["price"] for f in exp.fills] == [1.0]
