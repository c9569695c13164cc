"""Why did this order happen, or why was it blocked? The answer, from the file.

For an order id: its decision record(s) (verdict, reason code, detail, node,
release, flag snapshot, limits version, rules evaluated, time), the fills
recorded for it, and the control actions (halt, resume, arm, disarm) that
preceded the decision and could have applied to it.

An answer read from an edited file would be reported as fact, so the hash
chain is verified from the first line through the last record the answer
uses, and the explanation carries that verification (`chain`).
"""

from __future__ import annotations

import os
from itertools import islice

import msgspec

from knightwatch.audit.errors import OrderNotFound
from knightwatch.audit.read import decode_record, read_lines
from knightwatch.audit.record import DecisionRecord, EventRecord
from knightwatch.audit.verify import VerifyReport, verify_lines

FILL = "fill"
CONTROL_KINDS = frozenset({"halt", "resume", "arm", "disarm"})
_CONTROL_MARKERS = tuple(b'"kind":"%s"' % k.encode() for k in sorted(CONTROL_KINDS))


class Explanation(msgspec.Struct, frozen=True):
    order_id: str
    decisions: tuple[DecisionRecord, ...]
    fills: tuple[EventRecord, ...]
    controls: tuple[EventRecord, ...]
    """Control actions before the last decision that name its fleet, node, strategy or symbol."""
    chain: VerifyReport
    """The chain verified from line 1 through the last record used here (`chain.lines`)."""

    @property
    def decision(self) -> DecisionRecord:
        """The latest decision (a re-sent duplicate id has more than one)."""
        return self.decisions[-1]


def explain_order(path: str | os.PathLike[str], order_id: str) -> Explanation:
    """Collect what the file says about `order_id`; raises OrderNotFound if it has no decision."""
    needle = msgspec.json.encode(order_id)
    decisions: list[DecisionRecord] = []
    fills: list[EventRecord] = []
    controls: list[tuple[int, EventRecord]] = []
    last_used = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(read_lines(f), start=1):
            mentions = needle in line
            if not mentions and not any(m in line for m in _CONTROL_MARKERS):
                continue
            try:
                rec = decode_record(line)
            except msgspec.DecodeError:
                continue  # `audit verify` names broken lines; here they explain nothing
            if isinstance(rec, DecisionRecord):
                if rec.order_id == order_id:
                    decisions.append(rec)
                    last_used = lineno
            elif rec.kind == FILL:
                if rec.data.get("order_id") == order_id:
                    fills.append(rec)
                    last_used = lineno
            elif rec.kind in CONTROL_KINDS:
                controls.append((lineno, rec))
    if not decisions:
        raise OrderNotFound(f"order {order_id!r}: no decision recorded in {os.fspath(path)}")
    last = decisions[-1]
    relevant = tuple(c for _, c in controls if c.seq < last.seq and _applies(c, last))
    last_used = max([last_used, *(n for n, c in controls if c in relevant)])
    with open(path, "rb") as f:
        chain = verify_lines(islice(read_lines(f), last_used), os.fspath(path))
    return Explanation(order_id, tuple(decisions), tuple(fills), relevant, chain)


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
