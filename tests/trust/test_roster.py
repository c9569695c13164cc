"""The roster's own rules: its approval policy's market hours must contain a moment, and
its versions move forward."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.flags.activation import MarketHours
from knightwatch.release.dsse import Envelope, encode_envelope, new_envelope
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import (
    ROSTER_PAYLOAD_TYPE,
    ApprovalPolicy,
    Member,
    Role,
    Roster,
    TrustError,
    decode_roster,
    roster_envelope,
    sign_roster,
)
from knightwatch.trust.store import REFUSED_KEPT, TrustStore

KIT = Kit(now_ns=1)
# A URL nothing listens on: a command that got past its input checks would fail differently.
NOWHERE = "nats://127.0.0.1:1"

HOLES = [
    ({"open": "16:00", "close": "09:30"}, "market_hours: open 16:00 must be before close 09:30"),
    ({"open": "09:30", "close": "09:30"}, "market_hours: open 09:30 must be before close 09:30"),
    ({"weekdays": []}, "market_hours.weekdays: empty"),
    ({"open": "09:30+05:00"}, "market_hours.open: '09:30+05:00' carries a UTC offset"),
    ({"close": "16:00Z"}, "market_hours.close: '16:00Z' carries a UTC offset"),
]


def _payload(hours: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(KIT.roster)
    data["approvals"] = {"flag": "market_hours", "market_hours": hours}
    return data


@pytest.mark.parametrize(("hours", "message"), HOLES)
def test_a_roster_whose_market_never_opens_is_refused_naming_the_field(
    hours: dict[str, Any], message: str
) -> None:
    """Hours with no moment in them would make the roster's `market_hours` rule mean
    "never" (no second person for a flag change); an offset bound makes every check raise."""
    with pytest.raises(TrustError, match=re.escape(f"roster approvals.{message}")):
        Roster(
            2,
            KIT.roster.issued_ns + 1,
            KIT.roster.members,
            approvals=ApprovalPolicy(market_hours=MarketHours(**hours)),
        )
    envelope = new_envelope(ROSTER_PAYLOAD_TYPE, msgspec.json.encode(_payload(hours)))
    with pytest.raises(TrustError) as info:
        decode_roster(envelope)
    assert f"roster approvals.{message}" in str(info.value)
    assert "$.approvals" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("hours", "message"), HOLES[:3] + HOLES[4:])
def test_a_roster_proposal_with_such_hours_is_refused_naming_the_file(
    tmp_path: Path, hours: dict[str, Any], message: str
) -> None:
    proposal = tmp_path / "proposal.json"
    payload = msgspec.json.encode(_payload(hours))
    proposal.write_bytes(encode_envelope(new_envelope(ROSTER_PAYLOAD_TYPE, payload)))
    result = CliRunner().invoke(
        app,
        ["identity", "show", "--proposal", str(proposal), "--nats-url", NOWHERE],
        env={"COLUMNS": "400"},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert f"roster proposal {proposal}: " in result.output, result.output
    assert f"roster approvals.{message}" in result.output, result.output


def test_the_default_and_a_sound_policy_still_load() -> None:
    sound = ApprovalPolicy(market_hours=MarketHours(open="08:00", close="17:00", weekdays=(0,)))
    roster = Roster(2, KIT.roster.issued_ns + 1, KIT.roster.members, approvals=sound)
    assert roster.approvals.market_hours.weekdays == (0,)
    assert decode_roster(KIT.envelopes[0]).approvals == ApprovalPolicy()


def test_a_version_dated_back_before_a_revocation_does_not_count_the_revoked_admin() -> None:
    """Three admins, threshold 2; admin3's key is stolen and revoked (version 2). admin1
    alone, with the stolen key, signs version 3 dated just before the revocation, undoing
    it: the admins able to sign are judged at the version's own instant, where admin3 was
    still valid. Before, that version was accepted (admin1 + admin3 = 2 admins); a version
    is now refused unless it is issued after the one before it."""
    kit = Kit(now_ns=1_000, admins=3)
    stolen = kit.signer("admin3").key
    kit.revoke("admin3", 2_000)
    store = kit.store()
    assert store.version == 2
    undone = msgspec.structs.replace(
        store.roster, version=3, issued_ns=1_999, members=unrevoked(kit)
    )
    envelope = sign_roster(sign_roster(roster_envelope(undone), kit.signer("admin1").key), stolen)
    with pytest.raises(TrustError, match=r"roster version 3 issued_ns: 1999 must be after"):
        store.accept(envelope)
    assert store.version == 2
    # the same version dated now still needs a second admin who is not revoked
    now = msgspec.structs.replace(undone, issued_ns=2_001)
    envelope = sign_roster(sign_roster(roster_envelope(now), kit.signer("admin1").key), stolen)
    with pytest.raises(TrustError, match=r"signed by 1 admin\(s\) \(admin1\) of 2 required"):
        store.accept(envelope)
    # nor does a key that is no admin's (an operator's)
    envelope = sign_roster(roster_envelope(now), kit.signer("admin1").key)
    envelope = sign_roster(envelope, kit.signer("alice").key)
    with pytest.raises(TrustError, match=r"signed by 1 admin\(s\) \(admin1\) of 2 required"):
        store.accept(envelope)
    assert store.version == 2
    assert store.accept(sign_roster(envelope, kit.signer("admin2").key)).version == 3


def test_a_version_dated_past_the_other_admins_key_expiry_still_needs_the_threshold() -> None:
    """Three admins, threshold 2; admin2's and admin3's keys end at 5,000. admin1 alone
    signs version 2 dated after that: at its own instant only admin1 holds a valid key.
    Before, the threshold fell to the one admin left, so one admin could rewrite the roster
    (give itself every role, lower every approval) by dating a version late enough."""
    kit = Kit(now_ns=1_000, admins=3)
    store = kit.store()
    ending = tuple(
        msgspec.structs.replace(m, valid_until_ns=5_000) if m.name in ("admin2", "admin3") else m
        for m in kit.roster.members
    )
    v2 = msgspec.structs.replace(kit.roster, version=2, issued_ns=2_000, members=ending)
    store.accept(_by(kit, v2, "admin1", "admin2"))
    late = msgspec.structs.replace(v2, version=3, issued_ns=9_000)
    with pytest.raises(
        TrustError,
        match=r"signed by 1 admin\(s\) \(admin1\) of 2 required; only 1 admin\(s\) hold a key "
        r"valid at its issue time 9000",
    ):
        store.accept(_by(kit, late, "admin1"))
    assert store.version == 2
    # before the keys end, two admins still change it
    early = msgspec.structs.replace(late, issued_ns=4_000)
    assert store.accept(_by(kit, early, "admin1", "admin3")).version == 3


S = 1_000_000_000


def test_admins_whose_keys_expired_cannot_sign_a_version_dated_back_inside_their_validity() -> None:
    """Two admins, threshold 2; both their keys end at 50 s (not revoked: rotated out, say,
    with no successor yet). Later (90 s) they sign version 3 dated 40 s, inside their keys'
    validity and after version 2: before, the version carried no judgement of when it
    arrived, so it was accepted from whoever could publish it. Judged when it is received,
    or stored when it was published, it is refused; published while the keys were valid,
    it still loads at any later start."""
    kit = Kit(now_ns=1 * S, admins=2)
    store = kit.store()
    ending = tuple(
        msgspec.structs.replace(m, valid_until_ns=50 * S) if m.name.startswith("admin") else m
        for m in kit.roster.members
    )
    v2 = msgspec.structs.replace(kit.roster, version=2, issued_ns=2 * S, members=ending)
    store.accept(_by(kit, v2, "admin1", "admin2"))
    v3 = _by(kit, msgspec.structs.replace(v2, version=3, issued_ns=40 * S), "admin1", "admin2")
    with pytest.raises(
        TrustError,
        match=r"signed by 0 admin\(s\) \(none\) of 2 required; only 0 admin\(s\) hold a key "
        rf"valid at its issue time {40 * S} and when received \({90 * S}\)",
    ) as info:
        store.accept(v3, received_ns=90 * S)
    assert "\n" not in str(info.value)
    assert store.version == 2
    # stored, judged at the publication the store recorded (a start much later)
    late = kit.store()
    late.accept(_by(kit, v2, "admin1", "admin2"))
    assert not late.follow({3: v3}, received_ns=900 * S, published_ns={3: 90 * S})
    assert any("when received" in r for r in late.refused), late.refused
    assert not late.follow({3: v3}, received_ns=900 * S)  # no record of it: judged now
    assert late.version == 2
    # the same version published while the keys were valid: accepted, and at a later start
    assert store.accept(v3, received_ns=41 * S).version == 3
    again = kit.store()
    again.accept(_by(kit, v2, "admin1", "admin2"))
    assert again.follow({3: v3}, received_ns=900 * S, published_ns={3: 41 * S})
    assert again.version == 3


def test_a_version_dated_ahead_of_the_receivers_clock_is_refused() -> None:
    """Its date is its signers' choice: dated past the keys' end and received before it,
    a version would carry admins valid at neither instant; any version may be dated at
    most the 5 s a clock may be off after it is received (or stored)."""
    kit = Kit(now_ns=1 * S, admins=2)
    store = kit.store()
    ahead = msgspec.structs.replace(kit.roster, version=2, issued_ns=100 * S)
    envelope = _by(kit, ahead, "admin1", "admin2")
    with pytest.raises(
        TrustError,
        match=rf"roster version 2 issued_ns: {100 * S} is more than 5 s after it was received "
        rf"or published \({90 * S}\)",
    ):
        store.accept(envelope, received_ns=90 * S)
    assert store.version == 1
    assert store.accept(envelope, received_ns=96 * S).version == 2  # within the skew


def _by(kit: Kit, roster: Roster, *admins: str) -> Envelope:
    envelope = roster_envelope(roster)
    for name in admins:
        envelope = sign_roster(envelope, kit.signer(name).key)
    return envelope


def unrevoked(kit: Kit) -> tuple[Member, ...]:
    """`kit`'s members with every revocation undone."""
    return tuple(msgspec.structs.replace(m, revoked_ns=0) for m in kit.roster.members)


