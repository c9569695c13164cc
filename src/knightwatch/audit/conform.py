"""Bringing a record into the schema when its values are not what the schema says.

An object that bypassed Order validation (the Guard blocks it as
`invalid_order`) must still be recorded, and every record must stay readable by
`audit why`. The writer uses this only for values JSON cannot carry (a lone
surrogate); the reader uses it for values JSON carried but the schema does not
type (a float quantity), so the file itself keeps exactly what was seen.
"""

from __future__ import annotations

from knightwatch.audit.record import DECISION, DecisionPayload, EventPayload, Scalar

SCALARS = (str, int, float, bool, type(None))


def text(value: object) -> str:
    if isinstance(value, str):
        try:
            value.encode()
            return str(value)
        except UnicodeEncodeError:
            pass
    return safe_repr(value)


def safe_repr(value: object) -> str:
    """`repr(value)`, or its type's name when its `__repr__` raises: a hostile object handed
    to the Guard is recorded, never lets the record (or the decision) raise."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def conform(p: DecisionPayload | EventPayload) -> DecisionPayload | EventPayload:
    """The payload with every field of the schema's type; odd originals kept as text."""
    if isinstance(p, EventPayload):
        data: dict[str, Scalar] = {
            text(k): v if isinstance(v, SCALARS) and not isinstance(v, str) else text(v)
            for k, v in (p.data.items() if isinstance(p.data, dict) else ())
        }
        ts = p.ts if type(p.ts) is int else 0
        return EventPayload(ts, text(p.kind), *_context_text(p), data)
    return conform_decision(p)


def _context_text(p: DecisionPayload | EventPayload) -> tuple[str, str | None, str | None, str]:
    return (
        text(p.node),
        None if p.release_id is None else text(p.release_id),
        None if p.flag_snapshot_id is None else text(p.flag_snapshot_id),
        text(p.limits_version),
    )


def conform_decision(p: DecisionPayload) -> DecisionPayload:
    odd: dict[str, object] = {}
    ts, qty, price, accepted = p.ts, p.qty, p.price, p.accepted
    if type(ts) is not int:
        odd["ts"], ts = ts, 0
    if type(qty) is not int:
        odd["qty"], qty = qty, 0
    if price is not None and type(price) not in (int, float):
        odd["price"], price = price, None
    if type(accepted) is not bool:
        odd["accepted"], accepted = accepted, False
    rules: tuple[str, ...] = ()
    if isinstance(p.rules, tuple | list) and all(type(r) is str for r in p.rules):
        rules = tuple(p.rules)
    else:
        odd["rules"] = p.rules
        if isinstance(p.rules, tuple | list):
            rules = tuple(text(r) for r in p.rules)
    detail = text(p.detail)
    if odd:
        detail += (
            " [outside the schema: "
            + ", ".join(f"{k}={safe_repr(v)}" for k, v in odd.items())
            + "]"
        )
    return DecisionPayload(
        ts,
        DECISION,
        *_context_text(p),
        text(p.order_id),
        text(p.strategy),
        text(p.symbol),
        text(p.side),
        qty,
        price,
        None if p.parent_id is None else text(p.parent_id),
        accepted,
        text(p.reason),
        detail,
        rules,
    )
