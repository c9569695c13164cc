"""The roster's admin rule with `admin_threshold = 1`: one admin takes power away alone,
but gives it only with a second admin whenever there are two.

Before, once the admins signed a roster with threshold 1, one admin alone could add a
second identity for themselves (an approver, another admin, a key under someone else's
name) and then act as two people on every two-person rule. A fresh site's one admin
still signs alone, including the version that adds the second admin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from knightwatch.flags.activation import SecondApprover
from knightwatch.release.dsse import Envelope
from knightwatch.release.keys import SigningKey
from knightwatch.trust.identity import Signer
from knightwatch.trust.kit import Kit, member_of
from knightwatch.trust.roster import Member, Role, Roster, TrustError, roster_envelope, sign_roster
from knightwatch.trust.store import TrustStore

T0 = 1_000


def _by(kit: Kit, roster: Roster, *admins: str) -> Envelope:
    envelope = roster_envelope(roster)
    for name in admins:
        envelope = sign_roster(envelope, kit.signer(name).key)
    return envelope


def _next(roster: Roster, members: tuple[Member, ...] | list[Member], **changes: object) -> Roster:
    return msgspec.structs.replace(
        roster,
        version=roster.version + 1,
        issued_ns=roster.issued_ns + 1,
        members=tuple(members),
        **changes,
    )


def _lax() -> tuple[Kit, TrustStore]:
    """Two admins who signed themselves down to `admin_threshold = 1` (version 2)."""
    kit = Kit(now_ns=T0, admins=2)
    store = kit.store()
    v2 = _next(kit.roster, kit.roster.members, admin_threshold=1)
    assert store.accept(_by(kit, v2, "admin1", "admin2")).admin_threshold == 1
    return kit, store


def _mine(name: str, roles: tuple[Role, ...]) -> Member:
    return member_of(name, SigningKey.generate(), roles)


def _replaced(members: tuple[Member, ...], name: str, **changes: object) -> list[Member]:
    return [msgspec.structs.replace(m, **changes) if m.name == name else m for m in members]


GRANTS: list[tuple[str, Callable[[Roster], Roster], str]] = [
    (
        "a second approver identity",
        lambda r: _next(r, [*r.members, _mine("admin1-too", (Role.APPROVER,))]),
        "adds key",
    ),
    (
        "a second admin identity",
        lambda r: _next(r, [*r.members, _mine("admin9", (Role.ADMIN,))]),
        "adds key",
    ),
    (
        "a new key under bob's name (a takeover)",
        lambda r: _next(r, [*r.members, _mine("bob", (Role.OPERATOR, Role.APPROVER))]),
        "adds key",
    ),
    (
        "an admission key (it writes the target record)",
        lambda r: _next(r, [*r.members, _mine("admission2", (Role.ADMISSION,))]),
        "adds key",
    ),
    (
        "a role for a viewer",
        lambda r: _next(r, _replaced(r.members, "carol", roles=(Role.VIEWER, Role.APPROVER))),
        "gives carol the role(s) approver",
    ),
    (
        "a looser resume rule",
        lambda r: _next(
            r,
            r.members,
            approvals=msgspec.structs.replace(r.approvals, resume=SecondApprover.NEVER),
        ),
        "changes the approval policy",
    ),
    (
        # a veto over the other: admin2 alone could no longer revoke admin1
        "a higher admin_threshold",
        lambda r: _next(r, r.members, admin_threshold=2),
        "raises admin_threshold from 1 to 2",
    ),
    (
        "the other admin revoked (one admin left)",
        lambda r: _next(r, _replaced(r.members, "admin2", revoked_ns=r.issued_ns + 1)),
        "leaves one admin",
    ),
    (
        "the other admin's key ended at once (one admin left, unrevoked)",
        lambda r: _next(r, _replaced(r.members, "admin2", valid_until_ns=r.issued_ns + 1)),
        "leaves one admin",
    ),
    (
        "the other admin's key ending in a minute (one admin left from then)",
        lambda r: _next(r, _replaced(r.members, "admin2", valid_until_ns=r.issued_ns + 60 * 10**9)),
        "leaves one admin",
    ),
    (
        "the other admin's key revoked in a minute (one admin left from then)",
        lambda r: _next(r, _replaced(r.members, "admin2", revoked_ns=r.issued_ns + 60 * 10**9)),
        "leaves one admin",
    ),
]


@pytest.mark.parametrize(("case", "change", "says"), GRANTS, ids=[g[0] for g in GRANTS])
def test_one_admin_cannot_give_power_alone_while_there_are_two(
    case: str, change: Callable[[Roster], Roster], says: str
) -> None:
    kit, store = _lax()
    assert store.roster is not None
    proposed = change(store.roster)
    with pytest.raises(TrustError, match=r"signed by 1 admin\(s\) \(admin1\) of 2 required") as e:
        store.accept(_by(kit, proposed, "admin1"))
    assert says in str(e.value) and "\n" not in str(e.value), e.value
    assert store.version == 2
    # the second admin's signature makes it a two-admin decision: accepted
    assert store.accept(_by(kit, proposed, "admin1", "admin2")).version == 3


def test_a_key_moved_to_another_name_or_its_validity_widened_is_a_grant() -> None:
    kit, store = _lax()
    assert store.roster is not None
    carol = next(m for m in store.roster.members if m.name == "carol")
    renamed = [m for m in store.roster.members if m.name != "carol"]
    renamed.append(msgspec.structs.replace(carol, name="carol2"))
    with pytest.raises(TrustError, match=r"moves key .* from carol to carol2"):
        store.accept(_by(kit, _next(store.roster, renamed), "admin1"))
    # bob's key shortened by one admin: taking away, accepted
    short = _next(store.roster, _replaced(store.roster.members, "bob", valid_until_ns=T0 * 9))
    assert store.accept(_by(kit, short, "admin1")).version == 3
    assert store.roster is not None
    for until in (0, T0 * 10):  # no end, a later end
        again = _next(store.roster, _replaced(store.roster.members, "bob", valid_until_ns=until))
        with pytest.raises(TrustError, match=r"widens the validity of bob's key"):
            store.accept(_by(kit, again, "admin1"))
    earlier = _next(store.roster, _replaced(store.roster.members, "bob", valid_from_ns=-1))
    with pytest.raises(TrustError, match=r"widens the validity of bob's key"):
        store.accept(_by(kit, earlier, "admin1"))
    # bob revoked by one admin (the stop direction): accepted; lifted by one: refused
    gone = _next(store.roster, _replaced(store.roster.members, "bob", revoked_ns=T0 * 5))
    assert store.accept(_by(kit, gone, "admin1")).version == 4
    assert store.roster is not None
    back = _next(store.roster, _replaced(store.roster.members, "bob", revoked_ns=0))
    with pytest.raises(TrustError, match=r"widens the validity of bob's key"):
        store.accept(_by(kit, back, "admin1"))
    later = _next(store.roster, _replaced(store.roster.members, "bob", revoked_ns=T0 * 6))
    with pytest.raises(TrustError, match=r"widens the validity of bob's key"):
        store.accept(_by(kit, later, "admin1"))
    assert store.version == 4


def test_one_admin_still_takes_power_away_alone() -> None:
    kit, store = _lax()
    assert store.roster is not None
    removed = _next(store.roster, [m for m in store.roster.members if m.name != "carol"])
    assert store.accept(_by(kit, removed, "admin1")).version == 3
    assert store.roster is not None
    fewer = _next(store.roster, _replaced(store.roster.members, "alice", roles=(Role.OPERATOR,)))
    assert store.accept(_by(kit, fewer, "admin2")).version == 4


def test_one_admin_of_three_cannot_entrench_themselves_by_the_threshold() -> None:
    """Three admins at threshold 1: admin1 alone raising it to 3 made admin1's own
    signature part of every later version (admin2 and admin3 together could no longer
    revoke admin1), and ending admin3's key beside it froze the roster for good (no
    revocation ever again without re-anchoring). Two admins may; lowering takes the
    threshold in force."""
    kit = Kit(now_ns=T0, admins=3)
    store = kit.store()
    assert store.roster is not None
    lax = _next(store.roster, store.roster.members, admin_threshold=1)
    assert store.accept(_by(kit, lax, "admin1", "admin2")).admin_threshold == 1
    assert store.roster is not None
    veto = _next(store.roster, store.roster.members, admin_threshold=3)
    frozen = _next(
        store.roster,
        _replaced(store.roster.members, "admin3", valid_until_ns=store.roster.issued_ns + 2),
        admin_threshold=3,
    )
    for proposed in (veto, frozen):
        with pytest.raises(TrustError, match=r"raises admin_threshold from 1 to 3.*of 2 required"):
            store.accept(_by(kit, proposed, "admin1"))
    assert store.version == 2
    # admin2 alone still revokes admin1 (the threshold in force takes power away)
    ousted = _next(store.roster, _replaced(store.roster.members, "admin1", revoked_ns=T0 * 5))
    assert store.accept(_by(kit, ousted, "admin2")).version == 3
    assert store.roster is not None
    # two admins raise it together; one of them alone cannot lower it again
    strict = _next(store.roster, store.roster.members, admin_threshold=2)
    assert store.accept(_by(kit, strict, "admin2", "admin3")).admin_threshold == 2
    assert store.roster is not None
    lower = _next(store.roster, store.roster.members, admin_threshold=1)
    with pytest.raises(TrustError, match=r"signed by 1 admin\(s\) \(admin2\) of 2 required"):
        store.accept(_by(kit, lower, "admin2"))
    assert store.version == 4


def test_a_fresh_sites_one_admin_signs_alone_until_there_is_a_second() -> None:
    kit = Kit(now_ns=T0, admins=1)
    store = kit.store()
    assert store.roster is not None and store.roster.admin_threshold == 1
    second = SigningKey.generate()
    kit.signers["admin2"] = Signer("admin2", second)
    grown = _next(store.roster, [*store.roster.members, member_of("admin2", second, [Role.ADMIN])])
    assert store.accept(_by(kit, grown, "admin1")).version == 2  # one admin: alone
    assert store.roster is not None and store.roster.admin_threshold == 1
    # now two admins: one of them alone gives nothing more
    extra = _next(store.roster, [*store.roster.members, _mine("admin1-too", (Role.APPROVER,))])
    with pytest.raises(TrustError, match=r"of 2 required: with two or more admins"):
        store.accept(_by(kit, extra, "admin1"))
    assert store.accept(_by(kit, extra, "admin2", "admin1")).version == 3


def test_a_proposal_that_gives_power_says_two_admins_must_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`identity add` on a two-admin site at threshold 1 proposes a version that gives
    power: the hint named the threshold (1) though publishing it takes two signatures."""
    from knightwatch.cli.identity import _propose

    kit, store = _lax()
    roster = store.roster
    assert roster is not None and roster.admin_threshold == 1
    dave = _mine("dave", (Role.APPROVER,))
    _propose(roster, [*roster.members, dave], kit.signer("admin1"), tmp_path / "add.json")
    assert "2 admin signature(s) needed" in capsys.readouterr().out
    less = [m for m in roster.members if m.name != "alice"]
    _propose(roster, less, kit.signer("admin1"), tmp_path / "remove.json")
    assert "1 admin signature(s) needed" in capsys.readouterr().out