def test_one_key_under_two_names_is_refused() -> None:
    """People are counted by name: one key listed as alice and as mallory would make one
    signature two people (a resume's requester and approver)."""
    alice = next(m for m in KIT.roster.members if m.name == "alice")
    twice = (*KIT.roster.members, msgspec.structs.replace(alice, name="mallory"))
    with pytest.raises(TrustError, match=r"key_id: key \w+ listed twice"):
        msgspec.structs.replace(KIT.roster, version=2, members=twice)


def test_two_names_differing_only_by_case_are_refused() -> None:
    """One spelling for one name (`is_name`): "bob" and "Bob" would be two people to every
    count of names (a resume's requester and approver, an admin threshold). Two admins so
    named made every process following the roster raise at the next version (the admins'
    threshold policy refuses such names) instead of refusing the version that named them."""
    kit = Kit(now_ns=1)
    twin = msgspec.structs.replace(
        next(m for m in Kit(now_ns=1).roster.members if m.name == "bob"), name="Bob"
    )
    with pytest.raises(TrustError, match=r"members\[\d+\]\.name: 'Bob' differs from 'bob' only"):
        msgspec.structs.replace(kit.roster, version=2, members=(*kit.roster.members, twin))
    # an admins' version naming "Admin1" beside "admin1": refused and remembered, no crash
    data: dict[str, Any] = msgspec.to_builtins(kit.roster)
    other = next(m for m in Kit(now_ns=1).roster.members if m.name == "admin1")
    admin = msgspec.to_builtins(msgspec.structs.replace(other, name="Admin1"))
    data["members"] = [*data["members"], admin]
    versions = {}
    for version in (2, 3):
        data["version"], data["issued_ns"] = version, version
        envelope = new_envelope(ROSTER_PAYLOAD_TYPE, msgspec.json.encode(data))
        for admin in kit.admin_names:
            envelope = sign_roster(envelope, kit.signer(admin).key)
        versions[version] = envelope
    store = kit.store()
    assert not store.follow(versions)
    assert store.version == 1
    assert any("only by case" in r for r in store.refused), store.refused


