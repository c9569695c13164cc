"""A roster version never leaves the fleet with no key able to kill.

A kill is signed by one operator or the supervisor (`trust.command`). Before, a version
signed by the admin threshold (one admin, with `admin_threshold = 1`: taking power away
is one admin's) could revoke every such key, end their validity now or a minute later,
drop the operator role from everyone, or keep only keys that begin later: every node
then refused every kill until another version was signed, the stop direction gated by a
roster change. Now such a version is refused naming the rule, whoever signs it; a
replacement key enrolled in the same version keeps the stop (and, giving power, needs a
second admin as before). A roster that could not kill before (a fresh site) is not made
worse by a version that does not touch it, so it still moves on.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from knightwatch.release.dsse import Envelope
from knightwatch.release.keys import SigningKey
from knightwatch.trust.kit import Kit, member_of
from knightwatch.trust.roster import Member, Role, Roster, TrustError, roster_envelope, sign_roster
from knightwatch.trust.store import TrustStore

T0 = 1_000_000_000
KILLERS = ("alice", "bob", "supervisor")
"""The kit's keys able to kill: two operators and the supervisor."""


def _by(kit: Kit, roster: Roster, *admins: str) -> Envelope:
    envelope = roster_envelope(roster)
    for name in admins:
        envelope = sign_roster(envelope, kit.signer(name).key)
    return envelope


def _next(roster: Roster, members: list[Member], **changes: object) -> Roster:
    return msgspec.structs.replace(
        roster,
        version=roster.version + 1,
        issued_ns=roster.issued_ns + 1,
        members=tuple(members),
        **changes,
    )


def _set(r: Roster, names: tuple[str, ...], **changes: object) -> list[Member]:
    return [msgspec.structs.replace(m, **changes) if m.name in names else m for m in r.members]


def _no_operator(r: Roster) -> list[Member]:
    return [
        msgspec.structs.replace(m, roles=(Role.APPROVER,)) if Role.OPERATOR in m.roles else m
        for m in r.members
    ]


def _stores(threshold: int) -> tuple[Kit, TrustStore]:
    kit = Kit(now_ns=T0, admins=2)
    store = kit.store()
    if threshold == 1:
        v2 = _next(kit.roster, list(kit.roster.members), admin_threshold=1)
        store.accept(_by(kit, v2, "admin1", "admin2"))
    return kit, store


LOSSES: list[tuple[str, Callable[[Roster], list[Member]]]] = [
    ("every kill key revoked", lambda r: _set(r, KILLERS, revoked_ns=r.issued_ns + 1)),
    ("every kill key ended now", lambda r: _set(r, KILLERS, valid_until_ns=r.issued_ns + 1)),
    (
        "every kill key ends a minute later",
        lambda r: _set(r, KILLERS, valid_until_ns=r.issued_ns + 60_000_000_000),
    ),
    (
        "every kill key revoked a minute later",
        lambda r: _set(r, KILLERS, revoked_ns=r.issued_ns + 60_000_000_000),
    ),
    (
        "the operator role dropped, the supervisor revoked",
        lambda r: _set(
            msgspec.structs.replace(r, members=tuple(_no_operator(r))),
            ("supervisor",),
            revoked_ns=r.issued_ns + 1,
        ),
    ),
    (
        "the kill keys removed from the roster",
        lambda r: [m for m in r.members if m.name not in KILLERS],
    ),
    (
        "operators revoked earlier, the supervisor's key ending 10 ns on",
        lambda r: _set(
            msgspec.structs.replace(r, members=tuple(_set(r, ("alice", "bob"), revoked_ns=1))),
            ("supervisor",),
            valid_until_ns=r.issued_ns + 10,
        ),
    ),
]


@pytest.mark.parametrize("threshold", [1, 2], ids=["one admin (threshold 1)", "threshold 2"])
@pytest.mark.parametrize(("what", "lose"), LOSSES, ids=[w for w, _ in LOSSES])
def test_a_version_leaving_nobody_able_to_kill_is_refused(
    threshold: int, what: str, lose: Callable[[Roster], list[Member]]
) -> None:
    kit, store = _stores(threshold)
    before = store.roster
    assert before is not None
    after = _next(before, lose(before))  # `lose` dates its changes at after's instant
    with pytest.raises(TrustError) as exc:
        store.accept(_by(kit, after, "admin1", "admin2"))
    assert "never leaves the fleet unable to kill" in str(exc.value), what
    assert store.roster is before  # the roster in force stays


