"""The control plane on NATS JetStream: the live fleet's backend.

Design choices come from measured NATS behaviour (docs/control-plane.md):

* Durable state is in KV buckets with compare-and-swap. The state bucket
  republishes every stored entry onto a core subject, and nodes listen there
  rather than through `kv.watch()`, whose consumer can go silently blind for
  ~17 s when the server holding it dies.
* Kill announcements, confirmations and heartbeats are core publishes: they
  fan out in ~1 ms and keep flowing while a clustered store elects a leader.
* Client pings every second with two outstanding allowed, so a hung server is
  noticed in ~3 s instead of the library default of minutes; reconnects forever.
* Reads for decisions go to the stream leader (`direct=False`), because direct
  gets served by followers do not guarantee read-your-writes.
* Every connection logs in with an identity (`Signer`): its Ed25519 key is its
  NATS nkey, and the server grants what its roster roles allow (`authz`).
  Replies come to the identity's own inbox prefix. Only the provisioner
  creates buckets and streams; everyone else binds to existing ones.
* `tls://` URLs are TLS from the first byte (`handshake_first`) and verify the
  server's certificate (against `$KNIGHTWATCH_TLS_CA`, else the system's CAs):
  nats-py would otherwise follow a server, or someone in between, that offers
  no TLS, in plain text. A list mixing `tls://` and `nats://` is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from hashlib import blake2b
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RePublish, StorageType, StreamConfig
from nats.js.kv import KeyValue

from knightwatch.control.plane.authz import answerable, inbox_prefix
from knightwatch.control.plane.history import MALFORMED_KEY
from knightwatch.control.plane.protocol import (
    STATE_HISTORY,
    Bucket,
    ConnectionHandler,
    ControlPlaneRefused,
    ControlPlaneUnavailable,
    Handler,
    Record,
    Responder,
    RevisionConflict,
    Unsubscribe,
)
from knightwatch.control.plane.wire import (
    CONFIRMATION_DECODER,
    ENCODER,
    METRICS_DECODER,
    STATUS_DECODER,
    UNDECODABLE_ACTOR,
    AuditEnvelope,
    Confirmation,
    MemberProblem,
    NodeMetrics,
    NodeStatus,
    StateEntry,
    audit_from,
    decode_announcement,
    decode_entry,
    parse_slot,
    slot_of,
    unreadable_member,
)
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import Signer

log = logging.getLogger(__name__)

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

STATE_BUCKET = "kw_state"
MEMBERS_BUCKET = "kw_members"
AUDIT_STREAM = "KW_AUDIT"
METRICS_STREAM = "KW_METRICS"
AUDIT_MAX_BYTES = 384 << 20
"""The audit stream's share of the server's file store (1 GB for `knightwatch up`), the
oldest messages dropped beyond it. Every node ships every decision there (a busy fleet
fills a gigabyte in hours), and one node's key can publish megabyte messages on its own
subject: unbounded, it filled the store, and then JetStream refused every write, the
kill state's included. The nodes' own flight recorders stay the record of truth."""
METRICS_MAX_BYTES = 64 << 20
"""The metrics stream's share, on top of its hour of age (a node's flood, as above)."""
APPLIED_BUCKET = "kw_flags_applied"
"""Where this backend keeps the `applied.<node>.<flag>` records of `Bucket.FLAGS`, the one
kind of key a node writes under a wildcard (a key per flag): in a bucket of their own,
bounded, instead of `kw_flags` beside the operators' flag states and changes. There, one
node's key writing keys without end filled the server's store, and then JetStream refused
every write: the kill state's, and an operator's flag change back to its safe default.
Readers see one `Bucket.FLAGS` (`records`, `get_record`, `subscribe_records` merge it)."""
APPLIED_PREFIX = "applied."
"""The keys of `Bucket.FLAGS` kept in `APPLIED_BUCKET` (`node.flags.applied_key`)."""
APPLIED_MAX_BYTES = 64 << 20
"""The applied bucket's share of the store: a node's confirmation is a few hundred bytes,
so a fleet of a thousand nodes with a hundred flags each fits. A flood beyond it is refused
(the flooding node's writes, and other nodes' confirmations while it is full: a flag
change then waits unconfirmed, never the kill state or the flags' own records)."""
APPLIED_MAX_VALUE = 16 << 10
"""The largest applied record the bucket takes. A `FlagApplied` is 132 bytes, plus what the
node remembers of each approval used on the flag within the last day (`ROLLOUT_SPAN_NS`,
the replay defence): 235 bytes a `flags set` change, about 900 a rollout of four stages,
whatever the fleet's size (a stage's nodes are not listed). At 4 KiB a desk's fifth rollout
of a flag in a day (or its 17th approved change) was refused on every node: no node's
confirmation of that flag was stored for the day, the stop direction's included, and the
memory other nodes read was lost. 16 KiB holds some 17 rollouts or 68 approved changes of
one flag a day (each needs a second person); a record over it is refused, named as such."""
RECORD_MAX_BYTES: dict[Bucket, int] = {
    Bucket.APPROVALS: 32 << 20,
    Bucket.ROLLOUTS: 32 << 20,
    Bucket.RAMP: 32 << 20,
    Bucket.INCIDENT: 32 << 20,
    Bucket.FLAGS: 64 << 20,
}
"""The share of the server's store of each record bucket an operator, approver or the
supervisor may write keys of its choosing in (a request id, a flag change, a slot's ramp):
unbounded, one operator's key filled a 1 GB store in 5 s of 1 MiB pending requests, and
then every JetStream write was refused, the fleet kill's store write included. A bucket at
its bound refuses further writes to itself (a flood costs that bucket's writes: a resume
request, a flag change), never the kill state's. The flags' change log, one signed record
per change kept for good, gets twice the room. The roster (two admins sign a version; a
revocation must always go in), the admission verdicts, the release and the nodes' own
records (a key each, history 1) stay unbounded."""
STOP_RESERVE_SHARE = 8
"""The last 1/8 of a bounded record bucket's bytes are kept for the stop direction: a
change away from a flag's safe default is refused once its bucket holds more than the
rest (`check_room`), a change back to it may fill the bucket to its bound. At the bound
JetStream refuses every write (discard new), and before, a flags bucket filled by its
change log (kept for good) or one operator's flood refused the change back to the safe
default as well. Measured from the stream's own state at each write (its bound as
provisioned): 8 MiB of the flags' 64, some thousands of changes back."""
SUBJECT_STATE = "kw.state"
SUBJECT_REPUBLISH = "kw.repub.state"
SUBJECT_CONFIRM = "kw.confirm"
SUBJECT_HEARTBEAT = "kw.hb"
SUBJECT_METRICS = "kw.metrics"
SUBJECT_AUDIT = "kw.audit"
SUBJECT_MESSAGES = "kw.msg"
SUBJECT_REQUESTS = "kw.req"


def record_bucket(bucket: Bucket) -> str:
    return f"kw_{bucket.value}"


def record_republish(bucket: Bucket) -> str:
    return f"kw.repub.{bucket.value}"


T = TypeVar("T")
_CONNECT_ATTEMPTS = 1
_SNAPSHOT_CONSUMER_IDLE_S = 5.0
"""How long the server keeps a snapshot's consumer once nobody reads it, if deleting it
failed (nats-py's default is five minutes)."""
_AUTHORIZATION_VIOLATION = "authorization violation"
"""What a NATS server answers (`-ERR 'Authorization Violation'`) to a login it refuses."""


class LoginRefused(ControlPlaneUnavailable):
    """The server answered and refused this identity's login: its key is not among the
    users it serves (never enrolled, revoked, or outside its validity).

    Still "unavailable" to every caller (nothing can be done as this key: blocked), but
    said as what it is: before, the server's answer was dropped and the operator read
    "control plane unreachable ... no servers available", and was sent to the runbook's
    outage section with a key that no door would take."""


def _is_login_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and _AUTHORIZATION_VIOLATION in str(exc).lower()
    )


