"""Flag state: the value each node should evaluate, and how it got there.

Every change records who asked, who approved, when, from where and which
release each targeted node ran at that moment, so that a flight-recorder reader
can answer "which code did this flip wake up, and on which server?". Nodes
confirm the revision they applied, so propagation is a fact, not a hope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from knightwatch.errors import KnightwatchError


class FlagChange(msgspec.Struct, frozen=True):
    flag_id: str
    value: bool
    nodes: tuple[str, ...]
    actor: str
    approver: str | None
    reason: str
    origin: str
    at_ns: int
    releases: dict[str, str]
    revision: int = 0
    proof: str = ""
    """The signed proof every node checks before applying (`knightwatch.trust.flagproof`)."""


class FlagState(msgspec.Struct, frozen=True):
    """Per-node values; a node without a value evaluates the flag's safe default."""

    flag_id: str
    revision: int = 0
    node_values: dict[str, bool] = {}
    applied: dict[str, int] = {}
    proofs: dict[str, str] = {}
    """Per node: the proof of the change that set its value (empty: unsigned)."""

    def value_for(self, node: str) -> bool | None:
        return self.node_values.get(node)

    def with_change(self, change: FlagChange) -> FlagState:
        values = dict(self.node_values)
        proofs = dict(self.proofs)
        for node in change.nodes:
            values[node] = change.value
            proofs[node] = change.proof
        return FlagState(self.flag_id, self.revision + 1, values, dict(self.applied), proofs)

    def with_applied(self, node: str, revision: int) -> FlagState:
        applied = dict(self.applied)
        applied[node] = max(revision, applied.get(node, 0))
        return FlagState(
            self.flag_id, self.revision, dict(self.node_values), applied, dict(self.proofs)
        )


class StateConflict(KnightwatchError, RuntimeError):
    """Someone else changed the flag between check and commit; re-check and retry."""


class StateUnavailable(KnightwatchError, RuntimeError):
    """The state cannot be read; evaluation falls back to safe defaults."""


class StateUnreadable(StateUnavailable):
    """The stored state record is there but cannot be decoded (or is another flag's).

    Only a change back to the safe default may replace it (the stop direction is
    never gated on a record nobody can read): a fresh state at `revision` + 1,
    committed with `commit(..., replace_unreadable=True)` against `revision`."""

    def __init__(self, detail: str, revision: int) -> None:
        super().__init__(detail)
        self.revision = revision


class FlagStateReader(Protocol):
    """What a node needs to evaluate flags: read the state, confirm what it applied."""

    def get(self, flag_id: str) -> FlagState | None: ...

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None: ...


class FlagStateStore(FlagStateReader, Protocol):
    """What operators' tools need on top: compare-and-set changes and their history."""

    def commit(
        self, change: FlagChange, expected_revision: int, *, replace_unreadable: bool = False
    ) -> FlagState:
        """Compare-and-set; `replace_unreadable`: `change` goes to the safe default and may
        replace a stored state that `get` reported as `StateUnreadable` at this revision."""
        ...

    def changes(self, flag_id: str) -> Sequence[FlagChange]: ...


class _StateFile(msgspec.Struct):
    flags: dict[str, FlagState] = {}
    changes: list[FlagChange] = []


def _commit(data: _StateFile, change: FlagChange, expected_revision: int) -> FlagState:
    current = data.flags.get(change.flag_id) or FlagState(change.flag_id)
    if current.revision != expected_revision:
        raise StateConflict(
            f"flag {change.flag_id!r} is at revision {current.revision}, "
            f"the change was checked against {expected_revision}"
        )
    updated = current.with_change(change)
    data.flags[change.flag_id] = updated
    data.changes.append(msgspec.structs.replace(change, revision=updated.revision))
    return updated


class MemoryFlagStateStore:
    """In-process store for the replay and for tests of the logic above it."""

    def __init__(self) -> None:
        self._data = _StateFile()

    def get(self, flag_id: str) -> FlagState | None:
        return self._data.flags.get(flag_id)

    def commit(
        self, change: FlagChange, expected_revision: int, *, replace_unreadable: bool = False
    ) -> FlagState:
        return _commit(self._data, change, expected_revision)

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        state = self._data.flags.get(flag_id)
        if state is not None:
            self._data.flags[flag_id] = state.with_applied(node, revision)

    def changes(self, flag_id: str) -> Sequence[FlagChange]:
        return [c for c in self._data.changes if c.flag_id == flag_id]
