"""NATS authorization from the roster: who may connect, and what each may publish and read.

Defence in depth under the signatures: the server itself refuses what an
identity has no business sending. Every roster key is a NATS user (its nkey
is the same Ed25519 key), with permissions by role:

* everyone: the JetStream read API, the kill state and republished records,
  and replies on its own inbox (`_INBOX.<key id>.>`, never another's);
* but only those who watch the fleet (viewer, operator, approver, admin, supervisor)
  read the record streams (`KW_AUDIT`: every node's flight-recorder lines, its orders,
  strategies and sizes; `KW_METRICS`): a node, the admission service or the venue
  cannot get their messages or put a consumer on them (`_RECORD_READS`), and no
  subscription to their subjects is theirs either;
* node N: only its own subjects (confirmations, heartbeats, metrics, audit,
  its membership key, flag confirmations and start history), its automatic halts to the
  relay, admission requests; it can never write the kill state;
* operator / approver: the kill state (announce and store), pending requests,
  flags and rollouts, resume ramps and incident records, the target release request;
* supervisor: the kill state, its audit subject, the automatic-halt relay;
* admission: verdicts and the target release, answering admission requests;
* admin: the roster.

An unauthenticated client cannot connect at all. Nobody but the server's
provisioner (a key that exists only in the process that starts the server)
may create, change or purge streams and buckets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from knightwatch.release.keys import VerifyKey
from knightwatch.trust.identity import nkey_public
from knightwatch.trust.roster import Role, Roster

ACCOUNT = "KNIGHTWATCH"

_JS_READ = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.>",
    "$JS.API.STREAM.MSG.GET.>",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.INFO.>",
    "$JS.FC.>",
]
_WATCH = ["kw.confirm.*", "kw.hb.*", "kw.metrics.*", "kw.msg.>"]
_WATCHERS = frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN, Role.SUPERVISOR})
"""The roles that read the whole fleet's records (`snapshot`, the console, `status`)."""
_RECORD_STREAMS = ("KW_AUDIT", "KW_METRICS")
"""Streams of every node's records (`nats.AUDIT_STREAM`, `nats.METRICS_STREAM`)."""
_RECORD_READS = [
    api
    for stream in _RECORD_STREAMS
    for api in (
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
    )
]
"""What `_JS_READ` allows on every stream that would read a record stream's messages:
denied to everyone who does not watch the fleet. A node reading every other node's
decisions would learn the whole fleet's orders. `STREAM.INFO` stays (every
connection binds to the streams): it counts messages, it never hands one over."""
_KILL_STATE = ["kw.state", "$KV.kw_state.>"]


def inbox_prefix(key_id: str) -> str:
    """Where replies to one key's requests go: readable by that key alone."""
    return f"_INBOX.{key_id[:16]}"


def permissions(name: str, roles: Iterable[Role], key_id: str) -> dict[str, object]:
    """The publish/subscribe allow lists of one identity (deny by default)."""
    pub = [*_JS_READ]
    sub = ["kw.state", "kw.repub.>", f"{inbox_prefix(key_id)}.>"]
    responses = False
    held = set(roles)
    for role in held:
        if role is Role.VIEWER:
            sub += _WATCH
        elif role in (Role.OPERATOR, Role.APPROVER):
            pub += [*_KILL_STATE, "$KV.kw_approvals.>", "$KV.kw_rollouts.>"]
            # a flag's state and change log; each node's applied record is the node's
            # alone (its memory of the newest change it applied, `NodeFlags`)
            pub += ["$KV.kw_flags.state.>", "$KV.kw_flags.change.>"]
            pub += ["$KV.kw_ramp.>", "$KV.kw_incident.>"]
            pub += ["kw.req.admission.target"]
            sub += _WATCH
        elif role is Role.ADMIN:
            pub += ["$KV.kw_roster.>"]
            sub += _WATCH
        elif role is Role.SUPERVISOR:
            pub += [*_KILL_STATE, "kw.audit.supervisor"]
            sub += _WATCH
        elif role is Role.ADMISSION:
            pub += ["$KV.kw_admission.>", "$KV.kw_release.>"]
            sub += ["kw.req.admission.>"]
            responses = True
        elif role is Role.NODE:
            pub += [
                f"kw.confirm.{name}",
                f"kw.hb.{name}",
                f"kw.metrics.{name}",
                f"kw.audit.{name}",
                f"$KV.kw_members.{name}",
                f"$KV.kw_checkpoints.{name}",
                f"$KV.kw_incident.starts.{name}",
                f"$KV.kw_flags.applied.{name}.>",
                "kw.msg.flags.applied",
                "kw.msg.autohalt",
                "kw.req.admission.challenge",
                "kw.req.admission.attest",
                "kw.venue.orders",
            ]
            sub += [f"kw.hb.{name}", f"kw.drill.runaway.{name}"]
        elif role is Role.VENUE:
            pub += ["kw.drill.runaway.>"]
            sub += ["kw.venue.orders"]
            responses = True
    publish: dict[str, list[str]] = {"allow": sorted(set(pub))}
    if not _WATCHERS & held:
        publish["deny"] = list(_RECORD_READS)
    perms: dict[str, object] = {
        "publish": publish,
        "subscribe": {"allow": sorted(set(sub))},
    }
    if responses:
        perms["allow_responses"] = True
    return perms


def users(roster: Roster, provisioner_nkey: str) -> list[dict[str, object]]:
    """One NATS user per roster key that is neither revoked nor rotated out (its validity
    ended by the version's instant), plus the provisioner."""
    out: list[dict[str, object]] = [{"nkey": provisioner_nkey}]
    for member in roster.members:
        if member.revoked_ns or 0 < member.valid_until_ns <= roster.issued_ns:
            continue
        key = VerifyKey.from_base64(member.public_key, field=member.name)
        out.append(
            {
                "nkey": nkey_public(key),
                "permissions": permissions(member.name, member.roles, member.key_id),
            }
        )
    return out


def accounts_block(roster: Roster, provisioner_nkey: str) -> str:
    """The `accounts` block of a nats-server config (JSON is valid server config syntax)."""
    account = {"jetstream": "enabled", "users": users(roster, provisioner_nkey)}
    return f"accounts: {json.dumps({ACCOUNT: account}, indent=1)}\n"