def test_a_version_keeping_only_kill_keys_that_begin_later_is_refused() -> None:
    """The fleet has none able to kill today: keys dated to begin an hour on are no stop."""
    kit, store = _stores(2)
    before = store.roster
    assert before is not None
    later = before.issued_ns + 1 + 3_600_000_000_000
    fresh = [
        member_of(n, SigningKey.generate(), before.keys_of(n)[0].roles, valid_from_ns=later)
        for n in KILLERS
    ]
    after = _next(before, [*_set(before, KILLERS, revoked_ns=before.issued_ns + 1), *fresh])
    with pytest.raises(TrustError, match="no operator or supervisor key would be valid at its"):
        store.accept(_by(kit, after, "admin1", "admin2"))


def test_one_admin_still_revokes_all_but_one_kill_key_alone() -> None:
    kit, store = _stores(1)
    before = store.roster
    assert before is not None
    after = _next(before, _set(before, ("alice", "supervisor"), revoked_ns=before.issued_ns + 1))
    assert store.accept(_by(kit, after, "admin1")).version == after.version


def test_revoking_every_kill_key_with_a_replacement_in_the_same_version_is_accepted() -> None:
    kit, store = _stores(1)
    before = store.roster
    assert before is not None
    erin = member_of("erin", SigningKey.generate(), (Role.OPERATOR,))
    after = _next(before, [*_set(before, KILLERS, revoked_ns=before.issued_ns + 1), erin])
    # giving a key still takes the second admin
    trial = TrustStore(kit.anchor)
    trial.roster = before
    with pytest.raises(TrustError, match="of 2 required"):
        trial.accept(_by(kit, after, "admin1"))
    assert store.accept(_by(kit, after, "admin1", "admin2")).version == after.version


def test_a_rotation_of_every_kill_key_keeps_the_stop() -> None:
    kit = Kit(now_ns=T0, admins=2)
    store = kit.store()
    for name in KILLERS:
        kit.rotate(name, kit.roster.issued_ns + 1)
        store.accept(kit.latest)
    assert store.roster == kit.roster


def test_a_version_ending_every_key_of_the_roster_is_refused_too() -> None:
    """Every key ending at once leaves no admin to sign the next version either, but the
    nodes trade on without their keys: nobody could kill them."""
    kit, store = _stores(1)
    before = store.roster
    assert before is not None
    end = before.issued_ns + 1 + 60_000_000_000
    after = _next(before, [msgspec.structs.replace(m, valid_until_ns=end) for m in before.members])
    with pytest.raises(TrustError, match=f"valid from {end} "):
        store.accept(_by(kit, after, "admin1"))


def test_kill_keys_ending_as_they_already_did_are_no_refusal() -> None:
    """Keys enrolled with an end (a desk's key lifetime) end then, version after version;
    a version that does not bring that instant forward is not refused for it."""
    end = T0 + 86_400_000_000_000
    kit = Kit(now_ns=T0, admins=2)
    v1 = msgspec.structs.replace(
        kit.roster,
        members=tuple(
            msgspec.structs.replace(m, valid_until_ns=end) if m.name in KILLERS else m
            for m in kit.roster.members
        ),
    )
    store = TrustStore.of(kit.anchor, _by(kit, v1, "admin1", "admin2"))
    v2 = _next(v1, _set(v1, ("alice",), revoked_ns=v1.issued_ns + 1))
    assert store.accept(_by(kit, v2, "admin1", "admin2")).version == 2
    v3 = _next(v2, _set(v2, ("bob",), valid_until_ns=end - 1))  # bob ends sooner: still one
    assert store.accept(_by(kit, v3, "admin1", "admin2")).version == 3
    v4 = _next(v3, _set(v3, ("supervisor",), valid_until_ns=end - 2))  # now the end is sooner
    with pytest.raises(TrustError, match=f"valid from {end - 1} "):
        store.accept(_by(kit, v4, "admin1", "admin2"))


def test_a_roster_that_could_not_kill_before_still_moves_on() -> None:
    """A fresh site enrols its operators after its admins: not refused for a gap it had."""
    kit = Kit(now_ns=T0, admins=2, people={"carol": (Role.VIEWER,)})
    v1 = msgspec.structs.replace(
        kit.roster, members=tuple(m for m in kit.roster.members if m.name != "supervisor")
    )
    store = TrustStore.of(kit.anchor, _by(kit, v1, "admin1", "admin2"))
    v2 = _next(v1, [*v1.members, member_of("dan", SigningKey.generate(), (Role.VIEWER,))])
    assert store.accept(_by(kit, v2, "admin1", "admin2")).version == 2
    v3 = _next(v2, [*v2.members, member_of("erin", SigningKey.generate(), (Role.OPERATOR,))])
    assert store.accept(_by(kit, v3, "admin1", "admin2")).version == 3
