"""One node as a process: a Guard, its flight recorder, lease, kill state, flags and metrics.

`serve_node` is what `knightwatch node` runs in production; it trades nothing
by itself. Whatever emits orders in the process (a strategy, the gateway, the
drill's synthetic flow) is passed in as `trader` and runs once the node is
admitted and armed, until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.registry import Collector

from knightwatch.audit.errors import ChainCorrupt, RecorderLocked
from knightwatch.audit.log import NotARegularFile
from knightwatch.audit.read import AcceptedIds, UnreadableRecord
from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.standing import ForeignRecord, Standing, held_read_back
from knightwatch.clock import Clock, SystemClock, to_ns
from knightwatch.control.exposition import MetricsServer, serve_node_metrics
from knightwatch.control.fleet.freeze import FrozenByKill, refuse_raised_limits
from knightwatch.control.node.attestor import Attestor
from knightwatch.control.node.checkpoints import DEFAULT_CHECKPOINT_S, Checkpointer
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import Drain, NodeRuntime, stop_task
from knightwatch.control.node.shipping import ShippingSink
from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.connect import FleetError, control_plane
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import StateEntry
from knightwatch.errors import quoted
from knightwatch.guard import Guard
from knightwatch.guard.locked import LockedGuard
from knightwatch.inputs import UNDECODABLE
from knightwatch.limits import Limits, LimitsError
from knightwatch.release.signing import TrustPolicy
from knightwatch.state import Scope, TradingState, scope_key
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)


Trader = Callable[[NodeRuntime, asyncio.Event], Coroutine[Any, Any, None]]
"""Runs the node's order flow once it is armed, until the event (a stop signal) is set."""

Prepare = Callable[[NodeRuntime, asyncio.Event], Coroutine[Any, Any, None]]
"""Runs once the node is admitted and before it arms (a gateway reconciling its venue's
working orders); raising refuses to arm. It installs `runtime.drain` if the process holds
orders outside itself; a kill held before that is drained once `prepare` has run, and so is
every other scope the Guard holds halted then (`drain_held`: restored from the recorder)."""


class DrainOnceReady:
    """The drain of a node with a `prepare`, from its start until `prepare` has run.

    A kill restored from the store at start is applied by `runtime.start()`, and one heard
    while the node waits to be admitted or early in `prepare` arrives too, all before the
    host installs its drain in `prepare`: before, the runtime confirmed them with nothing
    drained (`still_working` empty) and no drain ever ran for them, so the orders the
    process went on to hold (adopted from its venue) kept working. Installed as
    `runtime.drain` before the start, it makes the runtime treat such a kill as one to
    drain: the Guard's halt is applied at once as for any kill; only the drain (and the
    kill's confirmation, which waits for it) waits until `prepare` has run or failed, then
    is the drain the host installed, or nothing if it installed none. A kill heard once
    the host's drain is in place goes to it directly. A node stopped before that (never
    admitted) confirms none of them: it could not say what its venue still has working."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self._ready = asyncio.Event()
        self.handed: set[tuple[Scope, str]] = set()
        """The scopes of the kills the runtime handed here to drain (`drain_held`)."""

    def install(self) -> None:
        self.runtime.drain = self

    async def __call__(self, entry: StateEntry) -> list[str]:
        self.handed.add((entry.scope, scope_key(entry.scope, entry.key)))
        await self._ready.wait()
        drain: Drain | None = self.runtime.drain
        if drain is None or drain is self:
            return []  # the host has no orders outside the process
        held = self.runtime.held(entry.scope, entry.key)
        if held is None or held.command_id != entry.command_id:
            return []  # resumed, or overtaken by another command (drained on its own)
        return await drain(entry)

    def settle(self) -> None:
        """`prepare` has run (or will not): hand every waiting kill to the host's drain."""
        if self.runtime.drain is self:
            self.runtime.drain = None
        self._ready.set()


