"""What flag governance needs to know about the fleet: who is admitted, on what.

The control plane (`knightwatch.control`) and admission (`knightwatch.release`)
own this information; flags only read it through `FleetView`, so activation and
the provider run unchanged over the in-memory fleet of a replay, a fleet file
for a single operator, or the NATS-backed control plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import yaml


class FleetMember(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A node as the control plane sees it.

    `flag_schema` is the flag table of the release the node was admitted on
    (flag id -> definition hash), taken from the signed manifest, not from the
    node's say-so.
    """

    node: str
    admitted: bool
    release_id: str
    flag_schema: dict[str, str] = {}


class FleetView(Protocol):
    def members(self) -> Sequence[FleetMember]: ...


class FleetFileError(ValueError):
    """The fleet file cannot be used; the message names the field."""


class StaticFleetView:
    """A fixed fleet: a replay's nodes, or an operator's fleet file."""

    def __init__(self, members: Iterable[FleetMember]) -> None:
        self._members = tuple(sorted(members, key=lambda m: m.node))
        names = [m.node for m in self._members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FleetFileError(f"node names must be unique, repeated: {', '.join(duplicates)}")

    def members(self) -> Sequence[FleetMember]:
        return self._members

    @classmethod
    def load(cls, path: Path) -> StaticFleetView:
        """YAML: `nodes: [{node, admitted, release_id, flag_schema: {id: hash}}]`."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise FleetFileError(f"{path}: cannot read the fleet file: {exc}") from exc
        try:
            members = msgspec.convert(data, dict[str, tuple[FleetMember, ...]])
        except msgspec.ValidationError as exc:
            raise FleetFileError(f"{path}: {exc}") from exc
        if set(members) != {"nodes"}:
            raise FleetFileError(f"{path}: the only top-level key must be `nodes`")
        return cls(members["nodes"])


def member_of(fleet: FleetView, node: str) -> FleetMember | None:
    for member in fleet.members():
        if member.node == node:
            return member
    return None
