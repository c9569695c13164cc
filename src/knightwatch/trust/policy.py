"""Who may ask for what: one table the console's pages, its API and the CLI all consult.

The rule that finally counts is checked where the state is applied (nodes
verify every kill-switch command and every flag change against the roster, the
admission service verifies target approvals). This module decides earlier, with the
same roles, so that what the console's page refuses its API refuses too, and
the CLI refuses it before connecting: nobody is shown a button the fleet would
refuse, and nobody gets a different answer by choosing another door.

Two directions, never mixed up:

* stop (kill, drain, flag to its safe default, rollout abort, acknowledging
  an alert): one person with the operator role (or the supervisor's service
  identity for kills), never waiting on anything else;
* loosen (request a resume, approve one): requested by an operator, approved
  by a different person with the approver role who re-authenticated. A
  service identity never approves, and the admin role grants no approval.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

import msgspec

from knightwatch.trust.roster import PERSON_ROLES, Role, Roster


class Action(StrEnum):
    VIEW = "view"
    """Read the fleet, the audit and the requests."""
    KILL = "kill"
    """Halt or drain a scope: the stop direction."""
    SAFE_DEFAULT = "safe_default"
    """Turn a flag to its safe default: the stop direction."""
    ROLLOUT_ABORT = "rollout_abort"
    """Abort a rollout (its flag back to the safe default): the stop direction."""
    ACK_ALERT = "ack_alert"
    """Acknowledge a supervisor alert (recorded; changes no trading state)."""
    REQUEST_RESUME = "request_resume"
    """Ask for a resume: the first of two people."""
    APPROVE = "approve"
    """Approve someone else's request: the second person."""


NEEDS: dict[Action, frozenset[Role]] = {
    Action.VIEW: frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}),
    Action.KILL: frozenset({Role.OPERATOR, Role.SUPERVISOR}),
    Action.SAFE_DEFAULT: frozenset({Role.OPERATOR}),
    Action.ROLLOUT_ABORT: frozenset({Role.OPERATOR}),
    Action.ACK_ALERT: frozenset({Role.OPERATOR}),
    Action.REQUEST_RESUME: frozenset({Role.OPERATOR}),
    Action.APPROVE: frozenset({Role.APPROVER}),
}
"""Any one of these roles allows the action (the roster decides who holds which)."""


class Verdict(msgspec.Struct, frozen=True):
    allowed: bool
    why: str = ""
    """For a refusal: one sentence naming the rule."""


def held_roles(
    roster: Roster | None, name: str, scope: Collection[Role] | None = None
) -> frozenset[Role]:
    """The roles `name` acts with: the roster's, viewer for every person (every person may
    read, and so may a viewer-only token of theirs), narrowed to a credential's `scope`."""
    held = set(roles_of(roster, name))
    if held & PERSON_ROLES:
        held.add(Role.VIEWER)
    if scope is not None:
        held &= set(scope)
    return frozenset(held)


def decide(
    roster: Roster | None,
    name: str,
    action: Action,
    *,
    scope: Collection[Role] | None = None,
    service: bool = False,
    requester: str | None = None,
) -> Verdict:
    """May `name` do `action`?

    `scope`: the roles a credential was narrowed to (an API token), never more
    than the roster grants; `service`: a service credential (never approves);
    `requester`: for an approval, who asked (the same person never counts).
    """
    if roster is None:
        return Verdict(False, "no verified roster: nobody can be authorised")
    held = held_roles(roster, name, scope)
    if not held & NEEDS[action]:
        needed = " or ".join(sorted(r.value for r in NEEDS[action]))
        what = ", ".join(sorted(r.value for r in held)) or "no role"
        return Verdict(False, f"{action.value} needs the {needed} role; {name} holds {what}")
    if action is Action.APPROVE:
        if service:
            return Verdict(False, "a service credential never approves")
        if requester is not None and requester == name:
            return Verdict(
                False, f"{name} requested it; the requester never counts as the second person"
            )
    return Verdict(True)


def roles_of(roster: Roster | None, name: str) -> frozenset[Role]:
    if roster is None:
        return frozenset()
    return frozenset(role for member in roster.keys_of(name) for role in member.roles)
