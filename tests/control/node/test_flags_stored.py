"""A flag change a node reads from the store at its start is judged when the server wrote it.

Its signer chooses its issue time; the server chooses when the change record behind
the proof (`change.<flag>.<revision>`, holding that very proof) was stored. Before,
a node that started judged the change at its own signed date alone: a change signed
with an operator's key after its revocation, dated back before it and stored by
anyone who may write `kw_flags`, applied on every node that started afterwards (a
running node, hearing it live, refused it). A change away from the safe default
whose change record is not stored (or is another change's) is refused until it is;
the stop direction is never looked up. Real nats-server (authorization on), a node
in-process.
"""

from __future__ import annotations

import asyncio

import msgspec

from knightwatch.clock import NS_PER_S, SystemClock
from knightwatch.control.node.flags import ENCODER, NodeFlags, change_key, state_key
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.site import Site
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.release.dsse import new_envelope
from knightwatch.trust.approval import Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import TrustReason
from knightwatch.trust.flagproof import FLAG_PAYLOAD_TYPE, FlagDecision, FlagProof

from ..helpers import eventually
from .test_nested_records import close, joined

QUOTE = "risk.quote_wide"
"""A trading flag, safe default off (its meaning unknown to the node: fail closed)."""
STOP = "risk.stop_all"


def now() -> int:
    return SystemClock().time_ns()


def proof(site: Site, flag: str, value: bool, revision: int, issued_ns: int) -> str:
    """alice's signed change of `flag` to `value` on n1 (safe default off), dated
    `issued_ns`; moving it away from the safe default carries bob's approval."""
    away = value is not False
    decision = FlagDecision(
        flag_id=flag,
        value=value,
        nodes=("n1",),
        revision=revision,
        actor="alice",
        requester="alice",
        reason="test",
        issued_ns=issued_ns,
        description=f"{flag}: what it does when on",
        safe_default=False,
        trading_behaviour=True,
        approval_kind="flag" if away else "",
    )
    envelope = site.signer("alice").sign(
        new_envelope(FLAG_PAYLOAD_TYPE, msgspec.json.encode(decision))
    )
    approval = None
    if away:
        asked = Approval(
            ApprovalKind.FLAG, flag, value, None, "alice", "test", issued_ns - 1,
            issued_ns + 600 * NS_PER_S,
        )  # fmt: skip
        approval = sign_approval(asked, site.signer("bob"))
    return msgspec.json.encode(FlagProof(envelope, approval)).decode()


async def store(
    plane: NatsControlPlane, flag: str, revision: int, value: bool, signed: str, *, record: int
) -> None:
    """The state at `revision` with n1's value and proof, then (`record` > 0) the change
    record `change.<flag>.<record>` holding the proof, as the flag store writes them."""
    state = FlagState(flag, revision, {"n1": value}, {}, {"n1": signed})
    await plane.put_record(Bucket.FLAGS, state_key(flag), ENCODER.encode(state))
    if record:
        await store_change(plane, flag, record, value, signed)


async def store_change(
    plane: NatsControlPlane, flag: str, revision: int, value: bool, signed: str
) -> None:
    change = FlagChange(flag, value, ("n1",), "alice", None, "test", "cli", now(), {})
    recorded = msgspec.structs.replace(change, revision=revision, proof=signed)
    await plane.put_record(Bucket.FLAGS, change_key(flag, revision), ENCODER.encode(recorded))


async def revoke_alice(site: Site) -> int:
    """alice's key is revoked from now on (a new roster version the server serves)."""
    await asyncio.sleep(0.2)  # after every write before it, by the server's clock too
    revoked = now()
    await site.publish(site.kit.revoke("alice", revoked))
    return revoked


async def started_flags(site: Site) -> tuple[NodeRuntime, NodeFlags]:
    node = await joined(site)
    flags = NodeFlags(node)
    await flags.start()
    return node, flags


