"""Why did this order happen, or why was it blocked? The answer, from the file.

For an order id: its decision record(s) (verdict, reason code, detail, node,
release, flag snapshot, limits version, rules evaluated, time), the fills
recorded for it, what else happened to it (cancel, venue reject, expiry,
replace, bust; for FIX flow the session, MsgSeqNum and raw-message hash of
each message that carried it), and the control actions (halt, resume, arm,
disarm) that preceded the decision and could have applied to it (a halt
counts from when it was latched, which may be before its record).

An answer read from an edited file would be reported as fact, so the file is
verified from the first line through the seal that covers the last record the
answer uses, and the explanation carries that verification (`chain`). A line
that names the order but cannot be decoded (a fill or decision damaged), or a
control action that cannot be (a halt recorded after the decision may have been
latched before it), counts as used: the chain check reaches the seal after it, and the
line is named even where the chain finds nothing wrong with it, never a "verified"
answer without it.

Which seal covers a record is found by the record's line, never its seq: a file can be
edited to hold two lines with one seq, and a forged decision appended after the last
seal with the seq of a sealed one was shown as sealed by that one's seal, the chain
verified only through it (exit 0, "chain verified"), the forgery as the latest verdict.

What the answer leaves out is a claim about the rest of the file: no fill, no later
decision, no event after its last record. A line there edited so that it no longer names
the order (a fill's id changed by one character, or written with a JSON escape) is not
found, so the whole file is verified too, in the same pass as the answer's part
(`Explanation.file`): such an edit was answered "fills: none recorded" beside "chain
verified" (exit 0), the check ending at the decision's seal.
"""

from __future__ import annotations

import os

import msgspec

from knightwatch.audit.chain import Seal
from knightwatch.audit.errors import OrderNotFound
from knightwatch.audit.read import data_end, decode_record, read_lines
from knightwatch.audit.record import DecisionRecord, EventRecord
from knightwatch.audit.verify import (
    Problem,
    ProblemKind,
    VerifyReport,
    ends_cut,
    verify_through,
)
from knightwatch.inputs import UNDECODABLE

FILL = "fill"
ORDER_EVENTS = frozenset(
    {
        "fix_in",
        "fix_resend",
        "cancel",
        "reject",
        "expire",
        "restate",
        "bust",
        "correct",
        "replace",
        "replace_ack",
        "replace_reject",
        "adopt",
    }
)
"""Events that name an order id: its messages and its life after the decision."""
CONTROL_KINDS = frozenset({"halt", "resume", "arm", "disarm"})
_CONTROL_MARKERS = tuple(b'"kind":"%s"' % k.encode() for k in sorted(CONTROL_KINDS))
_SEAL_MARKER = b'"kind":"seal"'


class Explanation(msgspec.Struct, frozen=True):
    order_id: str
    decisions: tuple[DecisionRecord, ...]
    fills: tuple[EventRecord, ...]
    controls: tuple[EventRecord, ...]
    """Control actions before the last decision that name its fleet, node, strategy or symbol."""
    chain: VerifyReport
    """The chain verified from line 1 through the seal covering the last record used here."""
    seals: dict[int, Seal] = {}
    """The seal covering each decision, by the decision's seq (absent: not sealed yet)."""
    events: tuple[EventRecord, ...] = ()
    """Its messages (FIX provenance) and what happened to it besides fills, in order."""
    decision_lines: tuple[int, ...] = ()
    """The file line of each decision in `decisions` (a reused id has several, in file order)."""
    decision_seals: tuple[Seal | None, ...] = ()
    """The seal covering each decision in `decisions`, found by its line (None: not sealed);
    `seals` is keyed by seq, which two lines of an edited file can share."""
    file: VerifyReport | None = None
    """The whole file verified (`chain` is its part through the records used): a problem
    after them may be a record of this order (a fill, a later decision) altered so that it
    no longer names it, which no search for the id can find."""

    @property
    def decision(self) -> DecisionRecord:
        """The latest decision (a re-sent duplicate id has more than one)."""
        return self.decisions[-1]


