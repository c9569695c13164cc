"""The record schema: what one JSON line of the flight recorder says.

Writers encode the line structs (`DecisionLine`, `EventLine`: seq first, the
rules list spliced in pre-encoded; `RepeatLine`, the same bytes as a
`DecisionLine` with its repeating runs spliced in); readers decode the record structs, which
are the payloads plus `seq`. A record line carries no hash: the seal line after
its batch does (see `chain`). Field names are a public contract (operators grep
for them), so they are only ever added, never renamed.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

Scalar = str | int | float | bool | None
"""What an event field may hold: it must survive JSON unchanged."""

DECISION = "decision"


class FsyncPolicy(StrEnum):
    """When written records are forced to stable storage (see docs/flight-recorder.md)."""

    NONE = "none"
    BATCH = "batch"
    ALWAYS = "always"


class AuditContext(msgspec.Struct, frozen=True):
    """Who decided and under which software: the facts that explain a decision later."""

    node: str
    release_id: str | None = None
    flag_snapshot_id: str | None = None
    limits_version: str = ""


class DecisionPayload(msgspec.Struct, frozen=True, gc=False):
    """One Guard verdict on one order, with the rules that were evaluated.

    `gc=False`: payloads hold only strings and numbers, never cycles, so keeping
    them out of the cyclic collector saves its passes over every batch.
    """

    ts: int
    kind: str
    node: str
    release_id: str | None
    flag_snapshot_id: str | None
    limits_version: str
    order_id: str
    strategy: str
    symbol: str
    side: str
    qty: int
    price: float | None
    parent_id: str | None
    accepted: bool
    reason: str
    detail: str
    rules: tuple[str, ...]


class EventPayload(msgspec.Struct, frozen=True, gc=False):
    """A fill or a control action (halt, resume, arm, lease, limits reload...)."""

    ts: int
    kind: str
    node: str
    release_id: str | None
    flag_snapshot_id: str | None
    limits_version: str
    data: dict[str, Scalar]


class DecisionRecord(DecisionPayload, frozen=True):
    """A decision as read back from the file, with its place in the sequence."""

    seq: int


class EventRecord(EventPayload, frozen=True):
    """An event as read back from the file, with its place in the sequence."""

    seq: int


class DecisionLine(msgspec.Struct, gc=False):
    """What the recorder encodes for a decision: one C call, in the file's field order.

    Not frozen and not type-checked at construction: whatever the Guard was
    handed goes in as it is, and a value JSON cannot carry makes the encoder
    raise, which sends the record down the slow path that makes it conform.
    `rules` is the rule list already encoded (the Guard's lists repeat).
    """

    seq: int
    ts: int
    kind: str
    node: str
    release_id: str | None
    flag_snapshot_id: str | None
    limits_version: str
    order_id: str
    strategy: str
    symbol: str
    side: str
    qty: int
    price: float | None
    parent_id: str | None
    accepted: bool
    reason: str
    detail: str
    rules: msgspec.Raw


class RepeatLine(msgspec.Struct, gc=False):
    """A `DecisionLine` whose context and verdict repeat those of the record before it.

    The two runs of fields that repeat (`kind` to `limits_version`, and
    `accepted` to `rules`) are spliced in as raw JSON, each encoded once from a
    `DecisionHead` or `DecisionTail` by the same encoder, so the line is byte for
    byte the `DecisionLine` it stands for (a test holds the two together): seven
    fewer fields for the encoder to walk on every accepted order.
    """

    seq: int
    ts: int
    kind: msgspec.Raw  # `"decision","node":...,"limits_version":...`
    order_id: str
    strategy: str
    symbol: str
    side: str
    qty: int
    price: float | None
    parent_id: str | None
    accepted: msgspec.Raw  # `true,"reason":...,"rules":[...]`


class DecisionHead(msgspec.Struct, gc=False):
    """`DecisionLine`'s fields from `kind` to `limits_version`: `RepeatLine.kind`'s source."""

    kind: str
    node: str
    release_id: str | None
    flag_snapshot_id: str | None
    limits_version: str


class DecisionTail(msgspec.Struct, gc=False):
    """`DecisionLine`'s fields from `accepted` to `rules`: `RepeatLine.accepted`'s source."""

    accepted: bool
    reason: str
    detail: str
    rules: msgspec.Raw


class EventLine(msgspec.Struct, gc=False):
    """What the recorder encodes for an event."""

    seq: int
    ts: int
    kind: str
    node: str
    release_id: str | None
    flag_snapshot_id: str | None
    limits_version: str
    data: dict[str, Scalar]


class Kind(msgspec.Struct):
    """Just enough of a line to pick the struct to decode it into."""

    kind: str


def format_ts(ns: int) -> str:
    """Render wall nanoseconds as UTC ISO-8601 without losing the nanoseconds.

    A time no calendar can show (years outside 1-9999: a wrong clock, or an edited
    file, which can hold any integer) comes back as `? (out of range: N ns)`, never an
    exception: a reader printing a record must not end with a traceback (`tail`, `why`).
    """
    from datetime import UTC, datetime

    try:
        secs, frac = divmod(ns, 1_000_000_000)
        stamp = datetime.fromtimestamp(secs, UTC).replace(tzinfo=None).isoformat()
        return f"{stamp}.{frac:09d}Z"
    except (OverflowError, ValueError, OSError, TypeError):
        return f"? (out of range: {ns!r} ns)"