def test_a_stray_file_in_the_roster_directory_is_named_not_a_crash(tmp_path: Path) -> None:
    """`Kit.read` (a local fleet's restart) reads `roster/v<N>.json`: another file there
    (an editor's backup, `v2.old.json`) is a one-line error naming it, not a traceback."""
    kit = Kit(now_ns=1)
    kit.write(tmp_path)
    assert Kit.read(tmp_path).roster == kit.roster
    (tmp_path / "roster" / "vbackup.json").write_bytes(encode_envelope(kit.latest))
    with pytest.raises(TrustError, match=r"roster file .*vbackup\.json: not named v<N>\.json"):
        Kit.read(tmp_path)


def test_a_version_file_under_another_spelling_of_its_name_is_refused(tmp_path: Path) -> None:
    """`Kit.write` names version N `v<N>.json`; `Kit.read` took "v02.json" as version 2 too,
    so one version had two file names (the one sorted first read in the other's place).
    Only the name `write` gives is read; another is a one-line error naming the file."""
    kit = Kit(now_ns=1)
    kit.add("dave", [Role.VIEWER])
    kit.write(tmp_path)
    assert Kit.read(tmp_path).roster == kit.roster
    (tmp_path / "roster" / "v2.json").rename(tmp_path / "roster" / "v02.json")
    with pytest.raises(TrustError, match=r"roster file .*v02\.json: not named v<N>\.json") as e:
        Kit.read(tmp_path)
    assert "\n" not in str(e.value)


