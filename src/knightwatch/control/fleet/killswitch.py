"""The kill switch: one command stops a scope fleet-wide and proves every node stopped.

A kill goes out twice: announced on the fast path first (every node blocks in
about a millisecond, no consensus round in the way, still works while a
clustered store elects a leader), then written to the store of record, retried
until acknowledged, so late joiners, restarted nodes and restarted servers see
it. A kill targets every member known to the fleet (every membership record
not marked as left, plus every node heard from directly), not only the nodes
whose lease is live at that instant: a node that froze or died a moment
before is exactly the one to name. The command returns when every target has
confirmed, naming each node's latency, or names each that did not, with its
lease: expired (the node stopped trading by itself at that time) or still live
(it may be trading). Either way the command is not `ok`. A confirmation counts
only if it is of the command: its scope and key, and for a kill a state at least
as strict (a node echoing the command id while it reports ACTIVE is not
stopped). A membership that cannot be read, before the wait and after it, leaves
the members never heard from unawaited: the command is not `ok` then either.
A kill that no node in its scope received (a node kill naming no member, a typo
for the runaway's id; a fleet with no members, perhaps the wrong control plane)
is stored all the same (a node that joins holds it) but says so
(`reached_none`, naming the live nodes), and a node kill naming no member
answers at once: nothing holding a lease can confirm it.

A kill never waits on a control plane it cannot reach. When this process's
connection has been down for `RECONNECT_GRACE_S` (a cluster member's loss is a
reconnect to another member in milliseconds; a control plane that stays away
that long is down, or cut off from here), the kill stops waiting and says so at
once: `unreachable` names why, and a kill that never left this process
(`sent` false) is reported as not sent, not as unconfirmed. The person must
learn that in an instant, to take the runbook's fallback, instead of after the
store write's 15 s of retries, which are for a store that is reachable but
electing a leader. Nothing is handed to the client while it is disconnected:
nats-py would queue a store write and send it whenever the connection came
back, long after the kill was reported as not sent.

A resume is the opposite: store first, with compare-and-swap against the entry
the operator saw, so two people cannot undo each other's decisions unseen.

Every command is signed by the switch's signer (who acted is whoever signed;
there is no free-text actor). A kill needs one operator or the supervisor; a
resume is a request signed by its operator that, when the roster's approval
policy says so, counts only once a second person with the approver role has
signed it too (`Requests` keeps it pending meanwhile). Entries read back from
the store are verified before the switch decides anything on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import msgspec

from knightwatch.clock import Clock
from knightwatch.control.plane.history import ResumeProofs
from knightwatch.control.plane.protocol import (
    ControlPlane,
    ControlPlaneUnavailable,
    RevisionConflict,
)
from knightwatch.control.plane.wire import (
    FLEET_KEY,
    Confirmation,
    NodeStatus,
    StateEntry,
    StateKeyError,
    slot_of,
)
from knightwatch.errors import KnightwatchError
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import SKEW_NS, Checked, Refused, check_state, ramp_problem
from knightwatch.trust.identity import Signer
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)

_DURABLE_RETRY_S = 0.1
_REANNOUNCE_S = 0.1
_REHALT_TIMEOUT_S = 15.0
STORED_MAX = 1024
"""How many slots' last writes a switch remembers (its compare-and-swap shortcut): the
oldest is forgotten first, so a switch that runs for months, halting symbol after symbol
and strategy after strategy, holds no more than this; a forgotten slot is read again."""
RECONNECT_GRACE_S = 0.5
"""How long a kill waits for a lost connection to come back before it answers that the
control plane is out of reach (a reconnect to another cluster member takes milliseconds)."""
KILL_TTL_S = 60.0
"""How long a kill stays valid as news (re-announcements, the store write's retries)."""
REQUEST_TTL_S = 900.0
"""How long a resume request waits for its approver before it expires."""
REASON_MAX_CHARS = 4096
"""The longest reason a command carries. An entry holds its reason twice (as a field and in
its signed envelope, base64) and must fit one NATS message (1 MiB by default): a longer one
was neither announced nor stored, and the kill reported sent after its 15 s of retries. A
kill's longer reason goes out cut to this (a stop is never refused for its text); a
resume's is refused."""


RUNBOOK_FALLBACK = (
    "follow docs/runbook.md section 1.1 now: try once from another door (CLI, console, "
    "host), cancel working orders at the venue, stop node processes that may still trade, "
    "and repeat the kill as soon as the control plane answers"
)
"""What to do when a kill cannot reach the control plane (the runbook's fallback)."""


class KillSwitchError(KnightwatchError, RuntimeError):
    """A kill-switch command that cannot be carried out as asked; says why."""


def unreachable_message(urls: list[str], why: str, *, sent: bool) -> str:
    """One line for a person whose kill could not reach the control plane at `urls`: what
    did not happen, what was out of reach, and the runbook's fallback."""
    where = ", ".join(urls) or "(no URL)"
    if sent:
        what = "kill sent but NOT confirmed by any node and NOT stored"
    else:
        what = "kill NOT sent: no node received it and nothing was stored"
    return f"{what}; the control plane at {where} is unreachable ({why}); {RUNBOOK_FALLBACK}"


class CommandResult(msgspec.Struct, frozen=True):
    """What happened to one kill or resume: who confirmed, how fast, who did not, durability."""

    entry: StateEntry
    targets: list[str]
    latencies_ms: dict[str, float]
    missing: list[str]
    revision: int | None
    durable_error: str = ""
    still_working: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Per node, orders a gateway could not get cancelled at its venue before confirming."""
    leases: dict[str, int] = msgspec.field(default_factory=dict)
    """For each node in `missing`: when its lease expires or expired (wall ns; 0 = unknown)."""
    checked_ns: int = 0
    """When the leases in `leases` were judged (wall ns): before it, the lease had expired."""
    unreachable: str = ""
    """Why the control plane was out of reach when the command stopped waiting ("": it was
    not); with `sent` false, the command never left this process."""
    sent: bool = True
    """False when nothing of the command left this process: no announcement, no store write
    (the control plane was unreachable throughout). No node can have applied it."""
    members_error: str = ""
    """Why the fleet's membership could not be read, before and after the wait ("": it was
    read). `targets` then holds only the nodes heard from directly: a member never heard
    from was not awaited and may still be trading, so the command is not `ok`."""
    live: list[str] | None = None
    """The nodes holding a lease when the command finished (membership and heartbeats
    heard), or None if the membership was not read then. A node kill whose node is not
    among the members (a typo for the runaway's id) names them: the node it reached is
    no one."""

    def not_member(self, node_id: str) -> bool:
        """True if this unconfirmed node has no membership record at all while the
        membership was read: no such node has joined (it is halted if it ever does)."""
        return self.live is not None and node_id in self.missing and not self.leases.get(node_id)

    @property
    def reached_none(self) -> bool:
        """True if the command was sent with the membership read and no node in its scope:
        stored (a node that joins later holds it), yet no node confirmed anything. Not
        `ok` for a person: it cannot be told from a kill sent to the wrong control plane."""
        return (
            self.entry.state is not TradingState.ACTIVE
            and self.sent
            and not self.members_error
            and self.live is not None
            and (not self.targets or all(self.not_member(n) for n in self.targets))
        )

    @property
    def missed_its_node(self) -> bool:
        """True if a node kill named no member of the fleet (`reached_none` for a node): a
        typo for the runaway's id, never success. A fleet, strategy or symbol kill in a fleet
        with no members is stored for the nodes that join (a strategy killed before it
        starts): said, not failed."""
        return self.reached_none and self.entry.scope is Scope.NODE

    def lease_expired(self, node_id: str) -> bool:
        """True if this unconfirmed node's lease had run out when the command finished."""
        return self.leases.get(node_id, 0) < self.checked_ns

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and self.revision is not None
            and not self.still_working
            and not self.members_error
        )


