"""Flag state: the value each node should evaluate, and how it got there.

Every change records who asked, who approved, when, from where and which
release each targeted node ran at that moment, so that a flight-recorder reader
can answer "which code did this flip wake up, and on which server?". Nodes
confirm the revision they applied, so propagation is a fact, not a hope.

A state keeps each distinct proof once (`FlagState.proof_table`) and, per node, the
index of the proof that set its value (`proof_of`): a rollout stage's proof names the
whole rollout's nodes, and the state once held a copy of it per node, so its record
grew with the square of the fleet (past about 145 nodes with 15-character ids a
full-fleet stage outgrew NATS's 1 MB message bound and could not be stored: the
rollout could not complete). The record is now linear in the fleet. A record in the
earlier shape (`proofs`: per node, the proof itself) still decodes and reads the same;
the next change writes it in the new shape.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Protocol

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


class FlagState(msgspec.Struct, frozen=True, dict=True):
    """Per-node values; a node without a value evaluates the flag's safe default."""

    flag_id: str
    revision: int = 0
    node_values: dict[str, bool] = {}
    applied: dict[str, int] = {}
    proofs_by_node: dict[str, str] = msgspec.field(default_factory=dict, name="proofs")
    """The earlier shape of the record (stored as `proofs`): per node, the proof itself.
    Still read (a record written before may be in the store); never written by a change,
    which moves the record to `proof_table` and `proof_of`."""
    proof_table: tuple[str, ...] = ()
    """Each distinct proof of a change that set some node's value, once."""
    proof_of: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = {}
    """Per node: the index in `proof_table` of the proof of the change that set its value
    (absent: unsigned)."""

    def __post_init__(self) -> None:
        # a decoder turns this ValueError into a ValidationError (one of UNDECODABLE), so
        # a record naming a proof it does not hold is unreadable, never read as unsigned
        if self.proofs_by_node and (self.proof_table or self.proof_of):
            raise ValueError(
                "flag state: holds both 'proofs' (the earlier shape) and "
                "'proof_table'/'proof_of'; a record is in one shape"
            )
        size = len(self.proof_table)
        for node, index in self.proof_of.items():
            if index >= size:
                raise ValueError(
                    f"flag state: proof_of[{node!r}] is {index}: proof_table holds {size} "
                    "proofs (an index must name one of them)"
                )

    @functools.cached_property
    def proofs(self) -> Mapping[str, str]:
        """Per node: the proof of the change that set its value (absent: unsigned)."""
        if self.proofs_by_node:
            return MappingProxyType(self.proofs_by_node)
        table = self.proof_table
        return MappingProxyType({node: table[i] for node, i in self.proof_of.items()})

    def proof_for(self, node: str) -> str:
        """The proof of the change that set `node`'s value ("" if none: unsigned)."""
        return self.proofs.get(node, "")

    def value_for(self, node: str) -> bool | None:
        return self.node_values.get(node)

    def with_change(self, change: FlagChange) -> FlagState:
        """The next revision: `change`'s value and proof on every node it names, every other
        node's own kept; each distinct proof stored once (one no node holds is dropped)."""
        values = dict(self.node_values)
        proofs = dict(self.proofs)
        for node in change.nodes:
            values[node] = change.value
            proofs[node] = change.proof
        table: dict[str, int] = {}
        proof_of: dict[str, int] = {}
        for node, proof in proofs.items():
            if proof:
                proof_of[node] = table.setdefault(proof, len(table))
        return FlagState(
            self.flag_id,
            self.revision + 1,
            values,
            dict(self.applied),
            proof_table=tuple(table),
            proof_of=proof_of,
        )

    def with_applied(self, node: str, revision: int) -> FlagState:
        applied = dict(self.applied)
        applied[node] = max(revision, applied.get(node, 0))
        return msgspec.structs.replace(self, applied=applied)


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