async def test_a_version_heard_live_is_judged_when_it_is_heard() -> None:
    """A node follows the roster live (`follow_roster`): a version published now, signed by
    admins whose keys ended long ago and dated back inside their validity, is refused
    (before, with no time passed, every follower took it); one that the store already held
    when the node started is still judged at its own date (`sync_roster`)."""
    from knightwatch.control.node.trustfeed import follow_roster
    from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
    from knightwatch.control.plane.rosters import publish_roster

    kit = Kit(now_ns=1 * S, admins=2)
    ending = tuple(
        msgspec.structs.replace(m, valid_until_ns=50 * S) if m.name.startswith("admin") else m
        for m in kit.roster.members
    )
    v2 = msgspec.structs.replace(kit.roster, version=2, issued_ns=2 * S, members=ending)
    v3 = _by(kit, msgspec.structs.replace(v2, version=3, issued_ns=40 * S), "admin1", "admin2")
    fabric = MemoryFabric()
    writer = MemoryControlPlane(fabric)
    await writer.connect()
    await publish_roster(writer, _by(kit, v2, "admin1", "admin2"))
    node = MemoryControlPlane(fabric)
    await node.connect()
    store = kit.store()
    await follow_roster(node, store)
    assert store.version == 2  # stored before the start: judged at its own date
    await publish_roster(writer, v3)  # heard now (2026): its admins' keys ended in 1970
    assert store.version == 2
    assert any("when received" in r for r in store.refused), store.refused


def test_a_stored_version_whose_write_time_is_unknown_is_refused_except_the_first() -> None:
    """A store that records when each version was written (`sync_roster` on NATS) but holds
    no record of one: its own date is its signers' choice, so it is refused (fail closed)
    rather than judged by that date alone; version 1, verified against the pinned anchor,
    still loads."""
    kit = Kit(now_ns=1 * S, admins=2)
    v2 = kit.add("dave", [Role.OPERATOR])
    store = TrustStore(kit.anchor)
    assert store.follow({1: kit.envelopes[0], 2: v2}, published_ns={})
    assert store.version == 1
    assert store.refused == [
        "roster version 2 refused: the store holds no record of when it was written: its "
        "signers' keys cannot be judged then (fail closed)"
    ]
    assert store.follow({2: v2}, published_ns={2: 2 * S})
    assert store.version == 2


def test_refusals_remembered_are_bounded_and_the_real_version_still_follows() -> None:
    """One admin may write where the next version goes as often as they like, each record
    judged as it arrives (`follow_roster`): refusals naming their own dates were all kept,
    every process's memory growing without end. The newest `REFUSED_KEPT` are
    kept, and the real version written after them is still accepted."""
    kit = Kit(now_ns=1 * S, admins=2)
    real = kit.add("dave", [Role.VIEWER])
    store = TrustStore.of(kit.anchor, kit.envelopes[0])
    for i in range(REFUSED_KEPT * 4):
        dated = msgspec.structs.replace(kit.roster, issued_ns=100 * S + i)
        assert not store.follow({2: roster_envelope(dated)}, received_ns=2 * S)
    assert len(store.refused) == REFUSED_KEPT
    assert f"{100 * S + REFUSED_KEPT * 4 - 1} is more than 5 s after" in store.refused[-1]
    assert store.follow({2: real}, received_ns=2 * S)
    assert store.version == 2