async def drain_held(runtime: NodeRuntime, handed: set[tuple[Scope, str]]) -> None:
    """Drain every scope the Guard holds halted (or reducing) that no kill drains: once
    `prepare` has installed the host's drain, before the node arms.

    The runtime drains each kill it applies (`DrainOnceReady` those it applied before the
    drain was there: `handed`). A halt restored from the node's own flight recorder
    (`NodeRuntime._restore`: the store had lost it) is latched in the Guard and nothing
    else: before, no drain ever ran for it, and the orders the process held at its venue
    from before the crash (adopted by `prepare`) kept working under a kill. A node cannot
    store a fleet kill again at all (`LOST_HALT_UNSTORABLE`), so not even its echo from
    the store drained one. Each such scope is drained as the kill it was when the node
    holds one (a kill's record names its command), else as the latch it holds (a loss
    stop, a halt that could not be read: the node's own). What is left working is logged
    and recorded (`held_drain`); the Guard blocks the scope either way."""
    drain = runtime.drain
    if drain is None:
        return  # no orders outside the process
    entries: list[StateEntry] = []
    for (scope, key), halt in runtime.guard.halts().items():
        if (scope, key) in handed:
            continue
        held = runtime.held(scope, key)
        if held is None or held.state is TradingState.ACTIVE:
            held = StateEntry(
                scope=scope,
                key=key,
                state=halt.state,
                reason=halt.reason,
                actor=halt.actor,
                command_id=f"held-at-start:{scope.value}:{key}",
                issued_ns=halt.ts_ns,
            )
        entries.append(held)
    results = await asyncio.gather(*(drain(e) for e in entries), return_exceptions=True)
    for entry, result in zip(entries, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # cancelled: the node is stopping
            left = [f"unknown: drain failed ({result!r})"[:200]]
        else:
            left = result
        level = logging.ERROR if left else logging.WARNING
        log.log(
            level,
            "HELD_DRAIN node=%s scope=%s key=%s command=%s still_working=%d%s",
            runtime.node_id,
            entry.scope.value,
            entry.key,
            entry.command_id,
            len(left),
            f" ({', '.join(left)[:300]})" if left else "",
        )
        try:
            runtime.guard.note(  # the Guard's own call: under its lock, if it has one
                "held_drain",
                scope=entry.scope.value,
                key=entry.key,
                command=entry.command_id,
                still_working=len(left),
                orders=", ".join(left)[:1000],
            )
        except Exception:  # the log line above says it; the Guard blocks the scope anyway
            log.exception("node %s: held_drain not recorded", runtime.node_id)


def load_limits(path: Path | None, policy: LeasePolicy) -> Limits:
    """The limits file, with the lease timeout set to the node's (a conflicting one is an error)."""
    limits = Limits.from_toml(path) if path is not None else Limits()
    if limits.lease_timeout_s is None:
        return msgspec.structs.replace(limits, lease_timeout_s=policy.lease_timeout_s)
    if abs(limits.lease_timeout_s - policy.lease_timeout_s) > 1e-9:
        raise FleetError(
            f"lease_timeout_s: the limits file sets {limits.lease_timeout_s:g} but the node runs "
            f"with --lease-timeout {policy.lease_timeout_s:g}; make them agree"
        )
    return limits


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM/SIGINT while the block runs, so every wait inside can end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def wait_for_signal() -> None:
    with stop_requested() as stop:
        await stop.wait()


async def first_of(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for `wanted` unless `stop` comes first; True if `wanted` was set."""
    waits = [asyncio.create_task(wanted.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return wanted.is_set() and not stop.is_set()


async def check_node_key(
    plane: ControlPlane, node_id: str, signer: Signer, anchor: TrustPolicy, now_ns: int
) -> None:
    """Refuse (`FleetError` naming `--key`) a key that is not `node_id`'s own valid node key
    on the roster, before the node joins. The server lets any enrolled key log in, with its
    owner's permissions: `node --id n1 --key alice.key` (or n2's key) joined, was refused
    every write as n1, and ended 9 s later with "control plane did not answer: nats:
    timeout", which sends an operator to look for a dead server."""
    store = TrustStore(anchor)
    await sync_roster(plane, store)
    roster, version = store.roster, store.version
    member = roster.member(signer.key.key_id) if roster is not None else None
    if member is None:
        raise FleetError(
            f"--key: key {signer.key.key_id[:16]} is not on the roster (version {version}); "
            f"enrol it as node {quoted(node_id)} first (`knightwatch identity add`)"
        )
    if member.name != node_id or Role.NODE not in member.roles:
        raise FleetError(
            f"--key: the roster (version {version}) holds this key for {quoted(member.name)}, "
            f"not for node {quoted(node_id)}; give the node its own enrolled key"
        )
    if not member.valid_at(now_ns):
        raise FleetError(
            f"--key: key {signer.key.key_id[:16]} of node {quoted(node_id)} is revoked or "
            f"rotated out (roster version {version}); use the key the roster holds now"
        )


def default_recorder_path(state_dir: Path, node_id: str) -> Path:
    """Where a node keeps its flight recorder when not told: every node has a durable one
    on its own disk, whatever happens to shipping to the fleet stream."""
    return state_dir / "audit" / f"{node_id}.jsonl"


async def serve_node(
    node_id: str,
    urls: list[str],
    state_dir: Path,
    *,
    signer: Signer,
    anchor: TrustPolicy,
    limits_path: Path | None,
    policy: LeasePolicy,
    trader: Trader | None = None,
    recorder_path: Path | None = None,
    metrics_s: float = 0.5,
    replicas: int = 1,
    clock: Clock | None = None,
    attestor: Attestor | None = None,
    attest_s: float = 5.0,
    metrics_port: int | None = None,
    checkpoint_s: float = DEFAULT_CHECKPOINT_S,
    guard_class: type[Guard] = Guard,
    prepare: Prepare | None = None,
    collectors: Sequence[Collector] = (),
) -> None:
    """Run one node until SIGTERM/SIGINT: Guard, lease, kill state, metrics, then `trader`.

    `guard_class` is `LockedGuard` for a process that calls the Guard from several
    threads; `prepare` runs after admission and before arming.

    `signer` is the node's enrolled key (its NATS login, the signature on its
    automatic halts and attestations); `anchor` pins the roster's first admins.

    With an attestor the node arms only once admitted on the fleet's target
    release, and keeps its flag state in sync (confirming each revision). With
    `metrics_port` (0 = any free port) it serves Prometheus metrics on 127.0.0.1, with
    `collectors` (what the process adds, such as a gateway's own counters) beside them.
    With the same key it signs its flight recorder's head every `checkpoint_s` and
    when it stops (`Checkpointer`).
    """
    clock = clock or SystemClock()
    limits = load_limits(limits_path, policy)
    path = recorder_path if recorder_path is not None else default_recorder_path(state_dir, node_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetError(f"--recorder: cannot open {path} ({exc.strerror or exc})") from None
    shipper = ShippingSink()
    try:
        recorder = FlightRecorder(path, clock=clock, sink=shipper)
    except RecorderLocked:
        raise FleetError(
            f"--recorder: {path} is held by another running node (one recorder per file); "
            "stop it or give this node its own --recorder"
        ) from None
    except ChainCorrupt as exc:  # it names the line (any seal, or bytes no crash leaves)
        raise FleetError(f"--recorder: {exc}") from None
    except NotARegularFile as exc:
        raise FleetError(f"--recorder: {exc}") from None
    except OSError as exc:
        raise FleetError(f"--recorder: cannot open {path} ({exc.strerror or exc})") from None
    # read once the recorder holds the file (a regular one), up to where its data ended,
    # through the recorder's own descriptor (the path may name another file by now): the
    # standing halts, flag changes and used order ids, in one pass
    try:
        recovered, used = _read_back(recorder, path, node_id, limits, clock)
    except (UnreadableRecord, ForeignRecord) as exc:
        recorder.close()
        raise FleetError(f"--recorder: {exc}") from None
    except OSError as exc:
        recorder.close()
        raise FleetError(f"--recorder: cannot read {path} ({exc.strerror or exc})") from None
    guard = guard_class(limits, node=node_id, clock=clock, recorder=recorder)
    guard.remember_order_ids(used.ids, used.ts)
    joined = False
    try:
        with stop_requested() as stop:
            async with control_plane(
                urls, state_dir, f"node-{node_id}", replicas=replicas, signer=signer
            ) as plane:
                await check_node_key(plane, node_id, signer, anchor, clock.time_ns())
                joined = True  # from here the block's own `finally` closes the recorder
                runtime = NodeRuntime(
                    guard,
                    plane,
                    clock=clock,
                    trust=TrustStore(anchor),
                    signer=signer,
                    policy=policy,
                    metrics_s=metrics_s,
                    shipper=shipper,
                    attestor=attestor,
                    attest_s=attest_s,
                    recovered=recovered.halts,
                )
                exposition: MetricsServer | None = None
                checkpointer = Checkpointer(
                    recorder,
                    path,
                    node_id,
                    signer.key,
                    clock,
                    plane,
                    lock=guard.lock if isinstance(guard, LockedGuard) else None,
                )
                signing: asyncio.Task[None] | None = None
                deferred = DrainOnceReady(runtime) if prepare is not None else None
                if deferred is not None:
                    deferred.install()
                try:
                    if metrics_port is not None:
                        exposition = serve_node_metrics(runtime, metrics_port)
                        for collector in collectors:
                            exposition.registry.register(collector)
                        print(f"node {node_id} metrics on {exposition.url}", flush=True)
                    await runtime.start()
                    signing = asyncio.create_task(checkpointer.run(checkpoint_s))
                    if attestor is not None:
                        await NodeFlags(runtime, applied=recovered.flag_revisions).start()
                    if await first_of(runtime.release_event, stop):
                        if prepare is not None:
                            try:
                                await prepare(runtime, stop)
                            finally:
                                if deferred is not None:
                                    deferred.settle()
                            if deferred is not None and not stop.is_set():
                                await drain_held(runtime, deferred.handed)
                        if not stop.is_set():
                            await _trade_until(stop, runtime, node_id, trader, state_dir, limits)
                finally:
                    if exposition is not None:
                        exposition.close()
                    await runtime.stop()
                    if signing is not None:
                        await stop_task(signing)
                    await checkpointer.close()
                    recorder.close()

    finally:
        if not joined:  # not connected, or refused: the file is let go (in-process callers)
            recorder.close()


def _read_back(
    recorder: FlightRecorder, path: Path, node_id: str, limits: Limits, clock: Clock
) -> tuple[Standing, AcceptedIds]:
    """What was in force when the node stopped (`held_standing`: halts, flag changes) and
    the order ids it accepted before this start and still within the duplicate scope (its
    recorder's accepted decisions after the last session start, within
    `duplicate_id_window_s` of now), in one read through the recorder's own descriptor up
    to where its data ended (`held_read_back`): a restarted node refuses the ids again as
    `duplicate_order_id` (a router that resends its journal after a restart sent every one
    again). A file holding another node's records is refused (`ForeignRecord`)."""
    window = limits.duplicate_id_window_s
    since = None if window is None else clock.time_ns() - to_ns(window)
    held = held_read_back(recorder, path, since=since, node=node_id)
    return held.standing, held.used


def armed_limits_path(state_dir: Path, node_id: str) -> Path:
    """Where a node keeps the limits it last armed with (the freeze compares a restart's)."""
    return state_dir / f"{node_id}.armed-limits.json"


_ARMED_MAX_BYTES = 1 << 20


def read_armed_limits(path: Path) -> Limits | None:
    """The limits the node last armed with; None if it never armed. A record that cannot be
    read or decoded stops the node: without it a restart could raise limits during a kill."""
    try:
        with path.open("rb") as f:
            data = f.read(_ARMED_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FleetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if len(data) > _ARMED_MAX_BYTES:
            raise ValueError(f"larger than {_ARMED_MAX_BYTES} bytes")
        return msgspec.json.decode(data, type=Limits)
    except (*UNDECODABLE, LimitsError, ValueError) as exc:
        raise FleetError(
            f"{path}: not the limits this node last armed with ({exc}); restore it, or remove "
            "it only if no kill is in force"
        ) from None


def write_armed_limits(path: Path, limits: Limits) -> None:
    """Record the limits just armed with, atomically (a crash leaves the old or the new)."""
    fields = {k: getattr(limits, k) for k in limits.__struct_fields__}
    for section in ("strategy", "symbol"):
        fields[section] = dict(fields[section])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(fields))
    os.replace(tmp, path)


async def _trade_until(
    stop: asyncio.Event,
    runtime: NodeRuntime,
    node_id: str,
    trader: Trader | None,
    state_dir: Path,
    limits: Limits,
) -> None:
    """Arm, run the process's order flow if it has one, and keep going until a stop signal.

    While a kill is in force a node may not arm with looser limits than it last armed
    with; the limits it arms with are recorded for the next start. A flow that fails
    ends the node (`FleetError` naming the failure)."""
    armed = armed_limits_path(state_dir, node_id)
    try:
        await refuse_raised_limits(
            runtime.plane, node_id, read_armed_limits(armed), limits, runtime.trust
        )
    except FrozenByKill as exc:
        raise FleetError(f"--limits: {exc}") from None
    runtime.arm(f"node:{node_id}")
    write_armed_limits(armed, limits)
    print(f"node {node_id} admitted", flush=True)
    if trader is None:
        await stop.wait()
        return
    flow = asyncio.create_task(trader(runtime, stop))
    stopping = asyncio.create_task(stop.wait())
    failed: BaseException | None = None
    try:
        await asyncio.wait([flow, stopping], return_when=asyncio.FIRST_COMPLETED)
        failed = None if stop.is_set() or not flow.done() or flow.cancelled() else flow.exception()
        if failed is not None:
            # before, the failure sat in its task: the node stayed admitted and armed,
            # healthy to every reader, with nothing running its orders
            text = " ".join(f"{type(failed).__name__}: {failed}".split())[:300]
            runtime.report_error(f"trader: {text}")
            raise FleetError(f"trader: the order flow failed ({text}); the node stops")
        await stop.wait()  # a flow that returned: the node stays up until told to stop
    finally:
        stopping.cancel()
        flow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([flow])
        late = flow.exception() if flow.done() and not flow.cancelled() else None
        if late is not None and late is not failed:  # raised while stopping: one line
            log.error("node %s: the order flow failed while stopping: %r", node_id, late)