def reached_no_one(result: CommandResult, verb: str = "kill") -> str:
    """One line for a kill sent and stored that no node in its scope received
    (`CommandResult.reached_none`): a node kill naming no member (a typo for the runaway's
    id: the live nodes are named so the right one is killed now), or a kill in a fleet with
    no members (the control plane may be the wrong one). Never success."""
    e = result.entry
    nodes = result.live or []
    live = ", ".join(nodes[:20]) + (f" (+{len(nodes) - 20} more)" if len(nodes) > 20 else "")
    held = "halted" if e.state is TradingState.HALTED else "reduce-only"
    if e.scope is Scope.NODE:
        return (
            f"{verb} reached no node: {e.key} is not a member of this fleet (live: "
            f"{live or 'none'}); stored: {e.key} is {held} if it joins; if you meant another node, "
            "stop it now"
        )
    return (
        f"{verb} reached no node: this fleet has no members; stored: a node "
        f"that joins is {held}; if nodes are trading, they are on another control plane "
        "(check the control plane's URL and the fleet's status)"
    )


def confirmation_problem(entry: StateEntry, c: Confirmation) -> str:
    """Why `c` does not confirm `entry` although it names its command ("": it does): another
    scope or key, or, for a kill, a state milder than the kill asks (a node reporting ACTIVE
    for a halt is not stopped, whatever command id it echoes). A resume's confirmation may
    report a stricter state: another halt of the slot is the safe side."""
    if c.scope is not entry.scope or c.key != entry.key:
        return f"it names {c.scope.value} {c.key!r}, the command {entry.scope.value} {entry.key!r}"
    if entry.state is not TradingState.ACTIVE and c.state < entry.state:
        return (
            f"it reports {TradingState(c.state).name} for a "
            f"{TradingState(entry.state).name} command: not stopped"
        )
    return ""


