"""One cast of identities for the tests that are not about the roster itself.

Every kill-switch command in the suite is signed by someone on this roster
and verified by the node that applies it, every NATS connection logs in as
one of these names on an authorized server (`Site(kit=KIT)`): alice and bob
operate and approve (a resume is alice's, co-signed by bob), erin operates,
carol only views, the supervisor and the admission service are components, and nodes
n1..n9 and a few named ones each own a key. Issued at time 0, so simulated clocks and
the wall clock both fall inside every key's validity. (The adapters' nodes
nt-1 and crypto-1 are here too.) The attack tests in
tests/trust build their own casts (they rotate and revoke).
"""

from __future__ import annotations

from knightwatch.clock import Clock
from knightwatch.control.fleet.admission import request_target
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import StateEntry, TargetReply
from knightwatch.release.dsse import Envelope
from knightwatch.state import TradingState
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore
from knightwatch.trust.target import approve_target

NODE_IDS = (
    *(f"n{i}" for i in range(1, 10)),
    "m1",
    "r8",
    "nt-1",
    "gw",
    "crypto-1",
    "dead",
    "ok",
    "frozen",
)
KIT = Kit(now_ns=0, nodes=NODE_IDS)
KIT.add("venue", [Role.VENUE])
KIT.add("erin", [Role.OPERATOR])  # a third operator: neither of a resume's two people
ALICE = KIT.signer("alice")
BOB = KIT.signer("bob")
ERIN = KIT.signer("erin")


def signer(name: str) -> Signer:
    return KIT.signer(name)


def trust() -> TrustStore:
    """A process's own view of the roster, already at the cast's latest version."""
    return KIT.store()


def switch(plane: ControlPlane, clock: Clock, name: str = "alice") -> KillSwitch:
    """A kill switch that signs as `name` (an operator, or the supervisor)."""
    return KillSwitch(plane, clock, KIT.signer(name), trust())


def sign(entry: StateEntry) -> StateEntry:
    """`entry` signed by its actor, and for a resume co-signed by the other operator."""
    if entry.actor not in KIT.signers:
        return entry
    keys = [KIT.signer(entry.actor).key]
    if entry.state is TradingState.ACTIVE:
        keys.append((BOB if entry.actor != "bob" else ALICE).key)
    return entry.signed(*keys)


async def set_target(
    plane: ControlPlane,
    envelope: Envelope,
    clock: Clock,
    *,
    requester: str = "alice",
    approver: str | None = "bob",
    reason: str = "deploy",
) -> TargetReply:
    """Ask the admission service for a target release as two people do: requested and
    signed by `requester` (logged in on `plane`), approved by `approver` (None: nobody)."""
    now = clock.time_ns()
    approval = (
        approve_target(envelope, KIT.signer(approver), requester, reason, now)
        if approver is not None
        else None
    )
    return await request_target(
        plane, envelope, KIT.signer(requester), reason, now_ns=now, approval=approval
    )
