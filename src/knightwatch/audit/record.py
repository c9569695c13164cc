"""The record schema: what one JSON line of the flight recorder says.

Writers encode the payload structs (no seq, prev or hash: those are added by the
chain when the record is sealed); readers decode the full record structs, which
extend the payloads with the chain fields. Field names are a public contract
(operators grep for them), so they are only ever added, never renamed.
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
    """A decision as read back from the file, with its place in the chain."""

    seq: int
    prev: str
    hash: str


class EventRecord(EventPayload, frozen=True):
    """An event as read back from the file, with its place in the chain."""

    seq: int
    prev: str
    hash: str


class Kind(msgspec.Struct):
    """Just enough of a line to pick the struct to decode it into."""

    kind: str


def format_ts(ns: int) -> str:
    """Render wall nanoseconds as UTC ISO-8601 without losing the nanoseconds."""
    from datetime import UTC, datetime

    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"