def explain_order(path: str | os.PathLike[str], order_id: str) -> Explanation:
    """Collect what the file says about `order_id`; raises OrderNotFound if it has no
    decision (an id that is not text, with a lone surrogate such as a command line's
    non-UTF-8 byte, is in no record: records are UTF-8)."""
    try:
        needle = msgspec.json.encode(order_id)
    except UnicodeEncodeError:
        raise OrderNotFound(
            f"order {order_id!r}: no decision recorded in {os.fspath(path)}: the id is not "
            "UTF-8 text, which every record is"
        ) from None
    scan = _Scan(order_id, needle)
    with open(path, "rb") as f:
        # to the data's end, as `verify_file` reads: a crashed recorder's file ends in
        # allocated zeros, and a sparse one (cut to 64 GiB) was read through its hole
        end = data_end(f)
        f.seek(0)
        for lineno, line in enumerate(read_lines(f, end=end), start=1):
            scan.take(lineno, line)
    decisions, decision_lines, broken = scan.decisions, scan.decision_lines, scan.broken
    fills, controls, used, sealed_by = scan.fills, scan.controls, scan.used, scan.sealed_by
    events = scan.events
    if not decisions:
        unread = (
            f"; line(s) {', '.join(map(str, broken[:10]))} name it but cannot be decoded "
            "(run `knightwatch audit verify`)"
            if broken
            else ""
        )
        raise OrderNotFound(
            f"order {order_id!r}: no decision recorded in {os.fspath(path)}{unread}"
        )
    last = decisions[-1]
    relevant = tuple(c for _, c in controls if _before(c, last) and _applies(c, last))
    used += [(n, c.seq) for n, c in controls if c in relevant]
    # verify through the seal that covers the last record used (or that record, if
    # unsealed), and the rest of the file in the same pass
    through = max(sealed_by[n][0] if n in sealed_by else n for n, _ in used)
    with open(path, "rb") as f:
        end = data_end(f)
        cut = ends_cut(f, end)
        f.seek(0)
        chain, whole = verify_through(read_lines(f, end=end), os.fspath(path), through, ended=cut)
    chain, whole = _unread_named(chain, scan.unread), _unread_named(whole, scan.unread)
    decision_seals = tuple(sealed_by[n][1] if n in sealed_by else None for n in decision_lines)
    covered: dict[int, Seal] = {}
    for d, covering in zip(decisions, decision_seals, strict=True):
        if covering is None:  # a later line with this seq is not sealed: never shown sealed
            covered.pop(d.seq, None)
        else:
            covered[d.seq] = covering
    return Explanation(
        order_id,
        tuple(decisions),
        tuple(fills),
        relevant,
        chain,
        covered,
        tuple(events),
        tuple(decision_lines),
        decision_seals,
        whole,
    )


