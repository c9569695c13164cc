"""NATS authorization from the roster: who may connect, and what each may publish and read.

Defence in depth under the signatures: the server itself refuses what an
identity has no business sending. Every roster key valid now is a NATS user (its
nkey is the same Ed25519 key; `users` judges validity at the instant it renders, and
the server renders again at each `next_boundary`), with permissions by role:

* everyone: the JetStream read API (reads, and consumers only as ephemerals the server
  names: `_JS_READ`), the kill state and republished records, and replies on its own
  inbox (`_INBOX.<key id>.>`, never another's);
* but only those who watch the fleet (viewer, operator, approver, admin, supervisor)
  read the record streams (`KW_AUDIT`: every node's flight-recorder lines, its orders,
  strategies and sizes; `KW_METRICS`): a node, the admission service or the venue
  cannot get their messages or put a consumer on them (`_RECORD_READS`), and no
  subscription to their subjects is theirs either;
* node N: only its own subjects (confirmations, heartbeats, metrics, audit,
  its membership key, flag confirmations and start history), its automatic halts to the
  relay, admission requests; it can never write the kill state. What it may store is
  bounded: one key of each bucket, history 1, and streams and the flag-confirmation
  bucket (`kw_flags_applied`, a key per flag) with byte bounds below the server's store,
  so no node can fill the store the kill state is written to;
* operator / approver: the kill state (announce and store), pending requests,
  flags and rollouts, resume ramps, the known-good release record (never a node's
  start history), the target release request;
* supervisor: the kill state, its audit subject, the automatic-halt relay;
* admission: verdicts and the target release, answering admission requests;
* admin: the roster's next versions (`ROSTER_AHEAD` versions after the version the server
  serves), never a version stored: every process walks the stored versions in order, and
  one admin's raw write over one (or a copy of an older one under another spelling of its
  key) stopped every process that started afterwards before it, a revocation undone by
  one person. Each next version's key and the admin's own slot of it
  (`rosters.roster_slot`), which no other admin may write: one admin's junk at the
  version's key cannot keep another's real version (a revocation) out of the store.

An unauthenticated client cannot connect at all. Nobody but the server's
provisioner (a key that exists only in the process that starts the server)
may create, change or purge streams and buckets; they live in an account of their own
(`STORE_ACCOUNT`), so no identity can have the server store its answers by naming a
stream's subject as the reply to a request or a write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from knightwatch.control.plane.rosters import roster_slot
from knightwatch.control.plane.wire import KNOWN_GOOD_KEY
from knightwatch.release.keys import VerifyKey
from knightwatch.trust.identity import nkey_public
from knightwatch.trust.roster import Role, Roster

ACCOUNT = "KNIGHTWATCH"
"""Where every roster key logs in: its permissions, core subjects, no JetStream of its own."""
STORE_ACCOUNT = "KNIGHTWATCH_STORE"
"""Where the streams and buckets live, and only the provisioner logs in.

Publish permissions judge a message's subject, never its reply subject, and JetStream
answers every API request and every stored publish (its ack) on the reply subject the
sender chose, published by the server itself. In one account with the streams, that
answer was stored wherever the reply named: any identity (a node, a viewer) wrote the
server's JSON into the fleet's kill-state slot (an undecodable halt of the fleet), over
another node's membership or start history, a roster version or the target release,
and, a megabyte answer per request, filled the store until the kill state's writes were
refused. Here the roster's account reaches the store through service imports: the store
answers on a reply subject of its own, and the answer comes back to the asker's account
on the reply it named, where no stream stores anything."""
_STORE_SERVICES = ("$JS.API.>", "$JS.FC.>", "$KV.>", "kw.audit.>", "kw.metrics.>")
"""What the roster's account sends into the store: the JetStream API, flow control
answers, bucket writes and the record streams' subjects (`nats.AUDIT_STREAM`,
`nats.METRICS_STREAM`); each sender's own publish permissions still judge each."""
_STORE_STREAMS = ("_INBOX.>", "kw.repub.>")
"""What the store sends back: consumers' deliveries to their creator's inbox (a snapshot,
a watch) and every stored record republished (`kw.repub.<bucket>`)."""

_JS_READ = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.>",
    "$JS.API.STREAM.MSG.GET.>",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.CREATE.*",
    "$JS.API.CONSUMER.DELETE.*.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.FC.>",
]
"""Reading streams and buckets. A consumer only as an ephemeral (`CONSUMER.CREATE.<stream>`,
what a KV watch asks for; the server refuses one there that names an existing consumer
or is durable): never through the named forms (`CONSUMER.CREATE.<stream>.<name>[.<filter>]`,
`CONSUMER.DURABLE.CREATE`), which made a durable consumer that outlives its owner, or
rewrote the config of an existing consumer of that name. Deleting or reading a consumer
takes its name, which only its creator was told: nobody may list them (`CONSUMER.LIST`,
`CONSUMER.NAMES`). No stream or message is ever deleted, purged, updated or created
through the API (the provisioner's alone)."""
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
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
    )
]
"""What `_JS_READ` allows on every stream that would read a record stream's messages:
denied to everyone who does not watch the fleet. A node reading every other node's
decisions would learn the whole fleet's orders. `STREAM.INFO` stays (every
connection binds to the streams): it counts messages, it never hands one over."""
_KILL_STATE = ["kw.state", "$KV.kw_state.>"]
ROSTER_AHEAD = 16
"""How many versions past the one the server serves admins may store before it serves a
newer one (the embedded server renders its users again at each version it verifies)."""


