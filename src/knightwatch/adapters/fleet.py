"""What both adapters share: a watched Guard, its flight recorder, and joining the fleet.

An adapter must act when the Guard's trading state changes, whoever changed it:
the Guard's own automatic halts (throttle, loss stop, fill mismatch), an
operator's kill arriving through the node runtime, a resume. The Guard has one
halt listener and the node runtime owns it, so instead `WatchedGuard` tells
its watchers after every `latch` and `resume`, the two methods every one of
those paths goes through (`halt` latches, and a node runtime's kill latches,
confirms, then records), once per change. The watcher mirrors the state into the host stack
(NautilusTrader's trading state) and, on a node-wide HALTED, cancels the
node's open orders at the venue: a kill stops new orders and removes the
working ones, as a venue kill switch does.

Joining the fleet is the existing `NodeRuntime` (lease, kill state, metrics,
flight-recorder shipping), started with one call; the adapters never carry a
second runtime. The runtime lives on an asyncio loop; a host that is not
(a synchronous ccxt program) runs it on a loop in a thread of its own
(`LoopThread`), and then calls the Guard from its own thread while kills
arrive on the loop's: `LockedWatchedGuard` is the watched Guard under
`LockedGuard`'s one lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from knightwatch import Clock, Guard, KnightwatchError, Limits, Scope, TradingState
from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import MemorySink
from knightwatch.control.exposition import MetricsServer, serve_node_metrics
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.node.shipping import ShippingSink
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.guard import DEFAULT_MEMORY_RECORDS, LockedGuard
from knightwatch.order import MAX_ID_LEN
from knightwatch.trust.identity import Signer, load_signer
from knightwatch.trust.roster import TrustError
from knightwatch.trust.store import TrustStore, load_anchor

log = logging.getLogger(__name__)

T = TypeVar("T")

ControlPlaneSpec = ControlPlane | str | Sequence[str]
"""A control plane object, or the NATS URL(s) of one."""


class AdapterError(KnightwatchError, RuntimeError):
    """An adapter cannot be installed or run as configured; the message says what to fix."""


class WatchedGuard(Guard):
    """A Guard that tells its watchers after every halt and resume, from any source."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchers: list[Callable[[], None]] = []

    def watch(self, watcher: Callable[[], None]) -> None:
        self._watchers.append(watcher)

    def latch(self, *args: Any, **kwargs: Any) -> Callable[[], None]:
        # every halt goes through latch: `halt` itself, and a node runtime's kill
        # (which confirms between latching and recording)
        report = super().latch(*args, **kwargs)
        self._changed()
        return report

    def resume(self, *args: Any, **kwargs: Any) -> bool:
        cleared = super().resume(*args, **kwargs)
        self._changed()
        return cleared

    def _changed(self) -> None:
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:  # a failing watcher must never undo or delay the halt itself
                log.exception("WATCHER_FAILED node=%s", self.node)

    def worst_state(self) -> TradingState:
        """The strictest state held at any scope (what a single host-wide state mirrors)."""
        states = [h.state for h in self.halts().values()]
        return max(states, default=TradingState.ACTIVE)

    def node_state(self) -> TradingState:
        """The state of the whole node: its fleet and node scopes (a kill or a node halt)."""
        return max(self.trading_state(Scope.FLEET), self.trading_state(Scope.NODE, self.node))


if TYPE_CHECKING:
    _LockedBase = WatchedGuard
else:
    _LockedBase = LockedGuard


class LockedWatchedGuard(_LockedBase):
    """A `WatchedGuard` with every public call under `LockedGuard`'s one re-entrant lock.

    For the type checker it is a WatchedGuard; at run time a `LockedGuard` around
    one. Watchers run on the thread that halted or resumed, with the lock held: a
    watcher must hand slow work (cancelling at a venue) to another thread.
    """

    lock: threading.RLock
    _guard: WatchedGuard

    def __init__(
        self, limits: Limits, *, node: str, clock: Clock, recorder: FlightRecorder
    ) -> None:
        # LockedGuard's two fields, around a watched Guard instead of a plain one
        self.lock = threading.RLock()
        self._guard = WatchedGuard(limits, node=node, clock=clock, recorder=recorder)

    def watch(self, watcher: Callable[[], None]) -> None:
        with self.lock:
            self._guard.watch(watcher)

    # LockedGuard calls Guard's own resume on the wrapped Guard: it must reach
    # WatchedGuard's, which tells the watchers. (`latch` is LockedGuard's own: it calls the
    # wrapped WatchedGuard's and writes the halt's record under the lock; an override here
    # wrote it without, beside a FIX thread's order records.)
    def resume(self, *args: Any, **kwargs: Any) -> bool:
        with self.lock:
            return self._guard.resume(*args, **kwargs)

    def worst_state(self) -> TradingState:
        with self.lock:
            return self._guard.worst_state()

    def node_state(self) -> TradingState:
        with self.lock:
            return self._guard.node_state()


