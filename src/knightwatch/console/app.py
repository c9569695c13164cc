"""The console's HTTP face: pages, a JSON API and a live stream, over one policy.

One process, bound to 127.0.0.1 by default, separate from every order
router: if it is down the CLI's kill still works, and nothing here sits on
the path a kill takes except the person's own signed command.

How a request is judged, in order (every step recorded by `ConsoleAudit`,
refusals included):

1. who: a server-side session (an opaque 256-bit id in an HttpOnly,
   SameSite=Strict cookie; idle and absolute expiry; revoked on logout or
   `console user disable`) or an API token (`Authorization: Bearer kw_...`,
   stored hashed, scoped to a subset of the owner's roles, expiring,
   revocable). No session state lives in the browser. While the users file cannot be
   read (a bad chmod, a half-copied file), a session or token is judged against the last
   copy read and may only view and stop (`STOP_OR_READ`), its records marked `unchecked`.
2. cross-site: an unsafe method with a session must come from this origin
   (Fetch Metadata `Sec-Fetch-Site`, else `Origin` against `Host`) and carry
   the session's CSRF token, judged before its body is read (a cross-site
   request is a 403 whatever its body). A bearer token is exempt (browsers
   never attach one by themselves).
3. may they: `knightwatch.trust.policy.decide`, the same table the CLI
   consults, on the roles the signed roster gives the person (narrowed by a
   token's scope).
4. the command itself is signed with the person's own key, unlocked by
   their login (kills, drains, requests) or by re-entering their password
   (approvals); nodes verify it against the roster where it takes effect, so
   even a console that lied could not lift a kill without a second person.

The stop direction never waits for anything optional: a kill goes straight
from the person's own connection to the fleet; the live stream, the
snapshot, the audit export and the approvals are not on its path. Nor does it
wait on a control plane it cannot reach: a kill that could not be sent is a
503 within about a second (it was 15 s), naming the control plane's URLs and
the runbook's fallback, and is never shown or recorded as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import re
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knightwatch.audit.errors import OrderNotFound
from knightwatch.audit.why import explain_order
from knightwatch.clock import Clock, SystemClock
from knightwatch.console.audit import ConsoleAudit, Query, export_lines, params_hash, search
from knightwatch.console.sessions import LoginThrottle, Session, Sessions
from knightwatch.console.users import ConsoleUserError, LoginFailed, User, UserStore
from knightwatch.console.view import SNAPSHOT_ENCODER, Snapshot, Watch, build
from knightwatch.control.fleet.activate import activate
from knightwatch.control.fleet.approvals import RequestMoved, digest, pinned, read_request
from knightwatch.control.fleet.killswitch import (
    CommandResult,
    KillSwitch,
    KillSwitchError,
    reached_no_one,
    unreachable_message,
)
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.rollout import Confirmations, RolloutDriver, RolloutError
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import StateEntry, StateKeyError, parse_slot, slot_of
from knightwatch.errors import KnightwatchError, escaped, quoted
from knightwatch.flags.activation import ActivationPolicy, ActivationRequest
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import RolloutState, failed_actions
from knightwatch.incident import workflow
from knightwatch.incident.preflight import Checklist, PreflightConfig
from knightwatch.incident.ramp import RampError, RampOutcome, RampPlan
from knightwatch.inputs import NAME_RULE, UNDECODABLE, is_name
from knightwatch.state import FLEET_KEY, TradingState, split_pair
from knightwatch.state import Scope as KillScope
from knightwatch.trust.identity import Signer
from knightwatch.trust.policy import Action, decide, held_roles
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

COOKIE = "kw_session"
HOST_COOKIE = "__Host-" + COOKIE
"""The session cookie's name behind TLS (`secure_cookies`): the browser keeps a `__Host-`
cookie only when it is Secure, on Path=/ and without Domain, so nothing else on the host
name can plant or widen it (docs/console.md promised it; the cookie kept the plain name)."""
DEVICE_COOKIE = "kw_device"
"""Set at a successful login: this browser logged in as that person before (`device_of`)."""
DEVICE_TTL_S = 30 * 86_400
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
MAX_BODY = 64 * 1024
FORM_FIELDS = 8
"""The most fields a login or logout form may carry (it has two, or one)."""
MAX_ACKS = 10_000
"""Alert acknowledgements kept (the newest; each is also in the console's audit file)."""
REASON_MAX = 500
REQUEST_ID = re.compile(r"(?![.])[-_=.a-zA-Z0-9]{1,64}(?<![.])")
"""A request id as the approvals bucket can hold it (ids are 12 hex digits). A key that
starts or ends with '.' is none the bucket can hold: "." and ".." were sent to it, and its
InvalidKeyError was answered as 503 "control plane did not answer", recorded as an error."""
RECHECK_S = 0.5
"""How often an open event stream judges its credential again: a logout, a disable, a
password change, an expired session and a revoked or expired token end it within this."""
STREAM_QUEUE = 256
"""Events an open stream may fall behind by. Past it the stream is not fed silently short
(its page showed a fleet older than it knew): it ends with a `gap` event, counted and
logged, and the page opens a fresh stream, which starts with the snapshot as it is now."""
GAP_REASON = f"this stream fell {STREAM_QUEUE} events behind: open a new one for the fleet now"
SESSIONS_PER_USER = 20
"""The most sessions (each with its own connection to the control plane) one person keeps
open: a login past it ends their oldest."""


_KEEP: Any = object()
"""The users file could not be read (and no copy read before holds the person): a live session
keeps its standing for the stop direction and reading only (`STOP_OR_READ`)."""
STOP_OR_READ = frozenset({Action.VIEW, Action.KILL, Action.SAFE_DEFAULT, Action.ROLLOUT_ABORT})
"""What a session or token may still do while its users file cannot be read, judged against
the last copy read. A disable or a password reset written just before the file became
unreadable (a bad chmod, a half-copied file) is unknown to the console: the session stood
for everything, so a person disabled for cause went on requesting resumes and acknowledging
automatic halts as handled. A token was refused outright, so a script's kill was a 503
while a logged-in session's went out: the stop direction gated on a file."""
UNCHECKED = "standing unchecked (users file unreadable)"
"""What the record's detail starts with for a request let through on `STOP_OR_READ` alone
(its `unchecked` field says why the file could not be read)."""


class ConsoleError(KnightwatchError, ValueError):
    """A console setting or request that cannot be used; names the field and the rule."""


@dataclass
class Principal:
    """Who is asking, as established for this one request."""

    name: str
    roles: frozenset[Role]
    via: str
    """"session" or "token"."""
    session: Session | None = None
    token_id: str = ""
    scope: frozenset[Role] | None = None
    service: bool = False
    signer: Signer | None = None
    unchecked: str = ""
    """Why the person's standing could not be judged now (the users file unreadable): only
    the stop direction and reading pass (`STOP_OR_READ`); "" when it was judged."""


@dataclass
class PersonLink:
    """A logged-in person's own connection and kill switch (their key, their NATS login)."""

    plane: NatsControlPlane
    killswitch: KillSwitch


@dataclass
class ConsoleSettings:
    urls: list[str]
    users: Path
    audit: Path
    recorders: Path
    """Directory of node flight-recorder files (`*.jsonl`) for "why was order X..."."""
    incident_config: Path | None = None
    secure_cookies: bool = False
    heartbeat_s: float = 1.0
    kill_timeout_s: float = 2.0
    plan: RampPlan = field(default_factory=RampPlan)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    registry: FlagRegistry | None = None
    """The flag registry (safe defaults); without it the flag buttons say so."""
    flag_policy: ActivationPolicy = field(default_factory=ActivationPolicy)
    tls: tuple[Path, Path] | None = None
    """Certificate and key files to serve HTTPS with (None: plain HTTP, loopback)."""


class Refusal(Exception):
    """Ends a request with this status and message (recorded)."""

    def __init__(self, status: int, message: str, *, result: str = "refused") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.result = result


class Unreachable(Refusal):
    """The person's connection to the control plane could not be opened (503)."""

    def __init__(self, why: str) -> None:
        super().__init__(503, f"control plane unreachable: {why}", result="error")
        self.why = why


class RampTripped(Exception):
    """An approval's ramp ended tripped before a resume was confirmed (`line` says why and
    what the scope is now): its kill is the answer, not "the approval ended"."""

    def __init__(self, outcome: RampOutcome) -> None:
        self.outcome = outcome
        trip = outcome.trip
        if trip is None or not trip.sent:
            after = (
                "its kill was NOT sent (the control plane was out of reach): "
                "kill the scope again now"
            )
        elif trip.revision is None or trip.missing:
            unconfirmed = ", ".join(trip.missing) or "the store"
            after = f"its kill is not confirmed by {unconfirmed}: kill the scope again now"
        else:
            after = "the scope is HALTED again"
        self.line = escaped(
            f"ramp {outcome.ramp_id} TRIPPED at stage {outcome.stage + 1} "
            f"({outcome.fraction:.0%} limits): {outcome.trip_reason}; {after}"
        )
        super().__init__(self.line)


class KillBody(msgspec.Struct, forbid_unknown_fields=True):
    scope: KillScope
    reason: str
    confirm: str
    key: str = ""
    drain: bool = False


class ResumeBody(msgspec.Struct, forbid_unknown_fields=True):
    scope: KillScope
    reason: str
    key: str = ""
    ack: list[str] = []
    revision: int = 0
    """The halt's store revision as it was shown (the page sends its halts row's): a slot
    stored again since (a newer kill, another reason) is refused, never requested unseen
    (the request was made for whatever the slot held when it was sent). 0: not checked."""


class ApproveBody(msgspec.Struct, forbid_unknown_fields=True):
    """An approval names the request as it was shown (its scope, key and `digest`): the
    approvals bucket is writable by operators, so the record under an id can change
    between the page showing it and the click."""

    request_id: str
    scope: KillScope
    key: str
    digest: str
    password: str
    reason: str
    ack: list[str] = []


class FlagBody(msgspec.Struct, forbid_unknown_fields=True):
    flag: str
    reason: str


class AckBody(msgspec.Struct, forbid_unknown_fields=True):
    slot: str
    revision: int
    note: str


def confirm_word(scope: KillScope, key: str) -> str:
    """What a person types to confirm a kill: KILL for the fleet, else the scope's name."""
    return "KILL" if scope is KillScope.FLEET else key


def _credential(who: Principal) -> tuple[str, str, str]:
    """Which credential a principal stands on: its session's id or its token's."""
    return who.via, who.name, who.session.id if who.session is not None else who.token_id


def _standing(user: User) -> str:
    """What a session remembers of its user from the login, and must still find: the
    password hash (a change or an admin reset ends it) and the count of disables (a
    disable ends it, even when an `enable` follows before the session's next request)."""
    return f"{user.password_hash}#{user.disables}"


def _unreadable(why: str) -> str:
    """The refusal of a token the last copy of the users file read does not hold, while the
    file cannot be read: the file and why, never "not logged in" (a 401 saying the token was
    unknown, expired or revoked sent whoever read it after a revocation that never
    happened; the token may have been issued since that copy)."""
    return (
        f"users file: cannot be read ({why}), and this token is not in the last copy the "
        "console read; a logged-in session's kill, a known token's and the CLI's still work"
    )


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


def _reason(text: str, field: str = "reason") -> str:
    """`text` stripped, or a 422 naming `field` (an acknowledgement's is its `note`: its
    refusals named a `reason` field the body does not have). A reason that adds risk back
    (a resume's, an approval's) or an acknowledgement's note is refused with a control
    character in it, as the CLI's `reason_value` refuses it: it is signed, stored, shown
    in every `status` and written to every node's log, where a newline forged a line and
    an escape sequence rewrote a terminal (only a stop's reason is sent cleaned instead,
    `_stop_reason`: nothing may hold a stop back)."""
    text = text.strip()
    if not text:
        raise Refusal(422, f"{field}: required (recorded with the command)")
    if len(text) > REASON_MAX:
        raise Refusal(422, f"{field}: at most {REASON_MAX} characters (got {len(text)})")
    if not text.isprintable():
        raise Refusal(422, f"{field}: control characters in {quoted(text)}; write it on one line")
    return text


def _stop_reason(text: str) -> tuple[str, str]:
    """The reason of a stop (a kill, a drain, a flag to its safe default, a rollout's
    abort), never a reason to hold it back (as the CLI's `kill`): blank is refused (say
    why), but one longer than `REASON_MAX` or with a control character goes out cleaned
    (each control character as its escape, cut to the bound), and the answer says so
    (`reason_cleaned`, "" when nothing was changed). Refused, a log line pasted into the
    page's reason (600 characters) was a 422 and the kill was not sent."""
    text = text.strip()
    if not text:
        raise Refusal(422, "reason: required (recorded with the command)")
    if len(text) <= REASON_MAX and text.isprintable():
        return text, ""
    cleaned = escaped(text)
    if len(cleaned) > REASON_MAX:
        cleaned = cleaned[: REASON_MAX - 1] + "\u2026"
    return cleaned, f"reason: sent cleaned (one line, at most {REASON_MAX} characters)"


def _scope_key(scope: KillScope, key: str) -> str:
    """The halt key a body names, by the CLI's rules (`cli.options.scope_of`): a key that
    names nothing a node could match is refused, never sent as if it stopped something."""
    if scope is KillScope.FLEET:
        # a fleet body naming something else is a mistake, not a wish to stop everything
        if key not in ("", FLEET_KEY):
            raise Refusal(422, f"key: the fleet scope takes no key (got {quoted(key)}); "
                          "name the scope that key belongs to")  # fmt: skip
        return FLEET_KEY
    if not key or key != key.strip():
        raise Refusal(422, f"key: a {scope.value} kill names its {scope.value} (no blanks)")
    if not key.isprintable():
        # a newline in a key would start a forged line in every node's log
        raise Refusal(422, f"key: must not contain control characters (got {key!r})"[:200])
    if scope is KillScope.NODE and not is_name(key):
        # a node is admitted only under a roster name: a look-alike (a fullwidth or Armenian
        # letter, a '.') was stored and shown as "HALTED node n1" while n1 traded on
        raise Refusal(422, f"key: a node id is {NAME_RULE} (got {quoted(key)}); no node "
                      "could hold this one: copy the id from the fleet table")  # fmt: skip
    if scope is KillScope.STRATEGY and "/" in key:
        # no strategy holds a '/' (it joins strategy and symbol): this would halt nothing
        raise Refusal(422, f"key: a strategy name has no '/' (got {quoted(key)}); for one "
                      "strategy in one symbol use the strategy_symbol scope")  # fmt: skip
    if scope is KillScope.STRATEGY_SYMBOL:
        strategy, symbol = split_pair(key)
        if not strategy or not symbol or strategy != strategy.strip() or symbol != symbol.strip():
            raise Refusal(422, "key: strategy_symbol is STRATEGY/SYMBOL, both named, no blanks")
    try:
        slot_of(scope, key)
    except StateKeyError as exc:
        raise Refusal(422, f"key: {exc}") from None
    return key


def result_json(result: CommandResult) -> dict[str, Any]:
    e = result.entry
    return {
        "command_id": e.command_id,
        "scope": e.scope.value,
        "key": e.key,
        "state": TradingState(e.state).name,
        "targets": result.targets,
        "latencies_ms": result.latencies_ms,
        "missing": [
            {
                "node": n,
                "lease": "unknown"
                if not result.leases.get(n)
                else ("expired" if result.lease_expired(n) else "live"),
            }
            for n in result.missing
        ],
        "still_working": result.still_working,
        "stored_revision": result.revision,
        "durable_error": result.durable_error,
        "sent": result.sent,
        "unreachable": result.unreachable,
        "ok": result.ok,
    }


def checklist_json(checklist: Checklist, halted: list[str]) -> dict[str, Any]:
    return {
        "passed": checklist.passed,
        "items": [{"name": i.name, "ok": i.ok, "detail": i.detail} for i in checklist.items],
        "crash_loops_halted": halted,
    }


class Console:
    """The console's state: the fleet view, the people logged in, their connections."""

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        plane: NatsControlPlane,
        trust: TrustStore,
        users: UserStore,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.plane = plane
        self.trust = trust
        self.users = users
        self.clock: Clock = clock or SystemClock()
        self.sessions = Sessions()
        self.cookie = HOST_COOKIE if settings.secure_cookies else COOKIE
        self.throttle = LoginThrottle()
        self.stepup = LoginThrottle()
        """The approvals' password step-up, per user and per address: counted per session,
        a guesser holding a user's cookie (or a token) spread guesses over fresh logins,
        each with its own free tries. Its own table: a stolen credential's failures never
        slow that person's login, whose session is what a kill is sent from."""
        self.audit = ConsoleAudit(settings.audit, self.clock)
        self.watch = Watch(plane, trust, self.clock, every_s=settings.heartbeat_s)
        self.links: dict[str, PersonLink] = {}
        self.acks: dict[tuple[str, int], dict[str, Any]] = {}
        self.approving: dict[tuple[str, str], tuple[str, str]] = {}
        """The halts (scope, key) whose resume is being approved here now (to its ramp's end):
        the request's id and its approver. A second approval, sent at once or while the ramp
        ran, ran its own preflight and ramp; its stale resume then wrote the slot's one ramp
        record as "tripped, resume not issued" over the resume that was issued (and, of the
        same request, closed it as STALE), and the strategy traded on. Keyed by the halt, not
        the request: two operators may each request one halt's resume, and approving both at
        once did the same through the other request."""
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stream_gaps = 0
        """Event streams ended because their reader fell `STREAM_QUEUE` events behind."""
        self.closing = asyncio.Event()
        self.templates = Environment(
            loader=PackageLoader("knightwatch.console", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self._reaper: asyncio.Task[None] | None = None
        self._device_key = secrets.token_bytes(32)  # a restart forgets devices: safe
        self._reading = asyncio.Lock()
        self._last_read: tuple[float, Snapshot] | None = None  # (when its read began, what it read)

    def device_cookie(self, name: str) -> str:
        """A device cookie for `name`: a fresh id and the console's MAC over both."""
        device = secrets.token_urlsafe(16)
        return f"{device}.{self._device_mac(name, device)}"

    def device_of(self, request: Request, name: str) -> str | None:
        """The device id of this browser if it logged in as `name` before, else None."""
        device, _, mac = request.cookies.get(DEVICE_COOKIE, "").partition(".")
        # compare_digest raises on non-ASCII text; no MAC of ours has any, so it is no match
        if device and mac.isascii() and hmac.compare_digest(mac, self._device_mac(name, device)):
            return device
        return None

    def _device_mac(self, name: str, device: str) -> str:
        msg = f"{name}\x00{device}".encode()
        return hmac.new(self._device_key, msg, hashlib.sha256).hexdigest()[:32]

    async def fresh_snapshot(self) -> Snapshot:
        """The fleet read after this call began: one read at a time, shared by every call
        that arrived before it started (a flood of requests costs the control plane one
        read per read's duration, not one per request)."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        async with self._reading:
            held = self._last_read
            if held is not None and held[0] >= arrived:
                return held[1]
            began = loop.time()
            snap = await build(self.plane, self.trust, self.clock)
            self._last_read = (began, snap)
            return snap

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._load_acks()
        await self.watch.start()
        self._reaper = asyncio.create_task(self._reap(), name="console-reaper")

    async def stop(self) -> None:
        self.closing.set()
        if self._reaper is not None:
            self._reaper.cancel()
        await self.watch.stop()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # a ramp closes its own connection as its task ends
            await asyncio.wait(tasks, timeout=2.0)
        for link in list(self.links.values()):
            with contextlib.suppress(Exception):
                await link.plane.close()
        self.links.clear()
        await asyncio.to_thread(self.audit.close)  # writes what is queued: off the loop

    def _load_acks(self) -> None:
        if not self.settings.audit.exists():
            return
        found = search(self.settings.audit, Query(action="ack_alert", limit=10_000))
        for rec in found.records:
            d = rec.data
            if d.get("status") == 200:
                slot, rev = str(d.get("scope", "")), int(d.get("key", "0") or 0)
                self.acks.setdefault(
                    (slot, rev), {"by": d.get("actor"), "at_ns": rec.ts, "note": d.get("detail")}
                )

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            live = set(self.sessions.ids())
            for sid in [s for s in self.links if s not in live]:
                await self._unlink(sid)

    async def _unlink(self, sid: str) -> None:
        link = self.links.pop(sid, None)
        if link is not None:
            with contextlib.suppress(Exception):
                await link.plane.close()

    async def _link(self, signer: Signer, tag: str) -> PersonLink:
        plane = NatsControlPlane(self.settings.urls, name=f"console-{tag}", signer=signer)
        await plane.connect()
        ks = KillSwitch(plane, self.clock, signer, self.trust)
        await ks.start()
        return PersonLink(plane, ks)

    # ------------------------------------------------------------ who
    def principal(self, request: Request, *, touch: bool = True) -> Principal | None:
        """Who sent `request`, judged now. `touch`: a session's idle clock restarts (not
        when an open stream re-checks it: a page left open still idles out)."""
        sid = request.cookies.get(self.cookie)
        if sid:
            session = self.sessions.get(sid, touch=touch)
            if session is not None:
                unchecked = ""
                try:
                    user = self.users.get(session.name)
                except ConsoleUserError as exc:
                    # a broken users file must not stop a logged-in person from stopping the
                    # fleet: the session stands for that and reading (new logins, approvals,
                    # resume requests and acknowledgements are refused), judged against the
                    # last copy read (a disable read before the file broke still ends it)
                    log.error("console users file unreadable: %s", exc)
                    user, unchecked = self.users.get_last_read(session.name) or _KEEP, str(exc)
                if user is None or (
                    user is not _KEEP and (user.disabled or _standing(user) != session.credential)
                ):  # disabled (now or since the login), or its password changed: it ends
                    self.sessions.close(sid)
                    return None
                refused = self.key_refused(session.name, session.signer.key.key_id)
                if refused:  # revoked or rotated out since the login: the session ends now
                    self.sessions.close(sid)
                    request.state.ended = refused
                    request.state.audit_extra = {"detail": f"session ended: {refused}"}
                    return None
                return Principal(
                    session.name, held_roles(self.trust.roster, session.name), "session", session,
                    signer=session.signer, unchecked=unchecked,
                )  # fmt: skip
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            secret, now_ns, unchecked = auth[7:].strip(), self.clock.time_ns(), ""
            try:
                try:
                    user, token, signer = self.users.authenticate_token(secret, now_ns)
                except ConsoleUserError as exc:
                    # the stop direction is never gated on the file: the token is judged
                    # against the last copy read and stands for `STOP_OR_READ` only
                    log.error("console users file unreadable: %s", exc)
                    unchecked = str(exc)
                    user, token, signer = self.users.authenticate_token_last_read(secret, now_ns)
            except LoginFailed as exc:
                if unchecked and exc.why == "unknown_token":  # issued since: it may be good
                    self._not_judged(request, unchecked)
                else:
                    request.state.audit_extra = {"detail": f"token refused: {exc.why}"}
                return None
            except ConsoleUserError as exc:  # no copy read yet, or its key cannot be opened
                self._not_judged(request, unchecked or str(exc))
                return None
            refused = self.key_refused(user.name, user.key_id)
            if refused:  # a token acts as its owner: a revoked owner's tokens are out too
                request.state.ended = refused
                request.state.audit_extra = {"detail": f"token refused: {refused}"}
                return None
            scope = frozenset(token.roles)
            return Principal(
                user.name,
                held_roles(self.trust.roster, user.name, scope),
                "token",
                token_id=token.id,
                scope=scope,
                service=token.service,
                signer=signer,
                unchecked=unchecked,
            )
        return None

    @staticmethod
    def _not_judged(request: Request, why: str) -> None:
        """No principal: the users file cannot be read and the token is not in the last copy
        read (`require` answers 503 naming the file, never "unknown, expired or revoked")."""
        request.state.audit_extra = {"detail": f"users file unreadable: {why}"}
        request.state.unreadable = why

    def key_refused(self, name: str, key_id: str) -> str:
        """Why the roster no longer lets `key_id` act as `name`, judged now ("" while it
        does). Roles are the name's (`held_roles`), which a revoked key keeps on the
        roster: without this, a session or token whose key was revoked or rotated out
        after it was opened kept killing, requesting and approving until it ended."""
        roster = self.trust.roster
        if roster is None:
            return ""  # `decide` refuses everyone without a verified roster
        member = roster.member(key_id)
        if member is None or member.name != name:
            return (
                f"{name}'s key {key_id[:16]} is not on the roster (version "
                f"{self.trust.version}): log in again with the key the roster holds"
            )
        if not member.valid_at(self.clock.time_ns()):
            return (
                f"{name}'s key {key_id[:16]} is revoked or rotated out (roster version "
                f"{self.trust.version}): ask an admin"
            )
        return ""

    def require(
        self,
        request: Request,
        action: Action,
        *,
        requester: str | None = None,
        touch: bool = True,
    ) -> Principal:
        """Who may do `action`, or a Refusal. `touch=False`: a read the page makes by itself
        (its timer), which must not keep an unattended session from idling out."""
        unsafe = request.method not in ("GET", "HEAD")
        # an unsafe request's session is touched only once it passed the cross-site and
        # CSRF checks: a refused one (a forged form, replayed every few minutes) kept an
        # unattended session from ever idling out
        who = self.principal(request, touch=touch and not unsafe)
        if who is None:
            unreadable = getattr(request.state, "unreadable", "")
            if unreadable:  # the token may be good: not "unknown, expired or revoked"
                raise Refusal(503, _unreadable(unreadable), result="error")
            ended = getattr(request.state, "ended", "")
            unknown = "not logged in (or the token is unknown, expired or revoked)"
            raise Refusal(401, f"not logged in: {ended}" if ended else unknown)
        request.state.actor = who.name
        request.state.via = who.via
        request.state.token_id = who.token_id
        request.state.roles = ",".join(sorted(r.value for r in who.roles))
        request.state.unchecked = who.unchecked
        if who.session is not None and unsafe:
            self._csrf(request, who)
            if touch:
                self.sessions.get(who.session.id)  # its idle clock restarts now
        if who.unchecked and action not in STOP_OR_READ:
            raise Refusal(
                503, f"users file: {action.value} refused while {who.name}'s standing cannot "
                f"be checked ({who.unchecked}); kills still work", result="error",
            )  # fmt: skip
        verdict = decide(
            self.trust.roster,
            who.name,
            action,
            scope=who.scope,
            service=who.service,
            requester=requester,
        )
        if not verdict.allowed:
            raise Refusal(403, verdict.why)
        return who

    def may(self, who: Principal, action: Action) -> bool:
        """Whether `who` may do `action` now, as `require` would judge it (without the
        request's own checks): what the page offers and `/api/whoami` lists. The page
        offered resume requests, approvals and acknowledgements while the users file could
        not be read, each click then a 503."""
        allowed = decide(
            self.trust.roster, who.name, action, scope=who.scope, service=who.service
        ).allowed
        return allowed and (not who.unchecked or action in STOP_OR_READ)

    def viewing(self, request: Request, opened_by: Principal) -> str:
        """Why an open stream must end now ("" while it may go on): its credential judged
        again as a new request would be (logout, expiry, disable, a password change, a
        revoked or expired token, a roster that no longer lets them view)."""
        who = self.principal(request, touch=False)
        if who is None:
            unreadable = getattr(request.state, "unreadable", "")
            return (
                _unreadable(unreadable)
                if unreadable
                else "logged out, expired, disabled or revoked"
            )
        if _credential(who) != _credential(opened_by):
            return "the credential changed"
        verdict = decide(self.trust.roster, who.name, Action.VIEW, scope=who.scope,
                         service=who.service)  # fmt: skip
        return "" if verdict.allowed else verdict.why

    @staticmethod
    def same_origin(request: Request) -> None:
        """Refuses (403) a request from another site: Fetch Metadata, else `Origin` against
        `Host`. Checked before a session's request body is read, so a cross-site request is
        a 403 whatever its body."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refusal(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        if site is None:
            origin = request.headers.get("origin")
            host = request.headers.get("host", "")
            # the scheme too: http://host is another origin than an https console's (a
            # page served over plain HTTP on the same name, which anyone on the path can
            # write, passed as this one)
            if origin is not None:
                parts = urllib.parse.urlsplit(origin)
                if parts.netloc != host or parts.scheme != request.url.scheme:
                    raise Refusal(
                        403,
                        f"cross-origin request refused (Origin does not match "
                        f"{request.url.scheme}://Host)",
                    )

    @classmethod
    def _csrf(cls, request: Request, who: Principal, sent: str | None = None) -> None:
        """Same-origin and the session's CSRF token: from `X-CSRF-Token`, or `sent` (the
        logout form's field, which works without the page's script)."""
        cls.same_origin(request)
        sent = request.headers.get("x-csrf-token", "") if sent is None else sent
        assert who.session is not None
        if not (sent.isascii() and secrets.compare_digest(sent, who.session.csrf)):
            raise Refusal(403, "missing or wrong CSRF token")

    async def link_of(self, who: Principal) -> tuple[PersonLink, bool]:
        """The person's connection: their session's, or a new one for a token (closed after)."""
        if who.session is not None:
            link = self.links.get(who.session.id)
            if link is not None:
                return link, False
        if who.signer is None:
            raise Refusal(403, "this credential carries no key: it can only read")
        try:
            link = await self._link(who.signer, who.name)
        except ControlPlaneUnavailable as exc:
            raise Unreachable(str(exc)) from None
        if who.session is not None:
            self.links[who.session.id] = link
            return link, False
        return link, True

    @contextlib.asynccontextmanager
    async def acting(self, who: Principal) -> AsyncIterator[PersonLink]:
        """The person's connection for one action (a token's own is closed after it)."""
        link, temporary = await self.link_of(who)
        try:
            yield link
        finally:
            if temporary:
                await link.plane.close()

    async def recording(self, what: str) -> None:
        """Refuses (503, naming the audit) an action that lifts a kill while the console's
        record cannot be written: a resume nobody can account for afterwards must not
        happen. Judged on the record's own thread, after every record queued before it.
        Never called on the stop direction."""
        writable, problem = await self.audit.writable()
        if not writable:
            problem = problem or "the recorder is not ready"
            raise Refusal(
                503, f"audit: {what} refused while the console's record cannot be written "
                f"({problem}); kills still work", result="error",
            )  # fmt: skip

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


# ---------------------------------------------------------------- request bodies


async def _read(request: Request) -> bytes:
    """The request's body, refused (413) as soon as it is known to pass `MAX_BODY`: by its
    Content-Length before anything is read, else while it streams in. Reading it whole
    first let one unauthenticated request of 300 MB grow the console by 600 MB."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise Refusal(413, f"body: at most {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Refusal(413, f"body: at most {MAX_BODY} bytes")
    return bytes(raw)


async def _body(request: Request, kind: type[Any]) -> Any:
    raw = await _read(request)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise Refusal(422, f"body: {exc}") from None
    except UNDECODABLE as exc:  # RecursionError: nested deeper than msgspec decodes
        raise Refusal(400, f"body: not JSON ({exc})") from None


def _note(request: Request, action: str, **params: Any) -> None:
    request.state.action = action
    request.state.params = params_hash(params)
    scope = params.get("scope")
    request.state.scope = str(scope) if scope is not None else ""
    request.state.key = str(params.get("key", ""))


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


Handler = Callable[[Request], Awaitable[Response]]


def handled(fn: Handler) -> Handler:
    """Refusals and expected errors become a JSON answer with their status (recorded)."""

    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except Refusal as exc:
            request.state.result = exc.result
            request.state.detail = exc.message
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except KillSwitchError as exc:
            status = 409 if "stale" in str(exc) or "already" in str(exc) else 403
            if "no such request" in str(exc):
                status = 404
            request.state.result = "refused"
            request.state.detail = str(exc)
            return JSONResponse({"error": str(exc)}, status_code=status)
        except ControlPlaneUnavailable as exc:
            request.state.result = "error"
            request.state.detail = str(exc)
            return JSONResponse({"error": f"control plane: {exc}"}, status_code=503)

    return run


# ---------------------------------------------------------------- pages


async def login_page(request: Request) -> Response:
    c = _console(request)
    try:
        users, error = bool(c.users.names()), ""
    except ConsoleUserError as exc:
        users, error = True, f"logins are refused: {exc}"
    page = c.templates.get_template("login.html").render(error=error, users=users)
    return HTMLResponse(page)


async def _form(request: Request) -> dict[str, str]:
    raw = await _read(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = msgspec.json.decode(raw, type=dict[str, str])
        except UNDECODABLE as exc:
            raise Refusal(400, f"body: {exc}") from None
        return data
    try:
        parsed = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=FORM_FIELDS)
    except ValueError:  # more fields than that: it was a traceback and a 500
        raise Refusal(400, f"body: at most {FORM_FIELDS} form fields") from None
    return {k: v[0] for k, v in parsed.items()}


async def login(request: Request) -> Response:
    c = _console(request)
    request.state.action = "login"
    try:
        # Fetch Metadata, else Origin against Host: a browser without Fetch Metadata still
        # names the page a cross-site form came from (only Sec-Fetch-Site was looked at, so
        # such a page could log a browser into its own account, or spend a name's tries)
        c.same_origin(request)
    except Refusal as exc:
        request.state.result, request.state.detail = "refused", f"login: {exc.message}"
        return PlainTextResponse(f"cross-site login refused: {exc.message}", status_code=403)
    try:
        form = await _form(request)
    except Refusal as exc:
        return PlainTextResponse(exc.message, status_code=exc.status)
    name, password = form.get("name", "").strip(), form.get("password", "")
    ip = _client(request)
    request.state.actor = name[:64]
    device = c.device_of(request, name)
    # the attempt is counted before the (slow) verification, in one step with the check:
    # a burst of concurrent guesses gets no more verifications than one after another
    wait = c.throttle.reserve(name, ip, device)
    if wait > 0:
        request.state.result, request.state.detail = "refused", f"throttled for {wait:.1f} s"
        page = c.templates.get_template("login.html").render(
            error=f"too many failed attempts: try again in {math.ceil(wait)} s", users=True
        )
        return HTMLResponse(page, status_code=429, headers={"Retry-After": str(math.ceil(wait))})
    try:
        signer = await asyncio.to_thread(c.users.unlock, name, password)
    except ConsoleUserError as exc:
        c.throttle.release(name, ip, device)  # nothing was learnt about the password
        request.state.result, request.state.detail = "error", str(exc)
        return PlainTextResponse(f"logins are refused: {exc}", status_code=503)
    except LoginFailed as exc:  # already counted by the reservation
        request.state.result, request.state.detail = "refused", f"login failed: {exc.why}"
        page = c.templates.get_template("login.html").render(
            error="wrong name or password", users=True
        )
        return HTMLResponse(page, status_code=401)
    roster = c.trust.roster
    member = roster.member(signer.key.key_id) if roster is not None else None
    if member is None or member.name != name or not member.valid_at(c.clock.time_ns()):
        c.throttle.release(name, ip, device)  # the password was right; the roster refuses
        request.state.result = "refused"
        request.state.detail = "the user's key is not a valid roster key of that name"
        page = c.templates.get_template("login.html").render(
            error=f"{name}'s key is not on the fleet's roster (ask an admin)", users=True
        )
        return HTMLResponse(page, status_code=403)
    c.throttle.succeeded(name, ip, device)
    previous = request.cookies.get(c.cookie)
    if previous and c.sessions.close(previous):
        # the id is rotated: the session this browser held (anyone's) ends here, with its
        # unlocked key and connection, instead of working on until it idled out
        await c._unlink(previous)
    user = c.users.get(name)
    session = c.sessions.open(
        name,
        signer,
        ip,
        request.headers.get("user-agent", "")[:200],
        credential=_standing(user) if user is not None else "",
    )
    try:
        c.links[session.id] = await c._link(signer, name)
    except ControlPlaneUnavailable as exc:
        c.sessions.close(session.id)
        request.state.result, request.state.detail = "error", str(exc)
        return PlainTextResponse(f"control plane unreachable: {exc}", status_code=503)
    for oldest in c.sessions.trim(name, SESSIONS_PER_USER):
        await c._unlink(oldest)  # their keys and connections go with them
    request.state.result = "ok"
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        c.cookie,
        session.id,
        httponly=True,
        samesite="strict",
        secure=c.settings.secure_cookies,
        path="/",
    )
    if device is None:
        response.set_cookie(
            DEVICE_COOKIE,
            c.device_cookie(name),
            max_age=DEVICE_TTL_S,
            httponly=True,
            samesite="strict",
            secure=c.settings.secure_cookies,
            path="/login",
        )
    return response


async def logout(request: Request) -> Response:
    c = _console(request)
    request.state.action = "logout"
    who = c.principal(request, touch=False)  # a refused logout leaves the idle clock be
    if who is not None and who.session is not None:
        try:
            c.same_origin(request)  # before the form is read
            sent = request.headers.get("x-csrf-token")
            if sent is None:  # the plain form: its hidden field
                sent = (await _form(request)).get("csrf", "")
            c._csrf(request, who, sent)
        except Refusal as exc:
            request.state.result, request.state.detail = "refused", exc.message
            return PlainTextResponse(exc.message, status_code=exc.status)
        request.state.actor = who.name
        c.sessions.close(who.session.id)
        await c._unlink(who.session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        c.cookie, path="/", secure=c.settings.secure_cookies, httponly=True, samesite="strict"
    )
    return response


def _page(name: str) -> Handler:
    async def page(request: Request) -> Response:
        c = _console(request)
        who = c.principal(request)
        request.state.action = f"page:{name}"
        if who is None or who.session is None:
            request.state.result = "redirect"
            return RedirectResponse("/login", status_code=303)
        request.state.actor = who.name
        html = c.templates.get_template(f"{name}.html").render(
            user=who.name,
            roles=sorted(r.value for r in who.roles),
            csrf=who.session.csrf,
            can_kill=c.may(who, Action.KILL),
            can_request=c.may(who, Action.REQUEST_RESUME),
            can_approve=c.may(who, Action.APPROVE),
            can_flags=c.may(who, Action.SAFE_DEFAULT),
            can_ack=c.may(who, Action.ACK_ALERT),
            heartbeat_ms=int(c.settings.heartbeat_s * 1000),
        )
        return HTMLResponse(html)

    return page


# ---------------------------------------------------------------- API


@handled
async def api_whoami(request: Request) -> Response:
    c = _console(request)
    who = c.require(request, Action.VIEW)
    request.state.action = "whoami"
    allowed = [a.value for a in Action if c.may(who, a)]
    return JSONResponse({"name": who.name, "via": who.via, "roles": sorted(who.roles),
                         "may": allowed})  # fmt: skip


@handled
async def api_snapshot(request: Request) -> Response:
    c = _console(request)
    c.require(request, Action.VIEW)
    request.state.action = "snapshot"
    fresh = await c.fresh_snapshot()  # read after the request: a script acts on what it gets
    return Response(SNAPSHOT_ENCODER.encode(fresh), media_type="application/json")


@handled
async def api_kill(request: Request) -> Response:
    c = _console(request)
    who = c.require(request, Action.KILL)
    body: KillBody = await _body(request, KillBody)
    key = _scope_key(body.scope, body.key)
    _note(request, "drain" if body.drain else "kill", scope=body.scope.value, key=key)
    reason, cleaned = _stop_reason(body.reason)
    if body.confirm != confirm_word(body.scope, key):
        raise Refusal(
            422, f"confirm: type {confirm_word(body.scope, key)!r} exactly to confirm this kill"
        )
    state = TradingState.REDUCING if body.drain else TradingState.HALTED
    try:
        async with c.acting(who) as link:
            result = await link.killswitch.kill(
                body.scope,
                key,
                f"{reason} (console, {who.name})",
                timeout_s=c.settings.kill_timeout_s,
                state=state,
            )
    except Unreachable as exc:  # a token's own connection could not even be opened
        error = unreachable_message(c.settings.urls, exc.why, sent=False)
        request.state.result, request.state.detail = "error", error
        return JSONResponse(
            {"scope": body.scope.value, "key": key, "state": state.name, "ok": False,
             "sent": False, "error": error, "reason_cleaned": cleaned},
            status_code=503,
        )  # fmt: skip
    out = result_json(result)
    out["reason_cleaned"] = cleaned
    for m in out["missing"]:
        if result.not_member(m["node"]):
            m["lease"] = "none: not a member of this fleet"
    nobody = reached_no_one(result, "drain" if body.drain else "kill")
    if result.reached_none:
        # stored, but no node in its scope received it: said; a node kill naming no member
        # (a typo for the runaway's id) is never "every live node confirmed"
        out["error"] = nobody
        if result.missed_its_node:
            out["ok"] = False
    request.state.result = "ok" if out["ok"] else "unconfirmed"
    confirmed = ",".join(f"{n}:{ms:.1f}ms" for n, ms in sorted(result.latencies_ms.items()))
    missing = "; not confirmed: " + ",".join(result.missing) if result.missing else ""
    request.state.detail = (
        f"confirmed by {confirmed or 'nobody'}{missing}"
        + (f"; {nobody}" if result.reached_none else "")
        + (f"; {cleaned}" if cleaned else "")
    )
    if result.revision is None and not result.latencies_ms:
        # neither stored nor confirmed by any node (or never sent): the control plane is out
        # of reach, and the person must learn it now, with what to do instead
        why = result.unreachable or result.durable_error or "no answer in time"
        out["error"] = unreachable_message(c.settings.urls, why, sent=result.sent)
        request.state.result, request.state.detail = "error", out["error"]
        return JSONResponse(out, status_code=503)
    return JSONResponse(out, status_code=200)


@handled
async def api_request_resume(request: Request) -> Response:
    c = _console(request)
    who = c.require(request, Action.REQUEST_RESUME)
    body: ResumeBody = await _body(request, ResumeBody)
    key = _scope_key(body.scope, body.key)
    _note(request, "request_resume", scope=body.scope.value, key=key, ack=body.ack)
    reason = _reason(body.reason)
    if not 0 <= body.revision < 2**63:
        raise Refusal(422, f"revision: the halt's as shown, 1..2**63-1, or 0 (got {body.revision})")
    await c.recording("a resume request")
    async with c.acting(who) as link:
        if body.revision:  # moved already: refused before a preflight halts or pages anyone
            stored, revision = await link.plane.get_state(body.scope, key)
            if revision != body.revision:
                raise Refusal(409, _moved(body.scope, key, body.revision, revision, stored))
        try:
            checklist, halted, req = await workflow.request_resume(
                link.plane,
                link.killswitch,
                body.scope,
                key,
                reason,
                acknowledged=body.ack,
                cfg=c.settings.preflight,
                pager=Pager(),
                plan=c.settings.plan,
                shown=body.revision,  # written only if decided on it: a kill meanwhile, none
            )
        except RequestMoved as exc:
            stored, _ = await link.plane.get_state(body.scope, key)
            raise Refusal(409, _moved(body.scope, key, exc.shown, exc.now, stored)) from None
    out = checklist_json(checklist, halted)
    if req is None:
        request.state.result, request.state.detail = "refused", checklist.summary()
        return JSONResponse({"error": "preflight refused: " + checklist.summary(), **out}, 409)
    request.state.detail = f"request {req.id}"
    return JSONResponse({"request_id": req.id, **out})


def _moved(scope: KillScope, key: str, shown: int, now: int, stored: StateEntry | None) -> str:
    """A resume request's refusal: the halt it was shown is not the one stored now."""
    held = (
        f"{TradingState(stored.state).name} by {quoted(stored.actor)}: {quoted(stored.reason)}"
        if stored is not None
        else "nothing readable"
    )
    return (
        f"revision: {scope.value} {key} was stored again since it was shown (revision {now} "
        f"now, not {shown}; {held}): look at the halt again before requesting its resume"
    )


@handled
async def api_approve(request: Request) -> Response:
    c = _console(request)
    request.state.action = "approve"
    # who, cross-site, CSRF and the role before the body and before the request is read: a
    # stranger's body is never read, a cross-site approval is a 403 whatever its body, and
    # one who may not approve learns nothing of which request ids exist (it was a 404 for
    # a missing one and a 403 for one there)
    c.require(request, Action.APPROVE)
    body: ApproveBody = await _body(request, ApproveBody)
    _note(request, "approve", request_id=body.request_id)
    if not REQUEST_ID.fullmatch(body.request_id):
        raise Refusal(422, "request_id: letters, digits, '-', '_', '=' or '.' (1-64), as listed")
    # who asked is read first (by the console, for a session and a token alike), so the
    # policy refuses self-approval before a password is checked
    try:
        found, _ = await read_request(c.plane, body.request_id)
    except KillSwitchError as exc:
        raise Refusal(404 if "no such request" in str(exc) else 409, str(exc)) from None
    request.state.scope = found.entry.scope.value
    request.state.key = found.entry.key
    requester = found.requester
    who = c.require(request, Action.APPROVE, requester=requester, touch=False)
    reason = _reason(body.reason)
    shown = {"scope": body.scope.value, "key": body.key, "digest": body.digest}
    now = {"scope": found.entry.scope.value, "key": found.entry.key, "digest": digest(found.entry)}
    for name in shown:
        if shown[name] != now[name]:
            raise Refusal(
                409,
                f"{name}: request {found.id} now carries {found.entry.scope.value} "
                f"{found.entry.key} by {found.requester} ({name} {now[name]!r}), not the "
                f"{shown[name]!r} shown: look again before approving",
            )
    await c.recording("an approval")
    ip = _client(request)
    # per user and per address, whatever session or token asks: only someone holding one of
    # the user's credentials can fail under the name here, and fresh sessions of theirs no
    # longer bring fresh tries (the stop direction never passes through this table)
    wait = c.stepup.reserve(who.name, ip)  # counted before the verification
    if wait > 0:
        raise Refusal(429, f"too many failed attempts: try again in {math.ceil(wait)} s")
    try:
        fresh = await asyncio.to_thread(c.users.unlock, who.name, body.password)
    except ConsoleUserError as exc:
        c.stepup.release(who.name, ip)
        raise Refusal(503, f"approvals are refused: {exc}", result="error") from None
    except LoginFailed as exc:  # already counted by the reservation
        raise Refusal(
            401, f"re-authentication failed ({exc.why}): re-enter your password"
        ) from None
    c.stepup.succeeded(who.name, ip)
    if who.session is not None:
        c.sessions.reauthenticated(who.session.id)
    claimed = (found.entry.scope.value, found.entry.key)
    busy = c.approving.get(claimed)
    if busy is not None:  # checked and claimed with no await between: one approval at a time
        other, by = busy
        what = (
            f"{found.id} is being approved by {by} now"
            if other == found.id
            else f"{found.id}: {found.entry.scope.value} {found.entry.key} is being resumed by "
            f"request {other}, approved by {by} now"
        )
        raise Refusal(
            409, f"request_id: {what} (its ramp runs to its end): look again when it is done"
        )
    c.approving[claimed] = (found.id, who.name)
    # The ramp runs for minutes on a connection of its own, opened with the freshly unlocked
    # key and closed by the ramp's task: on the session's connection, a logout or an
    # idle-out of the approver closed it and the console stopped watching for spikes.
    try:
        link = await c._link(fresh, f"{who.name}-ramp-{body.request_id}")
    except BaseException as exc:
        del c.approving[claimed]  # no ramp will run: the next approval may
        if isinstance(exc, ControlPlaneUnavailable):
            raise Unreachable(str(exc)) from None
        raise
    ks = link.killswitch  # the freshly unlocked key signs
    loop = asyncio.get_running_loop()
    heard: asyncio.Future[tuple[Checklist, list[str]]] = loop.create_future()
    resumed: asyncio.Future[CommandResult] = loop.create_future()

    def on_preflight(checklist: Checklist, halted: list[str]) -> None:
        if not heard.done():
            heard.set_result((checklist, halted))

    def on_resumed(result: CommandResult) -> None:
        if not resumed.done():
            resumed.set_result(result)

    async def run() -> None:
        try:
            _, outcome = await workflow.approve_resume(
                link.plane,
                ks,
                pinned(body.request_id, body.digest),  # re-checked where it is co-signed
                timeout_s=c.settings.kill_timeout_s,
                plan=c.settings.plan,
                cfg=c.settings.preflight,
                pager=Pager(),
                acknowledged=body.ack,
                on_preflight=on_preflight,
                on_resumed=on_resumed,
            )
            if outcome is not None and not outcome.completed and not resumed.done():
                # the ramp ended with no resume confirmed (the store did not answer its
                # write, so it killed the scope again): the approver hears the trip and
                # what to do, never "the approval ended before a resume"
                resumed.set_exception(RampTripped(outcome))
                resumed.exception()  # retrieved: the handler reads it
        except Exception as exc:
            for future in (heard, resumed):
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the handler reads whichever it awaits
            log.warning("approval of %s ended: %s", body.request_id, exc)
        finally:
            c.approving.pop(claimed, None)  # the ramp ended (or the approval did)
            with contextlib.suppress(Exception):
                await link.plane.close()
            for future in (heard, resumed):
                if not future.done():
                    future.set_exception(KillSwitchError("the approval ended before a resume"))

    c.spawn(run(), f"approve-{body.request_id}")
    try:
        checklist, halted = await heard
        out = checklist_json(checklist, halted)
        if not checklist.passed:
            request.state.result, request.state.detail = "refused", checklist.summary()
            return JSONResponse({"error": "preflight refused: " + checklist.summary(), **out}, 409)
        result = await resumed  # stage one stored and applied, then the co-signed resume
    except RampTripped as exc:
        request.state.result, request.state.detail = "error", exc.line
        trip = exc.outcome.trip
        return JSONResponse({"error": exc.line, "ramp": "tripped", **out,
                             "trip": result_json(trip) if trip is not None else None},
                            status_code=409)  # fmt: skip
    except (KillSwitchError, RampError) as exc:
        raise Refusal(404 if "no such request" in str(exc) else 409, str(exc)) from None
    request.state.result = "ok" if result.ok else "unconfirmed"
    request.state.detail = f"approved {body.request_id} ({reason}); ramping back"
    return JSONResponse({"request_id": body.request_id, "ramp": "started", **out,
                         "resume": result_json(result)})  # fmt: skip


def _registry(c: Console, flag: str) -> FlagRegistry:
    registry = c.settings.registry
    if registry is None:
        raise Refusal(409, "the console was started without --registry: use the CLI")
    if registry.get(flag) is None:
        raise Refusal(404, f"flag: {flag!r} is not in the registry")
    return registry


@handled
async def api_safe_default(request: Request) -> Response:
    """A flag to its safe default everywhere: the stop direction, one person."""
    c = _console(request)
    who = c.require(request, Action.SAFE_DEFAULT)
    body: FlagBody = await _body(request, FlagBody)
    _note(request, "safe_default", scope="flag", key=body.flag)
    reason, cleaned = _stop_reason(body.reason)
    registry = _registry(c, body.flag)
    definition = registry.get(body.flag)
    assert definition is not None
    change = ActivationRequest(
        flag_id=body.flag,
        value=definition.safe_default,
        actor=who.name,
        reason=reason,
        origin="knightwatch-console",
    )
    async with c.acting(who) as link:
        result, latencies, missing = await activate(
            link.plane, c.trust, registry, c.settings.flag_policy, change, c.clock,
            c.settings.kill_timeout_s, signer=link.killswitch.signer,
        )  # fmt: skip
    if not result.accepted:
        raise Refusal(409, f"refused [{result.code}] {result.detail}")
    revision = result.state.revision if result.state is not None else 0
    request.state.detail = f"revision {revision}; not confirmed: {','.join(missing) or 'none'}"
    return JSONResponse(
        {"detail": f"{body.flag} at its safe default, revision {revision}"
         + (f"; not confirmed: {', '.join(missing)}" if missing else ""),
         "revision": revision, "latencies_ms": latencies, "missing": missing,
         "reason_cleaned": cleaned}
    )  # fmt: skip


@handled
async def api_rollout_abort(request: Request) -> Response:
    """Abort a rollout (its flag back to the safe default where it was on): one person."""
    c = _console(request)
    who = c.require(request, Action.ROLLOUT_ABORT)
    body: FlagBody = await _body(request, FlagBody)
    _note(request, "rollout_abort", scope="flag", key=body.flag)
    reason, cleaned = _stop_reason(body.reason)
    registry = _registry(c, body.flag)
    async with c.acting(who) as link:
        driver = RolloutDriver(
            link.plane, registry, c.clock, link.killswitch, policy=c.settings.flag_policy
        )
        await driver.start()
        try:  # the driver listens on the person's long-lived connection: it stops with this
            try:
                state = await driver.abort(body.flag, reason)
            except RolloutError as exc:
                raise Refusal(409, str(exc)) from None
            off = await _switched_off(driver, state, c.settings.kill_timeout_s)
        finally:
            await driver.stop()
    not_done = [e.detail for e in failed_actions(state)]
    line = f"rollout {state.rollout_id}: {state.status}" + "".join(
        f"; not done: {detail}" for detail in not_done
    )
    if off.missing:
        line += f"; {off.text('those nodes may still be on the new path')}"
    ok = not off.missing and not not_done  # "aborted" alone read as if the nodes were off
    request.state.result = "ok" if ok else "unconfirmed"
    request.state.detail = line
    return JSONResponse(
        {"detail": line, "ok": ok, "rollout_id": state.rollout_id, "status": state.status,
         "exposed": list(state.exposed),
         "confirmed": [n for n in state.exposed if n not in off.missing],
         "missing": off.missing, "not_done": not_done, "reason_cleaned": cleaned}
    )  # fmt: skip


async def _switched_off(driver: RolloutDriver, state: RolloutState, wait_s: float) -> Confirmations:
    """The exposed nodes that have not confirmed an abort's switch-off within `wait_s`, as
    `rollout abort` reports them: the abort went out already, so a control plane lost now
    names every exposed node unconfirmed rather than hiding the abort's answer."""
    try:
        return await driver.switched_off(state, wait_s)
    except ControlPlaneUnavailable as exc:
        return Confirmations(0, dict.fromkeys(state.exposed, f"its confirmation could not be "
                                              f"read ({exc})"))  # fmt: skip


@handled
async def api_ack(request: Request) -> Response:
    c = _console(request)
    who = c.require(request, Action.ACK_ALERT)
    body: AckBody = await _body(request, AckBody)
    try:
        parse_slot(body.slot)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(422, "slot: not a halt's slot (SCOPE.KEY, as the alerts list it)") from None
    if not 0 < body.revision < 2**63:
        raise Refusal(422, f"revision: must be a stored revision, 1..2**63-1 (got {body.revision})")
    note = _reason(body.note, "note")
    request.state.action = "ack_alert"
    request.state.scope = body.slot
    request.state.key = str(body.revision)
    request.state.detail = note
    request.state.params = params_hash({"slot": body.slot, "revision": body.revision})
    # an alert the fleet shows now, never one to come: an ack of a revision not yet written
    # (the next is easy to guess) marked the automatic halt that later landed there as
    # handled, and the alerts panel never showed it red
    snap = await c.fresh_snapshot()
    if not any(
        h.slot == body.slot and h.revision == body.revision and h.source != "operator"
        for h in snap.halts
    ):
        raise Refusal(
            404,
            f"slot: no automatic halt of {body.slot} at revision {body.revision} now "
            "(as the alerts list them): nothing to acknowledge",
        )
    c.acks[(body.slot, body.revision)] = {"by": who.name, "at_ns": c.clock.time_ns(), "note": note}
    while len(c.acks) > MAX_ACKS:  # the oldest go first (dicts keep insertion order)
        del c.acks[next(iter(c.acks))]
    return JSONResponse({"acknowledged": [body.slot, body.revision], "by": who.name})


@handled
async def api_acks(request: Request) -> Response:
    """The acknowledgements, which the page polls every 5 s on its own: that poll restarted
    the session's idle clock, so a page left open never idled out (as the stream must not)."""
    c = _console(request)
    c.require(request, Action.VIEW, touch=False)
    request.state.action = "acks"
    return JSONResponse([{"slot": s, "revision": r, **v} for (s, r), v in c.acks.items()])


def _query(request: Request) -> Query:
    q = request.query_params

    def num(name: str) -> int:
        text = q.get(name, "")
        if not text:
            return 0
        # isdigit() alone lets '²' and other Unicode digits through to int(): a 500
        # past 4300 digits int() raises (a 500); no count or time here needs 20
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            what = "a count" if name == "limit" else "nanoseconds since the epoch"
            raise Refusal(422, f"{name}: {what}, digits 0-9 only, at most 19")
        return int(text)

    limit = num("limit") or 200
    return Query(
        actor=q.get("actor", ""),
        action=q.get("action", ""),
        scope=q.get("scope", ""),
        since_ns=num("since_ns"),
        until_ns=num("until_ns"),
        limit=min(limit, 10_000),
    )


@handled
async def api_audit(request: Request) -> Response:
    c = _console(request)
    c.require(request, Action.VIEW)
    request.state.action = "audit_search"
    query = _query(request)
    await c.audit.settled()  # every request answered before this one is in the file
    found = await asyncio.to_thread(search, c.settings.audit, query)
    return Response(
        msgspec.json.encode(
            {
                "intact": found.intact,
                "problem": found.problem,
                "chain_head": found.head,
                "records": [{"seq": r.seq, "ts": r.ts, **r.data} for r in found.records],
            }
        ),
        media_type="application/json",
    )


@handled
async def api_export(request: Request) -> Response:
    c = _console(request)
    c.require(request, Action.VIEW)
    request.state.action = "audit_export"
    query = _query(request)
    await c.audit.settled()
    lines = await asyncio.to_thread(lambda: list(export_lines(c.settings.audit, query)))
    return Response(
        b"".join(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="console-audit.ndjson"'},
    )


@handled
async def api_why(request: Request) -> Response:
    c = _console(request)
    c.require(request, Action.VIEW)
    order_id = request.path_params["order_id"]
    request.state.action = "why"
    request.state.key = order_id[:64]
    files = sorted(c.settings.recorders.glob("*.jsonl")) if c.settings.recorders.is_dir() else []
    for path in files:
        try:
            exp = await asyncio.to_thread(explain_order, path, order_id)
        except OrderNotFound:
            continue
        except OSError as exc:
            log.warning("why: %s unreadable: %s", path, exc)
            continue
        return Response(
            msgspec.json.encode({"file": path.name, "explanation": exp}),
            media_type="application/json",
        )
    raise Refusal(404, f"order {order_id!r}: in no flight recorder under {c.settings.recorders}")


async def api_events(request: Request) -> Response:
    """Server-sent events: the snapshot now, then each change, every confirmation, and a
    heartbeat every beat; the page turns STALE after three missed beats.

    The stream outlives the request that opened it, so it judges its credential again
    every `RECHECK_S` (without restarting a session's idle clock): a logout, a disable, a
    password change, an expired session or a revoked token ends it with an `ended` event
    within that, instead of streaming the fleet to someone no longer let in.

    A reader `STREAM_QUEUE` events behind is never skipped silently (its page went on
    showing a fleet it did not know was old): the stream ends with a `gap` event naming
    how many it missed, and the page opens a new one, whose first event is the snapshot."""
    c = _console(request)
    try:
        who = c.require(request, Action.VIEW)
    except Refusal as exc:
        request.state.result, request.state.detail = exc.result, exc.message
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    request.state.action = "stream"
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=STREAM_QUEUE)
    dropped = [0]  # events this stream's reader missed: once one is, the stream is over

    def listener(event: str, data: bytes) -> None:
        if dropped[0]:
            dropped[0] += 1
            return
        try:
            queue.put_nowait((event, data))
        except asyncio.QueueFull:
            dropped[0] = 1
            c.stream_gaps += 1
            log.warning(
                "event stream of %s (%s) fell %d events behind: ends with a gap event",
                who.name, who.via, STREAM_QUEUE,
            )  # fmt: skip

    forget = c.watch.listen(listener)

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            yield b"retry: 1000\n\n"
            if c.watch.latest is not None:  # none built yet (the first read failed): no "{}"
                yield b"event: snapshot\ndata: " + c.watch.latest_json + b"\n\n"
            if c.watch.error:  # what it got is the last good one, not the fleet now: say so
                problem = msgspec.json.encode({"error": c.watch.error})
                yield b"event: problem\ndata: " + problem + b"\n\n"
            beat = c.settings.heartbeat_s
            opened = loop.time()
            next_beat, next_check = opened + beat, opened + RECHECK_S
            while not c.closing.is_set():
                now = loop.time()
                if now >= next_check:
                    ended = c.viewing(request, who)
                    if ended:
                        log.info("event stream of %s (%s) ended: %s", who.name, who.via, ended)
                        reason = msgspec.json.encode({"reason": ended})
                        yield b"event: ended\ndata: " + reason + b"\n\n"
                        return
                    next_check = now + RECHECK_S
                if dropped[0]:
                    gap = {"dropped": dropped[0], "reason": GAP_REASON}
                    yield b"event: gap\ndata: " + msgspec.json.encode(gap) + b"\n\n"
                    return
                try:
                    timeout = max(0.0, min(next_beat, next_check) - now)
                    event, data = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    if loop.time() < next_beat:
                        continue  # time to check the credential, not to beat
                    event, data = "beat", msgspec.json.encode({"at_ns": c.clock.time_ns()})
                if dropped[0]:
                    continue  # what is queued is older than what was missed: the gap first
                next_beat = loop.time() + beat  # any event is a beat to the page
                yield f"id: {c.watch.event_id}\nevent: {event}\ndata: ".encode() + data + b"\n\n"
        finally:
            forget()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ---------------------------------------------------------------- middleware


class Recorded:
    """Security headers on every answer, and every request recorded after it is answered."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        status = [0]

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
                if scope["path"] == "/api/events":
                    self._record(scope, state, status[0])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            if scope["path"] != "/api/events":
                self._record(scope, state, status[0])

    def _record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        console = self.console
        headers = dict(scope.get("headers", []))
        client = scope.get("client")
        # status 0: no answer was started (the handler failed, or the client left first)
        result = state.get("result") or (
            "error" if status == 0 else "ok" if status < 400 else "refused"
        )
        detail = str(state.get("detail", state.get("audit_extra", {}).get("detail", "")))
        unchecked = str(state.get("unchecked", ""))
        if unchecked:  # first: the detail is cut to 1000 characters
            detail = f"{UNCHECKED}; {detail}"
        try:
            console.audit.record(
                actor=str(state.get("actor", "")) or "-",
                via=str(state.get("via", "")),
                roles=str(state.get("roles", "")),
                token=str(state.get("token_id", "")),
                ip=client[0] if client else "-",
                agent=headers.get(b"user-agent", b"").decode("latin-1")[:200],
                method=scope["method"],
                path=scope["path"][:200],
                action=str(state.get("action", "")) or scope["path"][:80],
                scope=str(state.get("scope", "")),
                key=str(state.get("key", "")),
                params=str(state.get("params", "")),
                status=status,
                result=str(result),
                detail=detail[:1000],
                unchecked=unchecked,
            )
        except Exception:  # the record must never take the answer (or a kill) down with it
            log.exception("console audit record failed")


def build_app(console: Console) -> Starlette:
    static = Path(__file__).parent / "static"

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.start()
        try:
            yield
        finally:
            await console.stop()

    routes = [
        Route("/", _page("fleet")),
        Route("/audit", _page("audit")),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/whoami", api_whoami),
        Route("/api/snapshot", api_snapshot),
        Route("/api/events", api_events),
        Route("/api/kill", api_kill, methods=["POST"]),
        Route("/api/resume/request", api_request_resume, methods=["POST"]),
        Route("/api/resume/approve", api_approve, methods=["POST"]),
        Route("/api/flags/safe-default", api_safe_default, methods=["POST"]),
        Route("/api/rollouts/abort", api_rollout_abort, methods=["POST"]),
        Route("/api/alerts/ack", api_ack, methods=["POST"]),
        Route("/api/alerts/acks", api_acks),
        Route("/api/audit", api_audit),
        Route("/api/audit/export", api_export),
        Route("/api/why/{order_id}", api_why),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    app.add_middleware(Recorded, console=console)
    return app
