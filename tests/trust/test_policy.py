"""The one policy table: roles from the signed roster, narrowed by a credential, never widened."""

from __future__ import annotations

import pytest

from knightwatch.trust.kit import Kit
from knightwatch.trust.policy import NEEDS, Action, decide, held_roles, roles_of
from knightwatch.trust.roster import Role

KIT = Kit(now_ns=0, nodes=["n1"])
ROSTER = KIT.roster


@pytest.mark.parametrize("action", list(Action))
def test_every_action_has_a_rule(action: Action) -> None:
    assert NEEDS[action]


@pytest.mark.parametrize(
    ("name", "action", "allowed"),
    [
        ("alice", Action.KILL, True),
        ("carol", Action.KILL, False),
        ("carol", Action.VIEW, True),
        ("supervisor", Action.KILL, True),
        ("supervisor", Action.APPROVE, False),
        ("supervisor", Action.REQUEST_RESUME, False),
        ("n1", Action.KILL, False),
        ("n1", Action.VIEW, False),
        ("admin1", Action.APPROVE, False),
        ("admin1", Action.KILL, False),
        ("bob", Action.APPROVE, True),
        ("alice", Action.SAFE_DEFAULT, True),
        ("carol", Action.ROLLOUT_ABORT, False),
        ("nobody", Action.VIEW, False),
    ],
)
def test_roles_decide(name: str, action: Action, allowed: bool) -> None:
    verdict = decide(ROSTER, name, action)
    assert verdict.allowed is allowed
    if not allowed:
        assert action.value in verdict.why and name in verdict.why


def test_the_requester_never_approves_their_own_request() -> None:
    verdict = decide(ROSTER, "alice", Action.APPROVE, requester="alice")
    assert not verdict.allowed
    assert "requester never counts" in verdict.why
    assert decide(ROSTER, "bob", Action.APPROVE, requester="alice").allowed


def test_a_service_credential_never_approves_even_with_the_role() -> None:
    verdict = decide(ROSTER, "bob", Action.APPROVE, service=True, requester="alice")
    assert not verdict.allowed and "service" in verdict.why


def test_a_credential_scope_narrows_and_never_widens() -> None:
    viewer_token = frozenset({Role.VIEWER})
    assert decide(ROSTER, "alice", Action.VIEW, scope=viewer_token).allowed
    assert not decide(ROSTER, "alice", Action.KILL, scope=viewer_token).allowed
    # carol's token claiming operator gains nothing: the roster does not grant it
    assert not decide(ROSTER, "carol", Action.KILL, scope=frozenset({Role.OPERATOR})).allowed


def test_no_roster_refuses_everything() -> None:
    for action in Action:
        assert not decide(None, "alice", action).allowed
    assert roles_of(None, "alice") == frozenset()


def test_roles_of_unions_every_key_of_a_name() -> None:
    assert roles_of(ROSTER, "alice") == {Role.OPERATOR, Role.APPROVER}
    assert roles_of(ROSTER, "nobody") == frozenset()


def test_held_roles_are_what_decide_judges_viewer_for_every_person_never_a_component() -> None:
    """What a credential is shown to hold (the console's whoami, its audit log) is what the
    policy judges by: an operator's viewer-only token holds viewer, not nothing."""
    viewer = frozenset({Role.VIEWER})
    assert held_roles(ROSTER, "alice", viewer) == viewer
    assert held_roles(ROSTER, "alice") == {Role.OPERATOR, Role.APPROVER, Role.VIEWER}
    assert held_roles(ROSTER, "alice", frozenset({Role.OPERATOR, Role.ADMIN})) == {Role.OPERATOR}
    assert held_roles(ROSTER, "n1") == roles_of(ROSTER, "n1") and Role.VIEWER not in roles_of(
        ROSTER, "n1"
    )
    assert held_roles(ROSTER, "n1", viewer) == frozenset()
    assert held_roles(None, "alice") == frozenset()
    for name in ("alice", "carol", "n1", "nobody"):
        for scope in (None, viewer, frozenset({Role.OPERATOR})):
            for action in Action:
                allowed = decide(ROSTER, name, action, scope=scope).allowed
                assert allowed <= bool(held_roles(ROSTER, name, scope) & NEEDS[action])