class LoopThread:
    """An asyncio loop on a daemon thread of its own, for a host that has no loop.

    `run` hands it a coroutine and waits for the result; `close` stops it.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """The coroutine's result; one given up on (timed out, or the waiting thread
        interrupted) is cancelled on the loop, never left running: a join that timed out
        went on to take the lease and arm the Guard after `join` had raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()  # a no-op once it has ended; else cancels its task on the loop
            raise

    def close(self, timeout_s: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout_s)
        if not self.thread.is_alive():
            self.loop.close()


class _RecorderClock:
    """Record stamps from the Guard's clock; flush cadence from the host's.

    On a backtest's simulated clock every quote can jump the clock past the
    recorder's flush interval, which would write (and sync) one batch per
    record; batching is about disk IO, so it follows real time.
    """

    __slots__ = ("_clock",)

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def time_ns(self) -> int:
        return self._clock.time_ns()


class Unmapped:
    """What the flight recorder keeps of an order an adapter could not map: its id."""

    __slots__ = ("id", "parent_id", "price", "qty", "side", "strategy", "symbol")

    def __init__(self, order_id: str) -> None:
        self.id = order_id
        self.strategy = self.symbol = self.side = "?"
        self.qty = 0
        self.price = self.parent_id = None


def with_lease(limits: Limits, policy: LeasePolicy) -> Limits:
    """The limits with the node's lease timeout; a different one already set is an error."""
    if limits.lease_timeout_s is None:
        return msgspec.structs.replace(limits, lease_timeout_s=policy.lease_timeout_s)
    if abs(limits.lease_timeout_s - policy.lease_timeout_s) > 1e-9:
        raise AdapterError(
            f"lease_timeout_s: the limits set {limits.lease_timeout_s:g} but the node's lease "
            f"policy is {policy.lease_timeout_s:g}; make them agree"
        )
    return limits


def build_guard(
    limits: Limits,
    *,
    node: str,
    clock: Clock,
    recorder: str | Path | None,
    ship: bool,
    locked: bool = False,
) -> tuple[WatchedGuard, ShippingSink | None]:
    """A watched Guard with its flight recorder: a file at `recorder`, else memory.

    With `ship`, recorded lines are also queued for the fleet's audit stream;
    with `locked`, the Guard is a `LockedWatchedGuard` (called from two threads).
    """
    if recorder is None:
        memory = MemorySink(capacity=DEFAULT_MEMORY_RECORDS)
        shipper = ShippingSink(memory) if ship else None
        fr = FlightRecorder(
            None, clock=_RecorderClock(clock), sink=memory if shipper is None else shipper
        )
    else:
        shipper = ShippingSink() if ship else None  # the file is written by the recorder
        path = Path(recorder)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fr = FlightRecorder(path, clock=_RecorderClock(clock), sink=shipper)
        except (OSError, ValueError) as exc:
            raise AdapterError(f"recorder: cannot open {path} ({exc})") from None
    if locked:
        return LockedWatchedGuard(limits, node=node, clock=clock, recorder=fr), shipper
    return WatchedGuard(limits, node=node, clock=clock, recorder=fr), shipper


def plane_of(spec: ControlPlaneSpec, node: str, signer: Signer) -> ControlPlane:
    """A plane from NATS URLs, logged in with the node's own key; a given plane as is."""
    if isinstance(spec, str):
        urls = [u for u in spec.split(",") if u]
        return NatsControlPlane(urls, name=f"node-{node}", signer=signer)
    if isinstance(spec, Sequence):
        return NatsControlPlane(list(spec), name=f"node-{node}", signer=signer)
    return spec