def roster_subject(version: int, key_id: str | None = None) -> str:
    """Where roster version `version` is stored: its key or, given an admin's `key_id`,
    that admin's own slot of it (`rosters.roster_slot`)."""
    return f"$KV.kw_roster.{roster_slot(version, key_id)}"


def inbox_prefix(key_id: str) -> str:
    """Where replies to one key's requests go: readable by that key alone."""
    return f"_INBOX.{key_id[:16]}"


def answerable(reply: str | None) -> bool:
    """Whether a responder (`allow_responses`: the admission service, the drill's venue)
    may answer on `reply`: an inbox only. The server lets a responder publish its answer on
    whatever reply subject the request named, deny lists or not, so a node that named
    `$KV.kw_state.fleet.fleet` had the admission service's answer stored as the fleet's
    kill state (undecodable: every node halted), or over another node's records."""
    return (
        reply is not None and reply.startswith("_INBOX.") and ">" not in reply and "*" not in reply
    )


def permissions(
    name: str, roles: Iterable[Role], key_id: str, *, roster_version: int
) -> dict[str, object]:
    """The publish/subscribe allow lists of one identity (deny by default), under the
    roster version `roster_version` the server serves."""
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
            # of the incident records only the release a kill froze on (`known_good`);
            # each node's start history (`starts.<node>`, the resume preflight's
            # crash-loop evidence) is the node's alone: one operator erasing it would
            # pass a crash-looping node through a two-person resume's preflight
            pub += ["$KV.kw_ramp.>", f"$KV.kw_incident.{KNOWN_GOOD_KEY}"]
            pub += ["kw.req.admission.target"]
            sub += _WATCH
        elif role is Role.ADMIN:
            # the next versions' keys, in the one spelling readers store them under, and
            # this admin's own slot of each; a stored version is never written again
            # (`publish_roster` asks for none)
            for version in range(roster_version + 1, roster_version + 1 + ROSTER_AHEAD):
                pub += [roster_subject(version), roster_subject(version, key_id)]
            sub += _WATCH
        elif role is Role.SUPERVISOR:
            # and the day history its daily rule counts (`supervisor.DayRecord`), which a
            # restarted supervisor reads back: no one else writes it
            pub += [*_KILL_STATE, "kw.audit.supervisor", "$KV.kw_incident.supervisor_day.>"]
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
                # in a bounded bucket of its own (`nats.APPLIED_BUCKET`): a key per flag,
                # so a node could write keys without end, never where the kill state or
                # the flags' own records are stored
                f"$KV.kw_flags_applied.applied.{name}.>",
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


def users(roster: Roster, provisioner_nkey: str, *, now_ns: int) -> list[dict[str, object]]:
    """One NATS user per roster key valid at `now_ns` (not revoked, its validity started
    and not ended), plus the provisioner.

    Judged now, never at the version's issue time: a key whose validity ends after its
    version was stored would otherwise keep its login (and its publish permissions, the
    only check on some writes) until the next version, and one whose validity has not
    started would log in early. Whoever serves this re-renders at `next_boundary`."""
    out: list[dict[str, object]] = [{"nkey": provisioner_nkey}]
    for member in roster.members:
        if member.revoked_ns or not member.valid_at(now_ns):
            continue
        key = VerifyKey.from_base64(member.public_key, field=member.name)
        out.append(
            {
                "nkey": nkey_public(key),
                "permissions": permissions(
                    member.name, member.roles, member.key_id, roster_version=roster.version
                ),
            }
        )
    return out


def next_boundary(roster: Roster, now_ns: int) -> int | None:
    """The next instant after `now_ns` at which `users` changes (a key's validity starts or
    ends), or None: the server's authorization must be rendered again then."""
    edges = [
        ns
        for m in roster.members
        if not m.revoked_ns
        for ns in (m.valid_from_ns, m.valid_until_ns)
        if ns > now_ns
    ]
    return min(edges, default=None)


def accounts_block(roster: Roster, provisioner_nkey: str, *, now_ns: int) -> str:
    """The `accounts` block of a nats-server config (JSON is valid server config syntax),
    with the users valid at `now_ns`: the roster's in `ACCOUNT`, the provisioner alone in
    `STORE_ACCOUNT` with the streams and buckets (why two: `STORE_ACCOUNT`)."""
    people = users(roster, provisioner_nkey, now_ns=now_ns)
    provisioner, members = people[0], people[1:]
    store = {
        "jetstream": "enabled",
        "users": [provisioner],
        "exports": [{"service": s} for s in _STORE_SERVICES]
        + [{"stream": s} for s in _STORE_STREAMS],
    }
    account = {
        "users": members,
        "imports": [{"service": {"account": STORE_ACCOUNT, "subject": s}} for s in _STORE_SERVICES]
        + [{"stream": {"account": STORE_ACCOUNT, "subject": s}} for s in _STORE_STREAMS],
    }
    accounts = {STORE_ACCOUNT: store, ACCOUNT: account}
    return f"accounts: {json.dumps(accounts, indent=1)}\n"
