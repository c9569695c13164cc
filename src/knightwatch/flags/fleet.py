"""What flag governance needs to know about the fleet: who is admitted, on what.

The control plane (`knightwatch.control`) and admission (`knightwatch.release`)
own this information; flags only read it through `FleetView`, so activation and
the provider run unchanged over the in-memory fleet of a replay or a snapshot
of the NATS-backed control plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from knightwatch.errors import KnightwatchError


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


class FleetViewError(KnightwatchError, ValueError):
    """A fleet view that cannot be judged against; the message names the node."""


class StaticFleetView:
    """A fixed fleet: a snapshot of the control plane's membership and verdicts."""

    def __init__(self, members: Iterable[FleetMember]) -> None:
        self._members = tuple(sorted(members, key=lambda m: m.node))
        names = [m.node for m in self._members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FleetViewError(f"node names must be unique, repeated: {', '.join(duplicates)}")

    def members(self) -> Sequence[FleetMember]:
        return self._members


def member_of(fleet: FleetView, node: str) -> FleetMember | None:
    for member in fleet.members():
        if member.node == node:
            return member
    return None