class _Scan:
    """What one read of the file says about an order: its records, and each one's seal."""

    def __init__(self, order_id: str, needle: bytes) -> None:
        self.order_id = order_id
        self.needle = needle
        self.decisions: list[DecisionRecord] = []
        self.decision_lines: list[int] = []
        self.fills: list[EventRecord] = []
        self.controls: list[tuple[int, EventRecord]] = []
        self.unsealed: list[int] = []  # lines of records used here, waiting for the next seal
        self.sealed_by: dict[int, tuple[int, Seal]] = {}  # a used line -> its seal's line, seal
        self.used: list[tuple[int, int]] = []  # (line, seq) of every record the answer uses
        self.events: list[EventRecord] = []
        self.broken: list[int] = []  # lines that name the order but cannot be decoded
        self.unread: dict[int, str] = {}  # used lines that cannot be decoded -> why not

    def take(self, lineno: int, line: bytes) -> None:
        order_id = self.order_id
        mentions = self.needle in line
        if not mentions and not any(m in line for m in _CONTROL_MARKERS):
            if self.unsealed and _SEAL_MARKER in line[:96]:
                try:
                    seal = msgspec.json.decode(line, type=Seal)
                except UNDECODABLE:
                    return
                self._sealed(lineno, seal)
            return
        try:
            rec = decode_record(line)
        except msgspec.DecodeError as exc:
            if mentions:  # perhaps its fill or decision: the chain check must reach it
                self.broken.append(lineno)
            # else a control action: perhaps a halt latched before the decision
            self.used.append((lineno, -1))
            self.unread[lineno] = str(exc)
            self.unsealed.append(lineno)  # checked through the seal after it, as a record
            return
        if isinstance(rec, Seal):  # an id such as "hash" is in every seal line
            self._sealed(lineno, rec)
            return
        if isinstance(rec, DecisionRecord):
            if rec.order_id == order_id:
                self.decisions.append(rec)
                self.decision_lines.append(lineno)
                self.used.append((lineno, rec.seq))
        elif rec.kind == FILL:
            if rec.data.get("order_id") == order_id:
                self.fills.append(rec)
                self.used.append((lineno, rec.seq))
        elif rec.kind in CONTROL_KINDS:
            self.controls.append((lineno, rec))
        elif rec.kind in ORDER_EVENTS and order_id in (
            rec.data.get("order_id"),
            rec.data.get("orig_id"),
        ):
            self.events.append(rec)
            self.used.append((lineno, rec.seq))
        self.unsealed.append(lineno)

    def _sealed(self, lineno: int, seal: Seal) -> None:
        for n in self.unsealed:
            self.sealed_by[n] = (lineno, seal)
        self.unsealed = []


def _unread_named(report: VerifyReport, unread: dict[int, str]) -> VerifyReport:
    """`report` with each line the answer needed and could not decode named, where the
    chain check found nothing wrong with it: a value no recorder writes (a number out of
    range) in a line whose seal was recomputed, or not sealed yet, passes the chain.

    Such a line was left out of the answer; it was reported only as its batch's records
    "not sealed yet" (the check stopped at it, short of its seal), and once the check
    reached the seal after it, the answer would have been "chain verified" without it."""
    named = {p.line for p in report.problems if p.kind is not ProblemKind.UNSEALED}
    extra = [
        Problem(
            ProblemKind.MALFORMED,
            n,
            None,
            f"cannot be read as a record ({why}); it names the order, or is a halt, "
            "resume, arm or disarm, and the answer leaves it out",
        )
        for n, why in unread.items()
        if n <= report.lines and n not in named
    ]
    if not extra:
        return report
    problems = tuple(sorted((*report.problems, *extra), key=lambda p: p.line))
    return msgspec.structs.replace(report, problems=problems)


def _before(control: EventRecord, decision: DecisionRecord) -> bool:
    """Was the control in force when the decision was taken? Recorded before it, or a halt
    latched before it: a node confirms a kill before it records it, so orders the halt
    blocked meanwhile can be recorded first (`latched_ns`, the halt's own time)."""
    if control.seq < decision.seq:
        return True
    latched = control.data.get("latched_ns") if control.kind == "halt" else None
    return type(latched) is int and latched <= decision.ts


def _applies(control: EventRecord, decision: DecisionRecord) -> bool:
    """Does a halt/resume/arm name this order's scope? Unscoped actions apply to all."""
    scope = control.data.get("scope")
    key = control.data.get("key")
    if scope is None or scope == "fleet":
        return True
    if scope == "node":
        return key in (None, decision.node) and control.node in ("", decision.node)
    if scope == "strategy":
        return key == decision.strategy
    if scope == "symbol":
        return key == decision.symbol
    if scope == "strategy_symbol":
        return key == f"{decision.strategy}/{decision.symbol}"
    return True