async def test_a_change_signed_after_a_revocation_and_dated_back_is_refused_at_start(
    site: Site,
) -> None:
    """alice's key is revoked; with it, someone signs a change turning the trading flag
    on, dated before the revocation, and bob (who may write the flags) stores it with its
    change record. Judged at the server's write time, after the revocation, it is
    refused and the node evaluates the safe default. Before, it applied."""
    await asyncio.sleep(0.2)
    dated = now()  # while alice's key was valid
    await revoke_alice(site)
    bob = await site.connect("bob")
    try:
        await store(bob, QUOTE, 1, True, proof(site, QUOTE, True, 1, dated), record=1)
    finally:
        await bob.close()
    node, flags = await started_flags(site)
    try:
        assert flags.refused[TrustReason.KEY_NOT_VALID] == 1, flags.last_refusal
        assert "of alice is revoked" in flags.last_refusal
        assert flags.get(QUOTE) is None  # the safe default
    finally:
        await close(node)


async def test_a_change_stored_before_the_revocation_still_applies_at_start(site: Site) -> None:
    """The same change, stored (with its record) while alice's key was valid, applies on
    a node that starts after the revocation: judged when the server wrote it."""
    alice = await site.connect("alice")
    try:
        await store(alice, QUOTE, 1, True, proof(site, QUOTE, True, 1, now()), record=1)
    finally:
        await alice.close()
    await revoke_alice(site)
    node, flags = await started_flags(site)
    try:
        assert sum(flags.refused.values()) == 0, flags.last_refusal
        state = flags.get(QUOTE)
        assert state is not None and state.value_for("n1") is True
    finally:
        await close(node)


async def test_a_change_whose_record_is_missing_waits_for_it_the_stop_direction_never(
    site: Site,
) -> None:
    """A stored change away from the safe default without its change record is refused
    (its write time is unknown; the safe default meanwhile) and applies once the record
    is stored; a change to the safe default without one applies at once."""
    alice = await site.connect("alice")
    try:
        on = proof(site, QUOTE, True, 1, now())
        await store(alice, QUOTE, 1, True, on, record=0)
        await store(alice, STOP, 1, False, proof(site, STOP, False, 1, now()), record=0)
        node, flags = await started_flags(site)
        try:
            assert flags.refused[TrustReason.MALFORMED] == 1, flags.last_refusal
            assert sum(flags.refused.values()) == 1, flags.last_refusal
            assert f"the change record 'change.{QUOTE}.1' behind the proof is not stored" in (
                flags.last_refusal
            )
            assert flags.get(QUOTE) is None  # the safe default
            stopped = flags.get(STOP)  # applied: the node evaluates its own safe default
            assert stopped is not None and stopped.revision == 1
            assert stopped.value_for("n1") is None
            await store_change(alice, QUOTE, 1, True, on)  # the writer's second write
            await eventually(lambda: (s := flags.get(QUOTE)) is not None and s.revision == 1)
            assert flags.get(QUOTE).value_for("n1") is True  # type: ignore[union-attr]
        finally:
            await close(node)
    finally:
        await alice.close()


async def test_an_older_change_record_does_not_vouch_for_a_new_proof(site: Site) -> None:
    """alice turns the flag to its safe default (revision 1, recorded). After her
    revocation someone signs, with her key, a change turning it on that claims revision
    1 and is dated before the revocation, and stores it as revision 2. The record of
    revision 1 was written before the revocation but holds another proof: refused. (A
    write time looked up by revision alone would have let it apply.)"""
    alice = await site.connect("alice")
    try:
        off = proof(site, QUOTE, False, 1, now())
        await store(alice, QUOTE, 1, False, off, record=1)
    finally:
        await alice.close()
    await asyncio.sleep(0.2)
    dated = now()
    await revoke_alice(site)
    bob = await site.connect("bob")
    try:
        await store(bob, QUOTE, 2, True, proof(site, QUOTE, True, 1, dated), record=0)
    finally:
        await bob.close()
    node, flags = await started_flags(site)
    try:
        assert flags.refused[TrustReason.MALFORMED] == 1, flags.last_refusal
        assert f"'change.{QUOTE}.1' behind the proof is another change's" in flags.last_refusal
        assert flags.get(QUOTE) is None
    finally:
        await close(node)