def check_settings(
    *,
    node: object = None,
    clock: object = None,
    recorder: object = None,
    policy: object = None,
    control_plane: object = None,
    key: object = None,
    anchor: object = None,
    metrics_port: object = None,
) -> None:
    """Raises `AdapterError` naming the first of an adapter's settings of a type it can never
    use, before anything is built: given as is, each failed later with a traceback from deep
    inside (`clock=5` an AttributeError at the Guard's first reading, `policy=5` one at the
    lease, `key=5` a TypeError from pathlib) or only when joining the fleet
    (`control_plane=5`, an empty URL list, `metrics_port=-1`), after the wrapper was built;
    a node name the Guard refuses raised its ValueError, not the adapters' error."""
    if node is not None and (type(node) is not str or not node.strip() or len(node) > MAX_ID_LEN):
        raise AdapterError(
            f"node: must be a non-empty string of at most {MAX_ID_LEN} characters "
            f"(got {node!r:.80})"
        )
    if clock is not None and not all(
        callable(getattr(clock, name, None)) for name in ("monotonic_ns", "time_ns")
    ):
        raise AdapterError(
            f"clock: must be a knightwatch Clock (monotonic_ns and time_ns), got "
            f"{type(clock).__name__}"
        )
    for name, value in (("recorder", recorder), ("key", key), ("anchor", anchor)):
        if value is not None and not isinstance(value, str | Path):
            raise AdapterError(f"{name}: must be a file path, got {type(value).__name__}")
    if policy is not None and not isinstance(policy, LeasePolicy):
        raise AdapterError(f"policy: must be a LeasePolicy, got {type(policy).__name__}")
    if control_plane is not None and not hasattr(control_plane, "connect"):
        if isinstance(control_plane, str):
            urls: list[object] = [u for u in control_plane.split(",") if u.strip()]
        elif isinstance(control_plane, Sequence):
            urls = list(control_plane)
        else:
            raise AdapterError(
                "control_plane: must be a ControlPlane or NATS URL(s), got "
                f"{type(control_plane).__name__}"
            )
        if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise AdapterError(
                f"control_plane: must name at least one NATS URL, each a non-empty string "
                f"(got {control_plane!r:.80})"
            )
    if metrics_port is not None and (
        type(metrics_port) is not int or not 0 <= metrics_port <= 65535
    ):
        raise AdapterError(
            f"metrics_port: must be a port number from 0 to 65535 (got {metrics_port!r:.40})"
        )


def limits_of(limits: object) -> Limits:
    """`limits=` as given to an adapter: `Limits`, or the path of a limits TOML file."""
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, str | Path):
        return Limits.from_toml(limits)
    raise AdapterError(
        f"limits: must be a Limits or the path of a limits file (got {type(limits).__name__})"
    )


def identity_of(
    node: str, key: str | Path | None, anchor: str | Path | None
) -> tuple[Signer, TrustStore]:
    """The node's enrolled key and the fleet's trust anchor, which a fleet member needs:
    it logs in and signs its automatic halts with the key, and verifies every kill-switch
    command against the roster the anchor starts."""
    if key is None or anchor is None:
        raise AdapterError(
            "key, anchor: joining a fleet needs the node's enrolled private key and the "
            "fleet's trust anchor file (as `knightwatch node --key --anchor`)"
        )
    try:
        return load_signer(Path(key), node), TrustStore(load_anchor(Path(anchor)))
    except TrustError as exc:
        raise AdapterError(str(exc)) from None


class FleetMember:
    """One node's membership: `NodeRuntime` on a connected plane, armed once it has joined.

    A plane built here from URLs is closed by `stop`; one passed in stays open.
    """

    def __init__(
        self,
        guard: WatchedGuard,
        plane: ControlPlane,
        *,
        clock: Clock,
        policy: LeasePolicy,
        shipper: ShippingSink | None,
        signer: Signer,
        trust: TrustStore,
        metrics_port: int | None = None,
        owns_plane: bool = True,
    ) -> None:
        self.plane = plane
        self.owns_plane = owns_plane
        self.runtime = NodeRuntime(
            guard, plane, clock=clock, policy=policy, shipper=shipper, trust=trust, signer=signer
        )
        self.metrics_port = metrics_port
        self.exposition: MetricsServer | None = None

    async def start(self, actor: str) -> None:
        """Connect, join (kill state resynced, lease taken, registered), serve metrics, then
        arm: arming is the last step. A start that raises has stopped what it started and
        left the Guard unarmed: before, a metrics port in use raised after the Guard was
        armed, leaving a node that trades while its program was told joining failed (and
        one refused at arming kept its runtime running)."""
        try:
            if not self.plane.connected:
                await self.plane.connect()
            await self.runtime.start()
            if self.metrics_port is not None:
                self.exposition = serve_node_metrics(self.runtime, self.metrics_port)
            self.runtime.arm(actor)
        except BaseException:
            try:
                await self.stop()
            except Exception:  # the error that stopped the join is the one to report
                log.exception("node %s: stopping after a failed join", self.runtime.node_id)
            raise
        log.info("node %s joined the fleet and armed (%s)", self.runtime.node_id, actor)

    async def stop(self) -> None:
        if self.exposition is not None:
            self.exposition.close()
            self.exposition = None
        await self.runtime.stop()
        if self.owns_plane:
            await self.plane.close()
