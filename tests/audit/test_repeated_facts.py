"""The recorder reads a context, a verdict and a rule list once per object, not once per
record: every record must still carry the facts of the objects it was handed."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import AuditContext, DecisionRecord, FlightRecorder, decode_record
from knightwatch.audit.log import is_seal
from knightwatch.audit.record import DecisionLine
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED, Decision, RejectReason

from .helpers import order

CTXS = (
    AuditContext(node="n1", release_id="rel-1", flag_snapshot_id="s-1", limits_version="v1"),
    AuditContext(node="n1", release_id="rel-2", flag_snapshot_id=None, limits_version="v1"),
    AuditContext(node="n2"),
)
VERDICTS = (
    ACCEPTED,
    Decision(False, RejectReason.MAX_ORDER_QTY, "qty 5 > max_order_qty 4"),
    Decision(False, RejectReason.HALTED, "fleet halted"),
)
RULE_LISTS = (("validity",), ("validity", "max_order_qty"), ("trading_state", "armed"))


def records(rec: FlightRecorder) -> list[DecisionRecord]:
    assert rec.flush()
    out = [decode_record(line) for line in rec.lines if not is_seal(line)]
    assert all(isinstance(r, DecisionRecord) for r in out)
    return out  # type: ignore[return-value]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), max_size=30))
def test_each_record_carries_the_context_verdict_and_rules_it_was_handed(
    picks: list[tuple[int, int, int]],
) -> None:
    rec = FlightRecorder(None, clock=SimClock())
    for i, (c, v, r) in enumerate(picks):
        # equal but distinct tuples too: the cache must never confuse equal for same
        rules = RULE_LISTS[r] if i % 2 else tuple(list(RULE_LISTS[r]))
        rec.record_decision(order(i), VERDICTS[v], CTXS[c], rules)
    got = records(rec)
    assert len(got) == len(picks)
    for rec_, (c, v, r) in zip(got, picks, strict=True):
        ctx, verdict = CTXS[c], VERDICTS[v]
        assert (rec_.node, rec_.release_id, rec_.flag_snapshot_id, rec_.limits_version) == (
            ctx.node,
            ctx.release_id,
            ctx.flag_snapshot_id,
            ctx.limits_version,
        )
        assert (rec_.accepted, rec_.reason, rec_.detail) == (
            verdict.accepted,
            verdict.reason,
            verdict.detail,
        )
        assert rec_.rules == RULE_LISTS[r]


@dataclass
class LooseContext:
    """A context that is not the frozen AuditContext: it can change between records."""

    node: str
    release_id: str | None = None
    flag_snapshot_id: str | None = None
    limits_version: str = ""


@dataclass
class LooseVerdict:
    accepted: bool
    reason: str
    detail: str


def test_an_object_that_can_change_is_read_again_for_every_record() -> None:
    rec = FlightRecorder(None, clock=SimClock())
    ctx = LooseContext("n1", limits_version="v1")
    verdict = LooseVerdict(True, "ok", "all checks passed")
    rec.record_decision(order(1), verdict, ctx, ("validity",))  # type: ignore[arg-type]
    ctx.limits_version = "v2"
    verdict.accepted, verdict.reason, verdict.detail = False, "halted", "fleet halted"
    rec.record_decision(order(2), verdict, ctx, ("validity",))  # type: ignore[arg-type]
    first, second = records(rec)
    assert (first.limits_version, first.accepted, first.reason) == ("v1", True, "ok")
    assert (second.limits_version, second.accepted, second.reason) == ("v2", False, "halted")
    assert second.detail == "fleet halted"


def test_a_context_that_cannot_be_read_is_recorded_as_text_and_the_next_one_is_whole() -> None:
    rec = FlightRecorder(None, clock=SimClock())
    good = CTXS[0]
    rec.record_decision(order(1), ACCEPTED, good, RULE_LISTS[0])
    rec.record_decision(order(2), ACCEPTED, object(), RULE_LISTS[0])  # type: ignore[arg-type]
    rec.record_decision(order(3), ACCEPTED, good, RULE_LISTS[0])
    first, odd, third = records(rec)
    assert first.release_id == third.release_id == "rel-1"
    assert odd.node.startswith("<object object") and odd.release_id is None
    assert [r.order_id for r in (first, odd, third)] == ["o1", "o2", "o3"]


TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # quotes, backslashes, controls


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.builds(AuditContext, node=TEXT, release_id=st.none() | TEXT), min_size=1, max_size=3
    ),
    st.lists(
        st.builds(Decision, st.booleans(), st.sampled_from(RejectReason), TEXT),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), max_size=25),
)
def test_a_line_whose_facts_repeat_is_byte_for_byte_the_full_line(
    ctxs: list[AuditContext], verdicts: list[Decision], picks: list[tuple[int, int, int]]
) -> None:
    # The repeat path splices the context's and the verdict's runs in pre-encoded: what it
    # writes must be exactly what encoding every field of the line would write.
    rec = FlightRecorder(None, clock=SimClock())
    handed = []
    for i, (c, v, r) in enumerate(picks):
        ctx, verdict, o = ctxs[c % len(ctxs)], verdicts[v % len(verdicts)], order(i)
        rec.record_decision(o, verdict, ctx, RULE_LISTS[r])
        handed.append((o, verdict, ctx, RULE_LISTS[r]))
    assert rec.flush()
    lines = [line.removesuffix(b"\n") for line in rec.lines if not is_seal(line)]
    assert len(lines) == len(picks)
    enc = msgspec.json.Encoder()
    for seq, (line, (o, v, c, rules)) in enumerate(zip(lines, handed, strict=True)):
        ts = decode_record(line).ts
        full = DecisionLine(
            seq, ts, "decision", c.node, c.release_id, c.flag_snapshot_id, c.limits_version,
            o.id, o.strategy, o.symbol, o.side, o.qty, o.price, o.parent_id,
            v.accepted, v.reason, v.detail, msgspec.Raw(enc.encode(rules)),
        )  # fmt: skip
        assert line == enc.encode(full)