class _Reach:
    """Whether one command's control plane is still in reach, and whether anything was sent.

    Judged by the event loop's clock whenever the command wakes up: the connection counts
    as lost once it has been down for `grace_s` without a break."""

    def __init__(self, plane: ControlPlane, grace_s: float) -> None:
        self.plane = plane
        self.grace_s = grace_s
        self.sent = False
        self.store_error = ""
        """The store write's latest failure ("": none yet), named when it runs out of time."""
        self._down_since: float | None = None

    def lost(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self.plane.connected:
            self._down_since = None
            return False
        if self._down_since is None:
            self._down_since = now
        return now - self._down_since >= self.grace_s

    def why(self) -> str:
        return f"not connected for {self.grace_s:g} s"


class KillSwitch:
    """Issues kills and resumes on a control plane and gathers confirmations."""

    def __init__(
        self,
        plane: ControlPlane,
        clock: Clock,
        signer: Signer,
        trust: TrustStore,
        liveness_grace_s: float = 0.5,
    ) -> None:
        self.plane = plane
        self.clock = clock
        self.signer = signer
        self.actor = signer.name
        self.trust = trust
        self.grace_ns = int(liveness_grace_s * 1e9)
        self._arrivals: dict[str, dict[str, int]] = {}
        self._sent: dict[str, StateEntry] = {}
        """The command each `_arrivals` entry waits for: what a confirmation must match."""
        self._working: dict[str, dict[str, list[str]]] = {}
        self._waiting: dict[str, tuple[set[str], asyncio.Future[None]]] = {}
        self._heard: dict[str, NodeStatus] = {}
        self._started = False
        self._last_issued_ns = 0
        self._proofs = ResumeProofs(plane)
        # what this switch last stored per slot: a kill first tries compare-and-swap
        # against it, skipping a read on the path that competes with confirmations
        self._stored: dict[tuple[Scope, str], tuple[StateEntry, int]] = {}

    async def start(self) -> None:
        if self._started:
            return
        await self.plane.subscribe_confirmations(self._on_confirmation)
        await self.plane.subscribe_heartbeats(self._on_heartbeat)
        self._started = True

    async def _on_confirmation(self, c: Confirmation) -> None:
        arrivals = self._arrivals.get(c.command_id)
        sent = self._sent.get(c.command_id)
        if arrivals is not None and c.node_id not in arrivals and sent is not None:
            problem = confirmation_problem(sent, c)
            if problem:
                log.error(
                    "KILL_SWITCH_CONFIRMATION_REFUSED command=%s node=%s: %s; not counted",
                    c.command_id,
                    c.node_id,
                    problem,
                )
                return
            arrivals[c.node_id] = self.clock.monotonic_ns()
            if c.still_working:
                self._working.setdefault(c.command_id, {})[c.node_id] = list(c.still_working)
            waiting = self._waiting.get(c.command_id)
            if waiting is not None and waiting[0] <= arrivals.keys() and not waiting[1].done():
                waiting[1].set_result(None)

    async def _on_heartbeat(self, status: NodeStatus) -> None:
        self._heard[status.node_id] = status

    def _forget(self, command_id: str) -> dict[str, list[str]]:
        """End every entry this switch keeps for one command (what a confirmation must
        match, the arrivals, the waiter), however the command ended: collected, timed out,
        refused, failed or cancelled. Returns the orders its nodes reported still working.
        Without it, a resume whose store write failed left its entries for good: a console
        or supervisor running for months grew with every such command."""
        self._arrivals.pop(command_id, None)
        self._sent.pop(command_id, None)
        self._waiting.pop(command_id, None)
        return self._working.pop(command_id, {})

    def _remember(self, slot: tuple[Scope, str], entry: StateEntry, revision: int) -> None:
        """Keep what this switch stored in `slot` (the next kill's compare-and-swap
        shortcut), forgetting the oldest slot beyond `STORED_MAX`."""
        self._stored.pop(slot, None)
        self._stored[slot] = (entry, revision)
        while len(self._stored) > STORED_MAX:
            del self._stored[next(iter(self._stored))]

    async def live_nodes(self) -> list[str]:
        """Nodes holding a lease now: the membership store plus heartbeats heard directly."""
        now = self.clock.time_ns()
        known = await self.known_nodes()
        return sorted(n for n, s in known.items() if s.live(now, self.grace_ns))

    async def known_nodes(self) -> dict[str, NodeStatus]:
        """Every member of the fleet that has not left, with its latest record: the membership
        store plus heartbeats heard directly (the store may be unreadable)."""
        records, _ = await self._members()
        return {n: s for n, s in records.items() if not s.left}

    async def _members(self) -> tuple[dict[str, NodeStatus], str]:
        """Every membership record, those marked as left included, with the heartbeats heard
        directly; and why the membership store could not be read ("": it was)."""
        records: dict[str, NodeStatus] = {}
        error = ""
        if not self.plane.connected:
            # a read now would wait out its request timeout for nothing (2 s on the kill path)
            log.warning("control plane not connected; using heartbeats heard")
            error = "control plane not connected"
        else:
            try:
                records = {s.node_id: s for s in await self.plane.members()}
            except ControlPlaneUnavailable as exc:
                log.warning("membership store unreadable (%s); using heartbeats heard", exc)
                error = f"membership store unreadable ({exc})"
        for node_id, heard in self._heard.items():
            known = records.get(node_id)
            if known is None or heard.seen_ns > known.seen_ns:
                records[node_id] = heard
        return records, error

    def _entry(self, scope: Scope, key: str, state: TradingState, reason: str) -> StateEntry:
        if not reason.strip():
            raise KillSwitchError("reason: must say why (recorded with the command)")
        if len(reason) > REASON_MAX_CHARS:
            if state is TradingState.ACTIVE:
                raise KillSwitchError(
                    f"reason: must be at most {REASON_MAX_CHARS} characters (got {len(reason)})"
                )
            # a stop is never held back for its text: it goes out with the reason cut
            log.warning(
                "kill reason of %d characters cut to %d (it must fit one message)",
                len(reason),
                REASON_MAX_CHARS,
            )
            mark = f"\u2026 (cut from {len(reason)} characters)"
            reason = reason[: REASON_MAX_CHARS - len(mark)] + mark
        key = FLEET_KEY if scope is Scope.FLEET else key
        try:
            slot_of(scope, key)  # before anything is signed or sent: no slot, no command
        except StateKeyError as exc:
            raise KillSwitchError(str(exc)) from None
        # Strictly increasing per issuer: two commands in the same clock tick (a simulated
        # instant, a coarse wall clock) are still ordered as they were issued.
        self._last_issued_ns = max(self.clock.time_ns(), self._last_issued_ns + 1)
        return StateEntry(
            scope=scope,
            key=key,
            state=state,
            reason=reason,
            actor=self.actor,
            command_id=uuid.uuid4().hex,
            issued_ns=self._last_issued_ns,
            expires_ns=self._last_issued_ns + int(KILL_TTL_S * 1e9),
        )

    def verified(self, entry: StateEntry | None) -> Checked | None:
        """The signer(s) of a stored entry, or None if it does not verify (or is absent)."""
        if entry is None:
            return None
        try:
            return check_state(
                entry.command(),
                entry.proof,
                self.trust.roster,
                now_ns=self.clock.time_ns(),
                live=False,
            )
        except Refused as exc:
            log.error("kill-state entry %s for %s refused: %s", entry.command_id, entry.slot, exc)
            return None

    async def current(self, scope: Scope, key: str) -> tuple[StateEntry | None, int, bool]:
        """The stored entry of a slot, its revision, and whether it is trusted as nodes
        trust it: it verifies and, for a resume, the slot's history shows it was stored
        right over the halt it lifts (not again over a newer kill)."""
        entry, revision = await self.plane.get_state(scope, key)
        if entry is None:
            return entry, revision, False
        try:
            await self._proofs.judge(entry, revision, self.trust.roster, self.clock.time_ns())
        except Refused as exc:
            log.error("kill-state entry %s for %s refused: %s", entry.command_id, entry.slot, exc)
            return entry, revision, False
        return entry, revision, True

    async def kill(
        self,
        scope: Scope,
        key: str,
        reason: str,
        timeout_s: float = 2.0,
        state: TradingState = TradingState.HALTED,
        targets: list[str] | None = None,
        durable_timeout_s: float = 15.0,
        reconnect_grace_s: float = RECONNECT_GRACE_S,
    ) -> CommandResult:
        """Halt (or set REDUCING, for a drain) a scope and wait for the nodes to confirm.

        Confirmations are awaited for `timeout_s`; the store write keeps retrying
        for `durable_timeout_s`, long enough to outlast a cluster leader election.
        Both stop once the connection has been down for `reconnect_grace_s`: the
        result then names the control plane as `unreachable`, and `sent` says
        whether anything of the kill left this process.
        """
        if state is TradingState.ACTIVE:
            raise KillSwitchError("state: a kill sets HALTED or REDUCING; use resume for ACTIVE")
        await self.start()
        t0 = self.clock.monotonic_ns()  # signing counts: it is part of what a kill costs
        entry = self._entry(scope, key, state, reason).signed(self.signer.key)
        self._arrivals[entry.command_id] = {}
        self._sent[entry.command_id] = entry
        try:
            start = asyncio.get_running_loop().time()
            deadline = start + timeout_s
            durable_deadline = start + max(durable_timeout_s, timeout_s)
            stored_entry: list[StateEntry] = [entry]
            reach = _Reach(self.plane, reconnect_grace_s)
            # The store write is scheduled first but starts only at the next await, after
            # the announcement is queued: both leave in one socket write, announcement first.
            durable = asyncio.create_task(self._store(stored_entry, durable_deadline, reach))
            await self._announce(entry, reach)
            result = await self._collect(
                entry, t0, deadline, durable, targets, durable_deadline, reach
            )
        finally:
            self._forget(entry.command_id)
        return msgspec.structs.replace(result, entry=stored_entry[0])

    async def _announce(self, entry: StateEntry, reach: _Reach) -> None:
        """The fast path: one announcement; a failure leaves the store write to carry it."""
        try:
            await self.plane.announce_state(entry)
        except ControlPlaneUnavailable as exc:
            log.warning("kill %s: fast path failed (%s); store only", entry.command_id, exc)
            return
        reach.sent = True

    async def request_resume(
        self,
        scope: Scope,
        key: str,
        reason: str,
        ttl_s: float = REQUEST_TTL_S,
        ramp: tuple[tuple[float, float], ...] = (),
    ) -> StateEntry:
        """A resume of the halt stored now, signed by this switch's signer only.

        It names the halt it lifts and the revision it was decided on (nodes lift
        that halt by name, even one dated ahead of this clock: the resume is dated
        now, and judged fresh on its own times), carries
        `ramp` (the stages nodes hold from when they apply it: fraction of the
        limits, seconds), and expires after `ttl_s`; approvers co-sign it
        (`StateEntry.cosigned`) and `apply_resume` stores it.

        A slot whose stored entry nobody trusts (it does not verify, cannot be
        decoded, was deleted, or is a resume the slot's history does not show
        lifting its halt) counts as halted, as nodes hold it, but not every node
        by the same entry: one running since holds the kill before it, one
        started since holds its own fail-closed halt. So it is halted again
        first, by this switch's signer (a stop: one person, nothing loosened),
        and the request names that kill, which every node then holds.
        """
        problem = ramp_problem(ramp)
        if problem is not None:
            raise KillSwitchError(problem)
        entry = self._entry(scope, key, TradingState.ACTIVE, reason)
        current, revision, ok = await self.current(entry.scope, entry.key)
        if revision == 0 or (ok and current is not None and current.state is TradingState.ACTIVE):
            raise KillSwitchError(f"{scope.value} {entry.key!r}: not halted; nothing to resume")
        if not ok or current is None:
            current, revision = await self._rehalt(entry.scope, entry.key, revision)
        lifts, after = current.command_id, current.issued_ns
        # A resume supersedes exactly the entry it names (`supersedes`), whatever the clocks
        # say, and every reader lifts that halt by name. It is still dated after the halt
        # when that lies within the skew a node allows a live resume (clocks a little
        # apart), never further: a halt signed by a clock far ahead (an hour, a year) would
        # otherwise make every node refuse its resume until the clocks got there.
        issued = entry.issued_ns
        if entry.issued_ns <= after < entry.issued_ns + SKEW_NS:
            issued = after + 1
        self._last_issued_ns = max(self._last_issued_ns, issued)
        return msgspec.structs.replace(
            entry,
            issued_ns=issued,
            expires_ns=issued + int(ttl_s * 1e9),
            supersedes=lifts,
            decided_on=revision,
            ramp=ramp,
        ).signed(self.signer.key, fleet=self.trust.roster.fleet if self.trust.roster else "")

    async def _rehalt(self, scope: Scope, key: str, revision: int) -> tuple[StateEntry, int]:
        """Store a signed halt over a slot whose entry at `revision` nobody trusts."""
        halt = self._entry(
            scope,
            key,
            TradingState.HALTED,
            f"halted again before a resume: the stored entry at revision {revision} is not trusted",
        ).signed(self.signer.key)
        with contextlib.suppress(ControlPlaneUnavailable):
            await self.plane.announce_state(halt)
        box = [halt]
        stored = await self._store(box, asyncio.get_running_loop().time() + _REHALT_TIMEOUT_S)
        if isinstance(stored, str):
            raise KillSwitchError(
                f"{halt.slot}: the stored entry at revision {revision} is not trusted and "
                f"the halt that must replace it before a resume was not stored ({stored})"
            )
        log.warning(
            "KILL_SWITCH_REHALT command=%s slot=%s over=%d revision=%d actor=%s",
            box[0].command_id,
            halt.slot,
            revision,
            stored,
            self.actor,
        )
        return box[0], stored

    async def resume(
        self,
        scope: Scope,
        key: str,
        reason: str,
        timeout_s: float = 2.0,
        approvers: tuple[Signer, ...] = (),
    ) -> CommandResult:
        """Request and, with `approvers` co-signing in this process, apply a resume.

        Tests and the replay use this; people use `Requests` (request, approve)."""
        entry = await self.request_resume(scope, key, reason)
        for approver in approvers:
            entry = entry.cosigned(approver.key)
        return await self.apply_resume(entry, timeout_s=timeout_s)

    async def apply_resume(self, entry: StateEntry, timeout_s: float = 2.0) -> CommandResult:
        """Store a signed resume if it verifies (approvals included) and is not stale."""
        await self.start()
        try:
            check_state(
                entry.command(),
                entry.proof,
                self.trust.roster,
                now_ns=self.clock.time_ns(),
                live=True,
            )
        except Refused as exc:
            raise KillSwitchError(f"resume {entry.command_id[:12]} refused: {exc}") from None
        _, revision = await self.plane.get_state(entry.scope, entry.key)
        if revision != entry.decided_on:
            raise KillSwitchError(
                f"resume {entry.command_id[:12]} is stale: {entry.scope.value} {entry.key!r} "
                f"changed since it was decided on (revision {entry.decided_on}, now {revision}); "
                "request a new one"
            )
        t0 = self.clock.monotonic_ns()
        deadline = asyncio.get_running_loop().time() + timeout_s
        self._arrivals[entry.command_id] = {}
        self._sent[entry.command_id] = entry
        try:
            try:
                stored = await self.plane.put_state(entry, expected_revision=revision)
            except RevisionConflict:
                raise KillSwitchError(
                    f"resume {entry.command_id[:12]} is stale: {entry.scope.value} "
                    f"{entry.key!r} changed while it was being applied; request a new one"
                ) from None
            self._remember((entry.scope, entry.key), entry, stored)
            with contextlib.suppress(ControlPlaneUnavailable):
                await self.plane.announce_state(entry)
            done: asyncio.Future[int | str] = asyncio.get_running_loop().create_future()
            done.set_result(stored)
            return await self._collect(entry, t0, deadline, done, None, deadline)
        finally:
            self._forget(entry.command_id)

    async def _store(
        self, box: list[StateEntry], deadline: float, reach: _Reach | None = None
    ) -> int | str:
        """Write to the store of record, retrying through outages and elections until deadline.

        The stored kill must order after whatever the slot holds, or nodes would keep
        the older entry: an issuer whose wall clock lags the last writer's would be
        ignored. So it reads the slot and bumps `issued_ns` past it (same command id,
        so confirmations still match), with compare-and-swap against that read.

        Nothing is tried while the connection is down: nats-py would queue the write and
        send it when the connection returns, whatever the command has reported by then.
        `reach` learns that the kill was sent once a write leaves.
        """
        last = "no attempt"
        slot = (box[0].scope, box[0].key)
        known = self._stored.pop(slot, None)
        while True:
            entry = box[0]
            if not self.plane.connected:
                last = "control plane not connected"
                if asyncio.get_running_loop().time() >= deadline:
                    return last
                await asyncio.sleep(_DURABLE_RETRY_S)
                continue
            try:
                current: StateEntry | None
                if known is not None and not known[0].state > entry.state:
                    # Optimistic: if the slot still holds what this switch wrote, the CAS
                    # succeeds and proves nobody wrote since; our issued_ns is already later.
                    # Only a write proves it: a remembered stricter kill is read again
                    # below (a resume may have lifted it since, through another switch;
                    # taken on trust, the kill was never stored and reported a stale revision).
                    current, revision = known
                    known = None
                else:
                    known = None
                    current, revision = await self.plane.get_state(entry.scope, entry.key)
                    if current is not None and not await self._holds(entry, current, revision):
                        # A forged or undecodable entry (or, to a drain, a resume the
                        # slot's history does not show lifting its halt) orders nothing,
                        # but every node holds it as a halt (fail closed): a kill
                        # overwrites it with a signed one; a drain written over it
                        # loosened that halt to REDUCING on one signature, so the halt
                        # it reads as stays.
                        current = (
                            None
                            if entry.state is TradingState.HALTED
                            else msgspec.structs.replace(current, state=TradingState.HALTED)
                        )
                if current is not None and current.state > entry.state:
                    # A stricter kill is stored (a halt, when this is a drain): it stays in
                    # force and stays the record, whenever it was issued. A drain stored
                    # over a halt loosened it to REDUCING on one signature; loosening is
                    # a resume's, and a resume takes two people. Nodes hold it the same way.
                    if reach is not None:
                        reach.sent = True  # the store answered: in force, and stored
                    return revision
                if current is not None and current.issued_ns >= entry.issued_ns:
                    issued = current.issued_ns + 1
                    entry = msgspec.structs.replace(
                        entry, issued_ns=issued, expires_ns=issued + int(KILL_TTL_S * 1e9)
                    ).signed(self.signer.key)
                    self._last_issued_ns = max(self._last_issued_ns, entry.issued_ns)
                    box[0] = entry
                if reach is not None:
                    reach.sent = True
                stored = await self.plane.put_state(entry, expected_revision=revision)
                self._remember(slot, entry, stored)
                return stored
            except RevisionConflict as exc:
                last = str(exc)  # somebody wrote the slot since the read: read again at once
                if reach is not None:
                    reach.store_error = last
                if asyncio.get_running_loop().time() >= deadline:
                    return last
                continue
            except ControlPlaneUnavailable as exc:
                last = str(exc)
                if reach is not None:
                    reach.store_error = last
            if asyncio.get_running_loop().time() >= deadline:
                return last
            await asyncio.sleep(_DURABLE_RETRY_S)

    async def _holds(self, entry: StateEntry, current: StateEntry, revision: int) -> bool:
        """Whether nodes hold `current`, the slot's entry at `revision`, as it reads, for the
        write of `entry` to be judged against it. A kill replaces whatever is stored: the
        signatures decide (no extra read on its path). A drain must not loosen what nodes
        hold, so a resume must also be one the slot's history shows stored right over the
        halt it lifts: one put back over a newer kill verifies, yet every node holds the
        slot halted. Raises `ControlPlaneUnavailable` when the history cannot be read."""
        if self.verified(current) is None:
            return False
        if entry.state is TradingState.HALTED or current.state is not TradingState.ACTIVE:
            return True
        refused = await self._proofs.check(current, revision)
        if refused is not None:
            log.error(
                "kill-state entry %s for %s refused: %s; held as a halt",
                current.command_id,
                current.slot,
                refused,
            )
            return False
        return True

    async def _collect(
        self,
        entry: StateEntry,
        t0: int,
        deadline: float,
        durable: asyncio.Future[int | str],
        targets: list[str] | None,
        durable_deadline: float,
        reach: _Reach | None = None,
    ) -> CommandResult:
        """Wait for confirmations, then for the store; with `reach`, for neither once the
        connection has been lost (the store write is then cancelled: it must not leave
        after the command has reported it unsent or not durable).

        Waiting uses the event loop's timers (a real wait for real messages);
        latencies use the injected clock, so a replay reports simulated time.
        """
        loop = asyncio.get_running_loop()
        arrivals = self._arrivals[entry.command_id]
        known: dict[str, NodeStatus] = {}
        members_error = ""
        read = False  # whether `known` holds the membership as read (not only heartbeats)
        absent = False  # a node kill's node is no member: nothing to wait for
        lost = False
        try:
            if targets is None:
                known, members_error = await self._members()
                read = not members_error
                if entry.scope is Scope.NODE:
                    targets, members_error = [entry.key], ""  # its one target is named
                    # a node no membership record names and never heard from holds no
                    # lease, so trades nothing and confirms nothing: the answer (a typo for
                    # the runaway's id?) is due now, not after the whole wait; stored, it
                    # halts that node if it joins
                    absent = read and entry.key not in known
                else:
                    targets = sorted(n for n, s in known.items() if not s.left)
            wanted = set(targets)
            next_announce = loop.time() + _REANNOUNCE_S
            # one wake-up when the last target confirms (not one per confirmation)
            everyone: asyncio.Future[None] = loop.create_future()
            self._waiting[entry.command_id] = (wanted, everyone)
            while not absent and not wanted <= arrivals.keys():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if reach is not None and reach.lost():
                    lost = True  # nothing can arrive on a connection that is down
                    break
                if loop.time() >= next_announce:
                    # Nodes that were reconnecting when the first announcement went out.
                    if reach is not None:
                        await self._announce(entry, reach)
                    else:
                        with contextlib.suppress(ControlPlaneUnavailable):
                            await self.plane.announce_state(entry)
                    next_announce = loop.time() + _REANNOUNCE_S
                await asyncio.wait((everyone,), timeout=min(remaining, next_announce - loop.time()))
            stored: int | str
            until = max(durable_deadline, loop.time() + 0.05)
            while not durable.done():
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                if reach is not None and reach.lost():
                    lost = True
                    break
                # wakes up to judge the connection; the store write goes on meanwhile
                await asyncio.wait((durable,), timeout=min(remaining, _REANNOUNCE_S))
            if durable.done():
                stored = durable.result()
            elif lost and reach is not None:
                durable.cancel()
                stored = f"control plane unreachable: {reach.why()}"
            else:
                # the write is still being retried: name its latest failure, which the
                # person must act on (a lost bucket is not a slow leader election)
                stored = "store did not acknowledge in time"
                if reach is not None and reach.store_error:
                    stored += f" (last answer: {reach.store_error})"
        finally:
            working = self._forget(entry.command_id)
        sent = reach is None or reach.sent
        if not sent:
            known = {}  # heartbeats heard before the outage say nothing of the leases now
        elif members_error or wanted - arrivals.keys():
            # the freshest leases of those that did not answer (a node that left says when
            # its lease ended: it was unknown, and its halt was retried for as long as it was
            # gone); and, if the membership could not be read before the wait, the members it
            # names now, which were not awaited
            with contextlib.suppress(ControlPlaneUnavailable):
                known, error = await self._members()
                read = not error
                if members_error and not error:
                    wanted |= {n for n, s in known.items() if not s.left}
                    members_error = ""
        latencies = {n: (t - t0) / 1e6 for n, t in sorted(arrivals.items()) if n in wanted}
        missing = sorted(wanted - arrivals.keys())
        now = self.clock.time_ns()
        live = (
            sorted(n for n, s in known.items() if s.live(now, self.grace_ns))
            if sent and read
            else None
        )
        result = CommandResult(
            entry=entry,
            targets=sorted(wanted),
            latencies_ms=latencies,
            missing=missing,
            revision=stored if isinstance(stored, int) else None,
            durable_error="" if isinstance(stored, int) else stored,
            leases={n: known[n].lease_expires_ns if n in known else 0 for n in missing},
            checked_ns=now,
            still_working={n: w for n, w in sorted(working.items()) if n in wanted},
            unreachable=reach.why() if lost and reach is not None else "",
            sent=sent,
            members_error=members_error,
            live=live,
        )
        log.warning(
            "KILL_SWITCH command=%s scope=%s key=%s state=%s actor=%s reason=%r confirmed=%d/%d "
            "missing=%s revision=%s sent=%s members=%s",
            entry.command_id,
            entry.scope.value,
            entry.key,
            TradingState(entry.state).name,
            entry.actor,
            entry.reason,
            len(latencies),
            len(wanted),
            ",".join(missing) or "-",
            result.revision,
            "yes" if sent else "NO (control plane unreachable)",
            members_error or "read",
        )
        return result