_STREAM_NOT_FOUND = 10059
"""JetStream's error code for a stream that does not exist."""


_STORE_FULL = {
    10077: "the bucket is at its byte bound (`RECORD_MAX_BYTES`), nothing more is stored there",
    10023: "the server's store is full",
    10054: "the record is larger than its bucket takes (a node's applied record: "
    "`APPLIED_MAX_VALUE`); nothing of it is stored",
}
"""JetStream's error codes for a write refused for room, and what each means."""


def _stream_gone(exc: BaseException) -> bool:
    """Whether nats-py's "key not found" (`kv.get`) is the bucket's stream itself missing:
    it raises the same error for both, with the server's answer as its context. Read as an
    absent key, a lost `kw_release` read as "no target release set" and a lost `kw_state`
    as a slot nobody halted."""
    cause = exc.__context__  # a delete marker's error carries no code: not the stream
    return (
        isinstance(cause, nats.js.errors.NotFoundError)
        and getattr(cause, "err_code", None) == _STREAM_NOT_FOUND
    )


def _confirmer(c: Confirmation) -> str:
    return c.node_id


def _member(s: NodeStatus) -> str:
    return s.node_id


def _metered(m: NodeMetrics) -> str:
    return m.node_id


def on_subject(pattern: str, subject: str) -> bool:
    """Whether `subject` is one `pattern` (a NATS subscription subject) stands for.

    The server routes a JetStream push consumer's messages by its deliver subject but
    hands them over under the subject they were stored on, and anyone may create a
    consumer with any deliver subject: a node could store bytes on a subject of its own
    (`$KV.kw_flags.applied.n1.n3`) and have the server deliver them to `kw.hb.n3` or
    `kw.state`. A message whose own subject is not the one subscribed to is not from
    whoever may publish there, so readers drop it."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)


"""Retries per server at initial connect (nats-py: 0 or less would mean forever)."""


TLS_CA_ENV = "KNIGHTWATCH_TLS_CA"
"""A PEM file of the CA(s) that sign the control plane's server certificates."""
_warned_plain: set[str] = set()


def tls_options(servers: list[str]) -> dict[str, Any]:
    """The TLS options a connection to `servers` needs: none for `nats://` URLs; for
    `tls://` ones a context that verifies the server's certificate (against the CA file
    in `$KNIGHTWATCH_TLS_CA` when set, else the system's CAs) and the handshake first."""
    schemes = {u.split("://", 1)[0] for u in servers}
    if "tls" not in schemes:
        for u in servers:
            if not _loopback(urlsplit(u).hostname or "") and u not in _warned_plain:
                _warned_plain.add(u)
                log.warning(
                    "control plane at %s is not encrypted (commands are signed, but audit "
                    "lines and metrics cross the network in clear); use tls://",
                    u,
                )
        return {}
    if schemes != {"tls"}:
        raise ControlPlaneUnavailable(
            f"control plane URLs {', '.join(servers)}: tls:// and nats:// mixed; a client "
            "would reach some servers in plain text (use tls:// for all)"
        )
    ca = os.environ.get(TLS_CA_ENV, "")
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ControlPlaneUnavailable(
            f"{TLS_CA_ENV}={ca}: not a readable PEM file of CA certificates ({exc})"
        ) from None
    return {"tls": context, "tls_handshake_first": True}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _announced(data: bytes) -> StateEntry:
    """An announced entry; one that cannot be decoded is a halt (`decode_announcement`),
    logged in one line: dropping it let garbage on the kill subject pass unnoticed.
    `subscribe_states` does not hand that halt on as it is: it reads the store first."""
    entry = decode_announcement(data)
    if entry.actor == UNDECODABLE_ACTOR:
        log.error(
            "ANNOUNCEMENT_UNDECODABLE scope=%s key=%s %s; reading the store",
            entry.scope.value,
            entry.key[:64],
            entry.reason,
        )
    return entry


def _republished(msg: Msg, bucket: str, key: str) -> bool:
    """Whether `msg` is the store's own republish of a write of `key` in `bucket`.

    JetStream stamps each republished message with the stream and the subject it stored
    it on. Nobody may publish on `kw.repub.>`, but the server answers each request on the
    reply subject its sender named, whoever that is (publish permissions never judge a
    reply subject): any identity, a node's or a viewer's key, sent `$JS.API.INFO` with the
    reply `kw.repub.state.fleet.fleet` and every node took the answer for an undecodable
    stored halt of the fleet, or `kw.repub.ramp.<key>` and every node traded at the
    tightest ramp stage. Those answers (and a consumer's idle heartbeats, sent to any
    deliver subject) carry no such stamp: they are no write, and are dropped."""
    headers = msg.headers or {}
    return (
        headers.get("Nats-Stream") == f"KV_{bucket}"
        and headers.get("Nats-Subject") == f"$KV.{bucket}.{key}"
    )


async def connect_as(signer: Signer, servers: list[str], **options: Any) -> Client:
    """A nats-py connection logged in as `signer` (nkey challenge), replies on its own inbox;
    over TLS for `tls://` URLs (`tls_options`)."""
    options = {**tls_options(servers), **options}
    nc = Client()
    # nats-py sends this public nkey with the signed nonce; it sets it itself only when
    # given an nkeys seed file, and the key here is the identity's Ed25519 key
    nc._public_nkey = signer.nkey
    await nc.connect(
        servers=servers,
        signature_cb=signer.sign_nonce,
        inbox_prefix=inbox_prefix(signer.key.key_id),
        **options,
    )
    return nc


class NatsControlPlane:
    """One client connection to a NATS server or cluster, as one identity.

    `replicas` is the JetStream replication factor for buckets and streams:
    1 for a single server, 3 for a three-server cluster. `provision`: create
    missing buckets and streams (only the server's provisioner may).
    """

    def __init__(
        self,
        servers: str | list[str],
        name: str = "knightwatch",
        replicas: int = 1,
        request_timeout_s: float = 2.0,
        ping_interval_s: int = 1,
        connect_timeout_s: float = 1.0,
        *,
        signer: Signer,
        provision: bool = False,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.signer = signer
        self.provision = provision
        self.name = name
        self.replicas = replicas
        self.request_timeout_s = request_timeout_s
        self.ping_interval_s = ping_interval_s
        self.connect_timeout_s = connect_timeout_s
        self._nc: Client | None = None
        self._last_error: Exception | None = None
        """What the client last reported while connecting (a refused certificate, say)."""
        self._login_refused = False
        """A server refused this identity's login during the current `connect`."""
        self._tls_refused: asyncio.Future[None] | None = None
        """Set while connecting: a TLS error ends the attempt at once."""
        self._js: JetStreamContext | None = None
        self._state: KeyValue | None = None
        self._members: KeyValue | None = None
        self._records: dict[Bucket, KeyValue] = {}
        self._applied: KeyValue | None = None
        self._connection_handlers: list[ConnectionHandler] = []
        self._logged: set[tuple[str, int]] = set()
        self._audit_key = secrets.token_bytes(16)
        """Keys the audit envelopes' message ids (`append_audit`): known to this process only."""
        """Stored records (key, revision) already logged as unreadable (`_log_once`)."""
        self._consults: set[asyncio.Task[None]] = set()
        """Store reads under way after an undecodable announcement (`_consult`)."""

    # --- connection --------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def on_connection(self, handler: ConnectionHandler) -> None:
        self._connection_handlers.append(handler)

    async def _notify(self, connected: bool) -> None:
        for handler in list(self._connection_handlers):
            try:
                await handler(connected)
            except Exception:
                log.exception("connection handler failed")

    async def _on_disconnected(self) -> None:
        # closing on purpose (`close` let go of the client first) is no event to warn of: a
        # CLI command's one-line answer was followed by this line on every exit
        closing = self._nc is None
        log.log(
            logging.DEBUG if closing else logging.WARNING,
            "control plane %s: disconnected",
            self.name,
        )
        await self._notify(False)

    async def _on_reconnected(self) -> None:
        log.warning("control plane %s: reconnected", self.name)
        await self._notify(True)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if _is_login_refusal(exc):
            self._login_refused = True  # kept: a later reset connection must not hide it
        refused = self._tls_refused
        if isinstance(exc, ssl.SSLError) and refused is not None and not refused.done():
            refused.set_result(None)  # a certificate is not refused any less the next time
        log.debug("control plane %s: %s", self.name, exc)

    async def connect(self) -> None:
        """Connect, failing fast: each server is tried twice at most, `connect_timeout_s` each.

        nats-py retries the *initial* connect forever when reconnects are unlimited,
        so an operator's `kill` against a dead URL would hang; reconnects become
        unlimited only once the first connection stands. The whole attempt is bounded
        too: after a failed TLS handshake nats-py waits for the broken session to shut
        down (asyncio allows 30 s) before it tries again.
        """
        where = ", ".join(self.servers)
        self._last_error = None
        self._login_refused = False
        budget = len(self.servers) * (_CONNECT_ATTEMPTS + 1) * (2 * self.connect_timeout_s + 0.25)
        refused = self._tls_refused = asyncio.get_running_loop().create_future()
        attempt: asyncio.Future[Any] = asyncio.ensure_future(
            connect_as(
                self.signer,
                self.servers,
                name=self.name,
                ping_interval=self.ping_interval_s,
                max_outstanding_pings=2,
                allow_reconnect=True,
                max_reconnect_attempts=_CONNECT_ATTEMPTS,
                reconnect_time_wait=0.25,
                connect_timeout=self.connect_timeout_s,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            )
        )
        try:
            await asyncio.wait(
                (attempt, refused), timeout=budget + 1.0, return_when=asyncio.FIRST_COMPLETED
            )
            if not attempt.done():  # a refused certificate, or out of time
                attempt.cancel()
                raise TimeoutError
            nc: Client = attempt.result()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            if self._login_refused or _is_login_refusal(exc):
                raise LoginRefused(self._refusal(where)) from None
            why = self._last_error if isinstance(exc, TimeoutError) else exc
            raise ControlPlaneUnavailable(
                f"control plane unreachable at {where}: {why or type(exc).__name__}"
            ) from None
        finally:
            self._tls_refused = None
            if not attempt.done():  # this connect was itself cancelled
                attempt.cancel()
        nc.options["max_reconnect_attempts"] = -1  # from now on: reconnect forever
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout_s)
        try:
            await self._call(self._ensure())
        except ControlPlaneUnavailable as exc:
            await self.close()
            raise ControlPlaneUnavailable(f"control plane at {where}: {exc}") from None

    def _refusal(self, where: str) -> str:
        """One line: whose key the server at `where` refused, and that it is no outage."""
        named = self.signer.name  # the CLI reads --key as "unnamed" until the roster names it
        of = f" of {named}" if named and named != "unnamed" else ""
        return (
            f"control plane at {where} refused the login of key "
            f"{self.signer.key.key_id[:16]}{of}: the server answers, but does not serve this "
            "key (not enrolled on the roster, revoked, or outside its validity); act with an "
            "enrolled key, or ask an admin to enrol it (`knightwatch identity add`)"
        )

    async def _ensure(self) -> None:
        """Create the buckets and streams if missing; bind to them if they already exist."""
        js = self._require_js()
        self._state = await self._bucket(
            KeyValueConfig(
                bucket=STATE_BUCKET,
                history=STATE_HISTORY,
                replicas=self.replicas,
                storage=StorageType.FILE,
                direct=False,
                republish=RePublish(src=f"$KV.{STATE_BUCKET}.>", dest=f"{SUBJECT_REPUBLISH}.>"),
            )
        )
        self._members = await self._bucket(
            KeyValueConfig(
                bucket=MEMBERS_BUCKET,
                history=1,
                replicas=self.replicas,
                storage=StorageType.FILE,
                direct=False,
            )
        )
        self._applied = await self._bucket(
            KeyValueConfig(
                bucket=APPLIED_BUCKET,
                history=1,
                replicas=self.replicas,
                storage=StorageType.FILE,
                direct=False,
                max_bytes=APPLIED_MAX_BYTES,
                max_value_size=APPLIED_MAX_VALUE,
                # the same subjects as `kw_flags`' own records: one bucket to subscribers
                republish=RePublish(
                    src=f"$KV.{APPLIED_BUCKET}.>", dest=f"{record_republish(Bucket.FLAGS)}.>"
                ),
            )
        )
        for bucket in Bucket:
            self._records[bucket] = await self._bucket(
                KeyValueConfig(
                    bucket=record_bucket(bucket),
                    history=1,
                    replicas=self.replicas,
                    storage=StorageType.FILE,
                    direct=False,
                    max_bytes=RECORD_MAX_BYTES.get(bucket, -1),
                    republish=RePublish(
                        src=f"$KV.{record_bucket(bucket)}.>", dest=f"{record_republish(bucket)}.>"
                    ),
                )
            )
        if self.provision:
            await self._move_applied()
        for config in (
            StreamConfig(
                name=AUDIT_STREAM,
                subjects=[f"{SUBJECT_AUDIT}.>"],
                num_replicas=self.replicas,
                storage=StorageType.FILE,
                duplicate_window=120,
                max_bytes=AUDIT_MAX_BYTES,
                discard=DiscardPolicy.OLD,
            ),
            StreamConfig(
                name=METRICS_STREAM,
                subjects=[f"{SUBJECT_METRICS}.>"],
                num_replicas=self.replicas,
                storage=StorageType.FILE,
                max_age=3600,
                max_bytes=METRICS_MAX_BYTES,
                discard=DiscardPolicy.OLD,
            ),
        ):
            try:
                info = await js.stream_info(str(config.name))
                if self.provision and info.config.max_bytes != config.max_bytes:
                    # a stream provisioned by an earlier version had no bound: given it now
                    bounded = dataclasses.replace(
                        info.config, max_bytes=config.max_bytes, discard=DiscardPolicy.OLD
                    )
                    await js.update_stream(bounded)
            except nats.js.errors.NotFoundError:
                if not self.provision:
                    raise ControlPlaneUnavailable(
                        f"stream {config.name} does not exist: the control plane is not "
                        "provisioned (start it with `knightwatch up`)"
                    ) from None
                try:
                    await js.add_stream(config)
                except nats.js.errors.BadRequestError:
                    await js.stream_info(str(config.name))

    async def _move_applied(self) -> None:
        """Copy the applied records an earlier version kept in `kw_flags` into
        `APPLIED_BUCKET` (those it does not hold yet), at a provisioning start: readers
        take them from there only, and a node started on a wiped recorder file still
        remembers the newest change it applied (`NodeFlags`)."""
        applied = self._applied
        assert applied is not None
        stored = await self._snapshot(record_bucket(Bucket.FLAGS), self._record_kv(Bucket.FLAGS))
        for key, value, _ in stored:
            if not key.startswith(APPLIED_PREFIX) or value is None:
                continue
            try:
                await self._call(applied.create(key, value))
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # the node wrote a newer one there already (or it is too large)

    async def _bucket(self, config: KeyValueConfig) -> KeyValue:
        js = self._require_js()
        try:
            kv = await js.key_value(config.bucket)
        except nats.js.errors.BucketNotFoundError:
            if not self.provision:
                raise ControlPlaneUnavailable(
                    f"bucket {config.bucket} does not exist: the control plane is not "
                    "provisioned (start it with `knightwatch up`)"
                ) from None
            try:
                kv = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                kv = await js.key_value(config.bucket)
        if self.provision:
            await self._no_rollups(f"KV_{config.bucket}", config.max_bytes, config.max_value_size)
        return kv

    async def _no_rollups(
        self, stream: str, max_bytes: int | None = None, max_value: int | None = None
    ) -> None:
        """Refuse roll-up headers on a bucket's stream (and purges and deletes through the
        API), the provisioner's fix to what publish permissions cannot see: a `Nats-Rollup:
        all` header on a write to the one key an identity may write erased every other key
        of the bucket, history included (an operator wrote one key of `kw_state` and the
        stored fleet kill was gone: a one-person resume; a node its own `starts` key, and
        every node's start history and `known_good` with it). nats-py creates buckets with
        roll-ups allowed (a key's purge is one); nothing here purges a key. Buckets created
        before are updated in place at the next provisioning start, and so is a bucket's
        byte bound (`max_bytes`, where it has one) and its value bound (`max_value`: the
        applied bucket's, raised since) if it was provisioned with others."""
        js = self._require_js()
        cfg = (await js.stream_info(stream)).config
        bound = max_bytes is not None and max_bytes > 0 and cfg.max_bytes != max_bytes
        sized = max_value is not None and max_value > 0 and cfg.max_msg_size != max_value
        if cfg.allow_rollup_hdrs or not cfg.deny_purge or not cfg.deny_delete or bound or sized:
            cfg.allow_rollup_hdrs = False
            cfg.deny_purge = True
            cfg.deny_delete = True
            if bound:
                cfg.max_bytes = max_bytes
            if sized:
                cfg.max_msg_size = max_value
            await js.update_stream(cfg)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        for consult in list(self._consults):
            consult.cancel()  # a closed plane reads no store: nothing of it is handed on
        if nc is not None and not nc.is_closed:
            try:
                if not nc.is_connected:
                    raise ConnectionResetError("not connected; nothing to drain")
                await asyncio.wait_for(nc.drain(), timeout=2)
            except (nats.errors.Error, OSError, TimeoutError):
                try:
                    await asyncio.wait_for(nc.close(), timeout=2)
                except (nats.errors.Error, OSError, TimeoutError):
                    pass
                except asyncio.CancelledError:
                    # nats-py cancels its own transport waiters when closing mid-reconnect;
                    # only a cancellation of *this* task must propagate.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise

    def _require_nc(self) -> Client:
        if self._nc is None:
            raise ControlPlaneUnavailable("control plane not connected")
        return self._nc

    def _require_js(self) -> JetStreamContext:
        if self._js is None:
            raise ControlPlaneUnavailable("control plane not connected")
        return self._js

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one server interaction; every transport failure becomes ControlPlaneUnavailable."""
        try:
            return await coro
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.NotFoundError):
            raise
        except nats.errors.MaxPayloadError:
            # the client refuses it before sending: nothing went out, so never "in doubt"
            raise ControlPlaneRefused(
                "control plane refused the write: the value is over the server's message "
                f"bound (max_payload, {self._require_nc().max_payload} bytes)"
            ) from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            full = _STORE_FULL.get(getattr(exc, "err_code", None) or 0)
            if full is not None:
                # it answered: "did not answer" sent the operator after an outage
                raise ControlPlaneRefused(
                    f"control plane refused the write: {full} ({exc})"
                ) from None
            raise ControlPlaneUnavailable(
                f"control plane did not answer: {exc or type(exc).__name__}"
            ) from None

    async def _round_trip(self, nc: Client, timeout_s: float) -> None:
        """A PING/PONG that comes back only after the server has seen everything sent before.

        nats-py's `flush()` writes its PING straight to the socket while earlier
        SUB and PUB commands still wait in the client's pending buffer for the
        flusher task, so its PONG can return before the server has registered a
        subscription made just before it (measured: ~3% of fresh subscriptions
        missed the next message). Draining the pending buffer first restores
        the barrier every subscriber here relies on.
        """
        await self._call(asyncio.wait_for(nc._flush_pending(force_flush=True), timeout_s))
        await self._call(nc.flush(timeout=timeout_s))  # type: ignore[arg-type]

    async def ping(self, timeout_s: float) -> None:
        nc = self._require_nc()
        if not nc.is_connected:
            raise ControlPlaneUnavailable("control plane disconnected")
        await self._round_trip(nc, timeout_s)

    async def _publish(self, subject: str, payload: bytes) -> None:
        nc = self._require_nc()
        if not nc.is_connected:
            raise ControlPlaneUnavailable("control plane disconnected")
        await self._call(nc.publish(subject, payload))

    async def _subscribe(
        self,
        subject: str,
        decode: Callable[[bytes], T],
        handler: Handler[T],
        owner: Callable[[T], str] | None = None,
    ) -> Unsubscribe:
        """`owner`: the node a message speaks for, which must be the subject's last token
        (only that node's identity may publish there), else the message is dropped; so is
        one that was not published on `subject` itself (`on_subject`)."""

        async def on_message(msg: Msg) -> None:
            if not on_subject(subject, msg.subject):
                log.error("FORGED message on %s delivered as %s; dropped", msg.subject, subject)
                return
            try:
                message = decode(msg.data)
            except UNDECODABLE as exc:
                log.warning("dropping malformed message on %s: %s", msg.subject, exc)
                return
            if owner is not None and msg.subject.rsplit(".", 1)[-1] != owner(message):
                log.error(
                    "FORGED message on %s speaks for %s; dropped", msg.subject, owner(message)
                )
                return
            try:
                await handler(message)
            except Exception:
                log.exception("handler for %s failed", msg.subject)

        nc = self._require_nc()
        sub = await self._open(nc, subject, on_message)
        # The server should know about the interest before anyone relies on it. If the
        # connection is between servers right now, the client re-sends the subscription
        # on reconnect, so a failed round trip here is not a failed subscription.
        try:
            await self._round_trip(nc, self.request_timeout_s)
        except ControlPlaneUnavailable as exc:
            log.warning("subscription to %s pending until reconnect: %s", subject, exc)
        return self._dropper(sub)

    async def _open(
        self, nc: Client, subject: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        """Subscribe `cb` to `subject`; a message still queued when the subscription is
        dropped is not handled (`_drop`)."""
        held: list[Subscription] = []

        async def on_msg(msg: Msg) -> None:
            if held and held[0]._closed:
                return
            try:
                await cb(msg)
            finally:
                # dropped by its own handler: the task stops now the handler is done
                if (
                    held
                    and held[0]._closed
                    and held[0]._wait_for_msgs_task is asyncio.current_task()
                ):
                    held[0]._stop_processing()

        sub = await self._call(nc.subscribe(subject, cb=on_msg))
        held.append(sub)
        return sub

    def _dropper(self, *subs: Subscription) -> Unsubscribe:
        async def unsubscribe() -> None:
            for sub in subs:
                await self._drop(sub)

        return unsubscribe

    async def _drop(self, sub: Subscription) -> None:
        """Remove the subscription here and on the server; never raises. From its own
        handler, the handler is not cancelled midway (nats-py cancels a dropped
        subscription's task: the rest of that handler, a kill it was sending, with it):
        its task ends once the handler returns (`_open`). On a closed or draining
        connection, the connection ends its subscriptions itself."""
        if sub._closed:
            return
        try:
            async with asyncio.timeout(self.request_timeout_s):
                if sub._wait_for_msgs_task is asyncio.current_task():
                    nc = sub._conn
                    sub._closed = True
                    nc._remove_sub(sub._id)
                    if not (nc.is_closed or nc.is_reconnecting or nc.is_draining):
                        await nc._send_unsubscribe(sub._id)
                else:
                    await sub.unsubscribe()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.debug("unsubscribe from %s: %s", sub.subject, exc or type(exc).__name__)

    # --- kill switch state -------------------------------------------------
    def _state_kv(self) -> KeyValue:
        if self._state is None:
            raise ControlPlaneUnavailable("control plane not connected")
        return self._state

    async def announce_state(self, entry: StateEntry) -> None:
        await self._publish(SUBJECT_STATE, ENCODER.encode(entry))

    async def put_state(self, entry: StateEntry, expected_revision: int | None = None) -> int:
        kv = self._state_kv()
        payload = ENCODER.encode(entry)
        if expected_revision is None:
            return await self._call(kv.put(entry.slot, payload))
        try:
            if expected_revision == 0:
                return await self._call(kv.create(entry.slot, payload))
            return await self._call(kv.update(entry.slot, payload, last=expected_revision))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            raise RevisionConflict(entry.slot, expected_revision) from None

    async def get_state(self, scope: Scope, key: str) -> tuple[StateEntry | None, int]:
        slot = slot_of(scope, key)
        try:
            found = await self._call(self._state_kv().get(slot))
        except (nats.js.errors.KeyDeletedError, nats.js.errors.KeyNotFoundError) as exc:
            if _stream_gone(exc):
                raise ControlPlaneUnavailable(f"bucket {STATE_BUCKET} not found") from None
            # nats-py raises a delete or purge marker as "not found" too, carrying the
            # marker: its revision says the slot was written (and is held halted), which
            # `ABSENT` would deny (a resume of it would be refused as "not halted")
            return None, int(getattr(exc.entry, "revision", 0) or 0)
        revision = int(found.revision or 0)
        if found.value is None:
            return None, revision
        return decode_entry(slot, found.value, revision), revision

    async def previous_state(
        self, scope: Scope, key: str, revision: int
    ) -> tuple[StateEntry | None, int] | None:
        kept = await self.state_history(scope, key, revision)
        return kept[-1] if kept else None

    async def state_history(
        self, scope: Scope, key: str, revision: int
    ) -> list[tuple[StateEntry | None, int]]:
        """Walks the slot's kept writes oldest first with next-by-subject message gets from
        the stream leader (no consumer: a watcher's end-of-history marker can come early)."""
        slot = slot_of(scope, key)
        subject = f"$KV.{STATE_BUCKET}.{slot}"
        js = self._require_js()
        kept: list[tuple[StateEntry | None, int]] = []
        seq = 1
        for _ in range(4 * STATE_HISTORY):  # the bucket keeps at most STATE_HISTORY per slot
            try:
                msg = await self._call(
                    js.get_msg(f"KV_{STATE_BUCKET}", seq=seq, subject=subject, next=True)
                )
            except nats.js.errors.NotFoundError:
                break
            found = int(msg.seq or 0)
            if found >= revision or found < seq:
                break
            seq = found + 1
            operation = (msg.headers or {}).get("KV-Operation")
            if operation is not None or msg.data is None:
                kept.append((None, found))
            else:
                kept.append((decode_entry(slot, msg.data, found), found))
        return kept

    async def stored_ns(self, scope: Scope, key: str, revision: int) -> int | None:
        """The stream message's own time at `revision` (JetStream stamps it on storing),
        read from the stream leader; None if the stream no longer holds it for this slot."""
        return await self._written_ns(STATE_BUCKET, slot_of(scope, key), revision)

    async def states(self) -> dict[str, tuple[StateEntry | None, int]]:
        """Every stored slot: its entry (one that cannot be decoded is a halt of its slot's
        scope), or None where the latest operation deleted it; readers hold those halted.

        Every key is listed, one that is no canonical slot too (`strategy.a.b`, written by
        hand: no kill or resume addresses it, and `held_halted` refuses it): it is logged
        once per write as `STATE_KEY_MALFORMED`, as an entry that cannot be decoded is as
        `UNDECODABLE_STATE`, however often the fleet is read."""
        out: dict[str, tuple[StateEntry | None, int]] = {}
        for slot, value, revision in await self._snapshot(
            STATE_BUCKET, self._state_kv(), deleted=True
        ):
            try:
                parse_slot(slot)
            except (ValueError, UnicodeDecodeError) as exc:
                self._log_once(
                    f"key:{slot}",
                    revision,
                    "%s key=%s revision=%d: %s; no kill or resume addresses this key",
                    MALFORMED_KEY.upper(),
                    slot,
                    revision,
                    exc,
                )
            if value is None:
                out[slot] = (None, revision)
                continue
            entry = decode_entry(slot, value, revision)
            if entry.actor == UNDECODABLE_ACTOR:
                self._log_once(
                    f"state:{slot}",
                    revision,
                    "UNDECODABLE_STATE slot=%s revision=%d: held as a halt",
                    slot,
                    revision,
                )
            out[slot] = (entry, revision)
        return out

    async def _snapshot(
        self, bucket: str, kv: KeyValue, *, deleted: bool = False
    ) -> list[tuple[str, bytes | None, int]]:
        """Latest value of every key in `bucket`, complete or not at all.

        nats-py ends a watcher's initial values with a marker it sends as soon as consumer
        info reports nothing pending, and values already on their way to this client count
        as delivered there: a snapshot that trusted the marker could miss a stored halt or a
        member, so a resync would run without it and a kill would not wait for that node.
        The server's own list of the bucket's subjects says which keys must be seen; the read
        ends when every one has been, and a server that stops answering first makes it
        `ControlPlaneUnavailable`. `deleted`: also keys whose latest operation is a
        delete or purge (value None).
        """
        prefix = f"$KV.{bucket}."

        async def read() -> list[tuple[str, bytes | None, int]]:
            info = await self._require_js().stream_info(
                f"KV_{bucket}", subjects_filter=f"{prefix}>"
            )
            expected = {subject.removeprefix(prefix) for subject in info.state.subjects or {}}
            watcher = await kv.watchall(inactive_threshold=_SNAPSHOT_CONSUMER_IDLE_S)
            seen: set[str] = set()
            latest: dict[str, tuple[str, bytes | None, int]] = {}
            try:
                while not expected <= seen:
                    e = await watcher.updates(timeout=self.request_timeout_s)  # type: ignore[no-untyped-call]
                    if e is None:
                        continue
                    seen.add(e.key)
                    revision = int(e.revision or 0)
                    if revision < latest.get(e.key, ("", b"", -1))[2]:
                        continue
                    if e.operation is None and e.value is not None:
                        latest[e.key] = (e.key, e.value, revision)
                    elif deleted:
                        latest[e.key] = (e.key, None, revision)
                    else:
                        latest.pop(e.key, None)
                return list(latest.values())
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
                await self._drop_consumer(f"KV_{bucket}", watcher)

        try:
            return await self._call(read())
        except nats.js.errors.NotFoundError as exc:  # the bucket's stream itself is gone
            raise ControlPlaneUnavailable(f"bucket {bucket} not found: {exc}") from None

    async def _drop_consumer(self, stream: str, watcher: Any) -> None:
        """Delete a finished snapshot's consumer on the server now. Stopping a watcher only
        unsubscribes, and the server keeps its consumer until it has been idle for the
        watch's threshold: with one per bucket per snapshot, a console refreshing every
        second (or anyone asking for snapshots) filled the stream's 1,000-consumer limit
        and every later watch, request and resync failed. Best effort: a consumer that
        cannot be deleted now goes after `_SNAPSHOT_CONSUMER_IDLE_S` anyway."""
        name = getattr(getattr(watcher, "_sub", None), "_consumer", None)  # nats-py's own
        if not name or self._js is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._js.delete_consumer(stream, name), timeout=self.request_timeout_s
            )

    async def subscribe_states(self, handler: Handler[StateEntry]) -> Unsubscribe:
        """Announced and stored entries to `handler`.

        An announcement that cannot be decoded is no command: anyone's key can have the
        server put its JSON answer on `kw.state` (a request naming it as the reply; the
        server publishes the answer, so no publish permission judges it). Handed on as a
        halt of the fleet, a viewer's key halted every node at will. It is read in the
        store instead, the kill state's authority (`_consult`): what the store holds for
        the slot it names (every slot when it names none) is handed on, and only a store
        that cannot be read hands on the halt (fail closed). The read runs beside the
        subscription, so no announcement behind it waits for it. A message on the stored
        entries' subject that the store did not republish (`_republished`) is dropped."""
        consults: dict[str, bool] = {}
        """Slot (or "" for every slot) read now -> whether to read it again after."""
        tasks: set[asyncio.Task[None]] = set()

        def forget(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self._consults.discard(task)

        async def on_announced(entry: StateEntry) -> None:
            if entry.actor != UNDECODABLE_ACTOR:
                await handler(entry)
                return
            slot = "" if entry.scope is Scope.FLEET else entry.slot
            if slot in consults:
                consults[slot] = True  # read once more when the read under way ends
                return
            consults[slot] = False
            task = asyncio.get_running_loop().create_task(
                self._consult(entry, slot, consults, handler), name=f"consult-{slot[:64]}"
            )
            tasks.add(task)
            self._consults.add(task)
            task.add_done_callback(forget)

        announced = await self._subscribe(SUBJECT_STATE, _announced, on_announced)
        prefix = f"{SUBJECT_REPUBLISH}."

        async def on_stored(msg: Msg) -> None:
            if not msg.subject.startswith(prefix):
                log.error("FORGED message on %s delivered as %s>; dropped", msg.subject, prefix)
                return
            slot = msg.subject.removeprefix(prefix)
            if not _republished(msg, STATE_BUCKET, slot):
                log.error(
                    "FORGED message on %s (%d bytes) not republished by the store; dropped",
                    msg.subject[:160],
                    len(msg.data),
                )
                return
            # A stored entry names its slot in the subject, so even one that cannot be
            # decoded says which scope it halts (`decode_entry`).
            headers = msg.headers or {}
            revision = int(headers.get("Nats-Sequence", 0))
            entry = decode_entry(slot, msg.data, revision)
            try:
                await handler(entry)
            except Exception:
                log.exception("handler for %s failed", msg.subject)

        nc = self._require_nc()
        try:
            stored = await self._open(nc, prefix + ">", on_stored)
        except BaseException:
            await announced()
            raise
        try:
            await self._round_trip(nc, self.request_timeout_s)
        except ControlPlaneUnavailable as exc:
            log.warning("subscription to %s pending until reconnect: %s", prefix, exc)

        async def unsubscribe() -> None:
            await announced()
            await self._drop(stored)
            for task in list(tasks):
                task.cancel()

        return unsubscribe

    async def _consult(
        self,
        announced: StateEntry,
        slot: str,
        consults: dict[str, bool],
        handler: Handler[StateEntry],
    ) -> None:
        """What the store holds for `slot` (every slot when ""), after an announcement that
        could not be decoded (`announced`, the halt it makes): each stored halt is handed
        on (a stored value that cannot be decoded or was deleted as its slot's halt, as
        `decode_entry` makes it), a resume or a slot never written changes nothing; a store
        that cannot be read hands on `announced` (fail closed). Read again once if more such
        announcements came in meanwhile (`consults`), never once per message."""
        while True:
            try:
                if slot:
                    entry, revision = await self.get_state(announced.scope, announced.key)
                    held = {slot: (entry, revision)} if revision else {}
                else:
                    held = await self.states()
                found = [
                    entry if entry is not None else decode_entry(at, b"", revision)
                    for at, (entry, revision) in held.items()
                ]
                halts = [e for e in found if e.state is not TradingState.ACTIVE]
                log.warning(
                    "ANNOUNCEMENT_UNDECODABLE read in the store: %d halt(s) held there%s",
                    len(halts),
                    f" for {slot[:64]}" if slot else "",
                )
            except Exception as exc:  # unread is unchecked: blocked
                log.error(
                    "ANNOUNCEMENT_UNDECODABLE and the store cannot be read (%s): held as a "
                    "halt of %s",
                    exc or type(exc).__name__,
                    announced.slot,
                )
                halts = [announced]
            for entry in halts:
                try:
                    await handler(entry)
                except Exception:
                    log.exception("handler for %s failed", SUBJECT_STATE)
            if not consults.get(slot):
                consults.pop(slot, None)
                return
            consults[slot] = False

    # --- confirmations -----------------------------------------------------
    async def confirm(self, confirmation: Confirmation) -> None:
        subject = f"{SUBJECT_CONFIRM}.{confirmation.node_id}"
        await self._publish(subject, ENCODER.encode(confirmation))

    async def subscribe_confirmations(self, handler: Handler[Confirmation]) -> Unsubscribe:
        return await self._subscribe(
            f"{SUBJECT_CONFIRM}.*", CONFIRMATION_DECODER.decode, handler, _confirmer
        )

    # --- membership --------------------------------------------------------
    async def heartbeat(self, status: NodeStatus) -> None:
        await self._publish(f"{SUBJECT_HEARTBEAT}.{status.node_id}", ENCODER.encode(status))

    async def put_member(self, status: NodeStatus) -> None:
        if self._members is None:
            raise ControlPlaneUnavailable("control plane not connected")
        await self._call(self._members.put(status.node_id, ENCODER.encode(status)))

    async def members(self) -> list[NodeStatus]:
        """Every membership record; one that cannot be read is listed as `unreadable_member`
        (under its key, with its reason code), logged once per stored write."""
        if self._members is None:
            raise ControlPlaneUnavailable("control plane not connected")
        out = []
        for key, value, revision in await self._snapshot(MEMBERS_BUCKET, self._members):
            try:
                status = STATUS_DECODER.decode(value or b"")
            except UNDECODABLE as exc:
                status = self._unreadable(key, revision, MemberProblem.UNDECODABLE, str(exc))
            if status.node_id != key:
                # only node N's identity may write key N: a record naming another node is forged
                why = f"it claims node {status.node_id!r}"
                status = self._unreadable(key, revision, MemberProblem.FORGED, why)
            out.append(status)
        return sorted(out, key=lambda s: s.node_id)

    def _unreadable(self, key: str, revision: int, code: MemberProblem, why: str) -> NodeStatus:
        self._log_once(
            f"member:{key}",
            revision,
            "MEMBER_%s key=%s revision=%d: %s; listed as unreadable",
            code.name,
            key,
            revision,
            why[:200],
        )
        return unreadable_member(key, revision, code, why)

    def _log_once(self, key: str, revision: int, message: str, *args: object) -> None:
        """Log an unreadable stored record once per stored write (readers list the fleet
        every second)."""
        if (key, revision) in self._logged:
            return
        if len(self._logged) >= 1024:
            self._logged.clear()
        self._logged.add((key, revision))
        log.error(message, *args)

    async def subscribe_heartbeats(
        self, handler: Handler[NodeStatus], node_id: str | None = None
    ) -> Unsubscribe:
        subject = f"{SUBJECT_HEARTBEAT}.{'*' if node_id is None else node_id}"
        return await self._subscribe(subject, STATUS_DECODER.decode, handler, _member)

    # --- metrics and audit -------------------------------------------------
    async def publish_metrics(self, metrics: NodeMetrics) -> None:
        await self._publish(f"{SUBJECT_METRICS}.{metrics.node_id}", ENCODER.encode(metrics))

    async def subscribe_metrics(self, handler: Handler[NodeMetrics]) -> Unsubscribe:
        return await self._subscribe(
            f"{SUBJECT_METRICS}.*", METRICS_DECODER.decode, handler, _metered
        )

    async def append_audit(self, envelope: AuditEnvelope) -> int:
        """Ship one envelope; a retry (its acknowledgement lost) lands once. The stream drops
        a message whose `Nats-Msg-Id` it holds from the last 2 minutes, whoever sent it: an id
        another node can guess (`node:instance:seq`, the instance is in the membership
        record) let n2 send junk under n1's next id on its own subject and n1's envelope
        vanish. So the id also carries a tag keyed by a secret of this process (the same
        for a retry through this plane, which is how a node retries)."""
        ident = f"{envelope.node_id}:{envelope.instance}:{envelope.seq}"
        tag = blake2b(ident.encode(), key=self._audit_key, digest_size=12).hexdigest()
        ack = await self._call(
            self._require_js().publish(
                f"{SUBJECT_AUDIT}.{envelope.node_id}",
                ENCODER.encode(envelope),
                headers={"Nats-Msg-Id": f"{ident}:{tag}"},
            )
        )
        return int(ack.seq)

    async def audit(self, start_seq: int = 1, limit: int = 1000) -> list[tuple[int, AuditEnvelope]]:
        js = self._require_js()
        try:
            info = await self._call(js.stream_info(AUDIT_STREAM))
        except nats.js.errors.NotFoundError as exc:
            raise ControlPlaneUnavailable(f"stream {AUDIT_STREAM} not found: {exc}") from None
        last = int(info.state.last_seq)
        out: list[tuple[int, AuditEnvelope]] = []
        seq = max(start_seq, int(info.state.first_seq), 1)
        while seq <= last and len(out) < limit:
            try:
                msg = await self._call(js.get_msg(AUDIT_STREAM, seq=seq))
            except nats.js.errors.NotFoundError:
                seq += 1
                continue
            sender = (msg.subject or "").removeprefix(f"{SUBJECT_AUDIT}.")
            out.append((seq, audit_from(sender, msg.data or b"")))
            seq += 1
        return out

    # --- durable records (release, admission, flags, rollouts) ----------------
    def _record_kv(self, bucket: Bucket) -> KeyValue:
        kv = self._records.get(bucket)
        if kv is None:
            raise ControlPlaneUnavailable("control plane not connected")
        return kv

    @staticmethod
    def _stored_in(bucket: Bucket, key: str) -> str:
        """The NATS bucket that stores `key` of `bucket` (`_keyed`)."""
        if bucket is Bucket.FLAGS and key.startswith(APPLIED_PREFIX):
            return APPLIED_BUCKET
        return record_bucket(bucket)

    def _keyed(self, bucket: Bucket, key: str) -> tuple[str, KeyValue]:
        """The NATS bucket (name, handle) that holds `key` of `bucket`: a node's applied
        record is in `APPLIED_BUCKET`, everything else in the bucket's own."""
        if bucket is Bucket.FLAGS and key.startswith(APPLIED_PREFIX):
            if self._applied is None:
                raise ControlPlaneUnavailable("control plane not connected")
            return APPLIED_BUCKET, self._applied
        return record_bucket(bucket), self._record_kv(bucket)

    async def put_record(
        self, bucket: Bucket, key: str, value: bytes, expected_revision: int | None = None
    ) -> int:
        _, kv = self._keyed(bucket, key)
        if expected_revision is None:
            return await self._call(kv.put(key, value))
        try:
            if expected_revision == 0:
                return await self._call(kv.create(key, value))
            return await self._call(kv.update(key, value, last=expected_revision))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            raise RevisionConflict(f"{bucket}.{key}", expected_revision) from None

    async def check_room(self, bucket: Bucket) -> None:
        """`ControlPlaneRefused` once `bucket` (its own NATS bucket: not the applied records')
        holds its bound less `STOP_RESERVE_SHARE`: the rest is kept for the stop direction,
        whose writers do not ask. A bucket without a bound has room."""
        name = record_bucket(bucket)
        try:
            info = await self._call(self._require_js().stream_info(f"KV_{name}"))
        except nats.js.errors.NotFoundError:
            raise ControlPlaneUnavailable(f"bucket {name} not found") from None
        bound = int(info.config.max_bytes or 0)
        used = int(info.state.bytes or 0)
        if bound <= 0 or used < (open_to := bound - bound // STOP_RESERVE_SHARE):
            return
        raise ControlPlaneRefused(
            f"control plane refused the write: bucket {name} holds {used} of its {bound} "
            f"bytes, past the {open_to} open to writes away from the safe direction (the last "
            f"1/{STOP_RESERVE_SHARE} is kept for changes back to a flag's safe default, which "
            "still go in); nothing of it is stored"
        )

    async def get_record(self, bucket: Bucket, key: str) -> tuple[bytes | None, int]:
        try:
            name, kv = self._keyed(bucket, key)
            found = await self._call(kv.get(key))
        except nats.js.errors.KeyNotFoundError as exc:
            if _stream_gone(exc):
                raise ControlPlaneUnavailable(f"bucket {name} not found") from None
            return None, 0
        if found.value is None:
            return None, 0
        return found.value, int(found.revision or 0)

    async def records(self, bucket: Bucket) -> dict[str, tuple[bytes, int]]:
        stored = await self._snapshot(record_bucket(bucket), self._record_kv(bucket))
        if bucket is Bucket.FLAGS:
            # applied records only from their own bucket: nobody may write them in
            # `kw_flags` any longer, and the ones an earlier version stored there are stale
            stored = [s for s in stored if not s[0].startswith(APPLIED_PREFIX)]
            if self._applied is None:
                raise ControlPlaneUnavailable("control plane not connected")
            stored += await self._snapshot(APPLIED_BUCKET, self._applied)
        return {key: (value, revision) for key, value, revision in stored if value is not None}

    async def record_stored_ns(self, bucket: Bucket, key: str, revision: int) -> int | None:
        """The stream message's own time at `revision` (JetStream stamps it on storing),
        read from the stream leader; None if the stream no longer holds it for this key."""
        return await self._written_ns(self._keyed(bucket, key)[0], key, revision)

    async def _written_ns(self, bucket: str, key: str, revision: int) -> int | None:
        """The time JetStream stamped on the bucket's message `revision`, if it is `key`'s."""
        if revision <= 0:
            return None
        try:
            msg = await self._call(self._require_js().get_msg(f"KV_{bucket}", seq=revision))
        except nats.js.errors.NotFoundError:
            return None
        if msg.subject != f"$KV.{bucket}.{key}" or msg.time is None:
            return None
        return (msg.time - _EPOCH) // datetime.timedelta(microseconds=1) * 1_000

    @property
    def keeps_write_times(self) -> bool:
        return True

    async def subscribe_records(self, bucket: Bucket, handler: Handler[Record]) -> Unsubscribe:
        prefix = record_republish(bucket) + "."

        async def on_message(msg: Msg) -> None:
            if not msg.subject.startswith(prefix):
                log.error("FORGED message on %s delivered as %s>; dropped", msg.subject, prefix)
                return
            key = msg.subject.removeprefix(prefix)
            if not _republished(msg, self._stored_in(bucket, key), key):
                log.error(
                    "FORGED message on %s (%d bytes) not republished by the store; dropped",
                    msg.subject[:160],
                    len(msg.data),
                )
                return
            headers = msg.headers or {}
            record = Record(
                bucket,
                key,
                msg.data,
                int(headers.get("Nats-Sequence", 0)),
            )
            try:
                await handler(record)
            except Exception:
                log.exception("record handler for %s failed", msg.subject)

        nc = self._require_nc()
        sub = await self._open(nc, prefix + ">", on_message)
        try:
            await self._round_trip(nc, self.request_timeout_s)
        except BaseException:
            await self._drop(sub)
            raise
        return self._dropper(sub)

    # --- plain messages and request/reply --------------------------------------
    async def publish(self, subject: str, payload: bytes) -> None:
        await self._publish(f"{SUBJECT_MESSAGES}.{subject}", payload)

    async def subscribe(self, subject: str, handler: Handler[bytes]) -> Unsubscribe:
        return await self._subscribe(f"{SUBJECT_MESSAGES}.{subject}", bytes, handler)

    async def request(self, subject: str, payload: bytes, timeout_s: float) -> bytes:
        nc = self._require_nc()
        if not nc.is_connected:
            raise ControlPlaneUnavailable("control plane disconnected")
        try:
            reply = await nc.request(f"{SUBJECT_REQUESTS}.{subject}", payload, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            raise ControlPlaneUnavailable(f"nobody serves {subject}") from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ControlPlaneUnavailable(
                f"{subject}: no answer: {exc or type(exc).__name__}"
            ) from None
        return reply.data

    async def serve(self, subject: str, responder: Responder) -> None:
        async def on_request(msg: Msg) -> None:
            if msg.subject != f"{SUBJECT_REQUESTS}.{subject}":
                log.error("FORGED request on %s delivered as %s; dropped", msg.subject, subject)
                return
            if not answerable(msg.reply):
                log.error(
                    "REPLY_REFUSED request on %s asks for its answer on %r, not an inbox; "
                    "not answered",
                    subject,
                    (msg.reply or "")[:160],
                )
                return
            try:
                reply = await responder(msg.data)
            except Exception:
                log.exception("responder for %s failed", subject)
                return
            with contextlib.suppress(nats.errors.Error, OSError):
                await msg.respond(reply)

        nc = self._require_nc()
        await self._call(nc.subscribe(f"{SUBJECT_REQUESTS}.{subject}", cb=on_request))
        await self._round_trip(nc, self.request_timeout_s)
