"""`knightwatch up` and the live drill: a real fleet of processes on a real server.

The drill is the live counterpart of the replay: eight node processes trade
through their Guards against a simulated venue behind NATS subjects, the
supervisor watches their metrics, and one node is turned into a Power Peg-like
runaway. It reports what an operator would want to know on the day: how long
until the runaway was halted automatically, how many of its orders got out
before that, and how fast a fleet-wide kill reached every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from nats.aio.client import Client
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Supervisor, SupervisorConfig
from knightwatch.control.fleet.supervisor_service import SupervisorService
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.trustfeed import sync_roster
from knightwatch.control.plane.connect import Amend, FleetError, control_plane, describe_version
from knightwatch.control.plane.nats import NatsControlPlane, connect_as
from knightwatch.control.plane.protocol import Bucket, ControlPlaneUnavailable
from knightwatch.control.plane.wire import FLEET_KEY, VERDICT_DECODER, NodeMetrics, Verdict
from knightwatch.control.serve import stop_requested
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope
from knightwatch.release.keys import SigningKey
from knightwatch.sim.drill.flow import SUBJECT_RUNAWAY
from knightwatch.sim.drill.local_release import LocalRelease
from knightwatch.sim.drill.processes import NodeProcesses
from knightwatch.sim.drill.resume_phase import (
    ResumeReport,
    clear_ramps,
    resume_left_halted,
    run_resume_phase,
)
from knightwatch.sim.drill.venue import VenueResponder
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import load_signer
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, TrustError, decode_roster
from knightwatch.trust.store import TrustStore

METRICS_S = 0.2
WARMUP_S = 2.0
HALT_TIMEOUT_S = 15.0


class DrillReport(msgspec.Struct, frozen=True):
    nodes: int
    runaway_node: str
    halted: bool
    rule: str
    time_to_halt_ms: float
    orders_escaped: int
    orders_attempted: int
    kill_latencies_ms: dict[str, float]
    kill_missing: list[str]
    stale_refused: dict[str, str]
    stale_armed: list[str]
    release_id: str
    passed: bool
    resume: ResumeReport | None = None
    """The resume phase: snapshot, preflight, a completed ramp and a tripped one."""
    left_halted: list[str] = msgspec.field(default_factory=list)
    """The scopes the drill's final resume left not trading, one line each (`passed` false)."""


async def _wait_admitted(
    plane: NatsControlPlane, ids: list[str], console: Console, timeout_s: float = 30.0
) -> None:
    clock = SystemClock()
    deadline = clock.monotonic_ns() + int(timeout_s * 1e9)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("nodes admitted", total=len(ids))
        while True:
            now = clock.time_ns()
            admitted: set[str] = set()
            with contextlib.suppress(ControlPlaneUnavailable):
                admitted = {
                    s.node_id for s in await plane.members() if s.admitted and s.live(now, 0)
                } & set(ids)
            progress.update(task, completed=len(admitted))
            if len(admitted) == len(ids):
                return
            if clock.monotonic_ns() > deadline:
                raise FleetError(
                    f"nodes not admitted within {timeout_s:g} s: "
                    f"{', '.join(sorted(set(ids) - admitted))} (see their logs under logs/)"
                )
            await asyncio.sleep(0.1)


async def _wait_refused(
    plane: NatsControlPlane, ids: list[str], timeout_s: float = 30.0
) -> dict[str, Verdict]:
    """The admission service's stored refusal of each node; FleetError if one is admitted.

    A stored verdict that does not decode proves nothing either way: it is waited on like
    a missing one (the service may write it again) and named, with why, if it stays so
    (before, one such record ended the drill in a msgspec traceback)."""
    clock = SystemClock()
    deadline = clock.monotonic_ns() + int(timeout_s * 1e9)
    while True:
        verdicts: dict[str, Verdict] = {}
        undecodable: dict[str, str] = {}
        with contextlib.suppress(ControlPlaneUnavailable):
            stored = await plane.records(Bucket.ADMISSION)
            for n in ids:
                if n not in stored:
                    continue
                try:
                    verdicts[n] = VERDICT_DECODER.decode(stored[n][0])
                except UNDECODABLE as exc:
                    undecodable[n] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        admitted = sorted(n for n, v in verdicts.items() if v.admitted)
        if admitted:
            raise FleetError(f"stale node(s) admitted: {', '.join(admitted)}")
        if len(verdicts) == len(ids):
            return verdicts
        if clock.monotonic_ns() > deadline:
            parts = sorted(set(ids) - verdicts.keys() - undecodable.keys())
            parts += [
                f"{n} (admission verdict undecodable, cannot check its release: {why})"
                for n, why in sorted(undecodable.items())
            ]
            raise FleetError(f"no admission verdict within {timeout_s:g} s for: {', '.join(parts)}")
        await asyncio.sleep(0.1)


LOCK_FILE = "fleet.lock"
"""Held (flock) by the `knightwatch up` or drill that runs a fleet on a state dir, for as
long as it runs; it names that process. The kernel lets go of it when the process ends."""
_PORTS_FILE = re.compile(r"nats-server_(\d+)\.ports")
_PROBE_S = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it lives
    return True


def _answers(url: str) -> bool:
    """A NATS server answers at `url`: it greets every connection with INFO, before a login."""
    try:
        where = urlsplit(url)
        host, port = where.hostname, where.port
        if host is None or port is None:
            return False
        with socket.create_connection((host, port), timeout=_PROBE_S) as conn:
            conn.settimeout(_PROBE_S)
            greeting = b""
            while len(greeting) < 5:
                chunk = conn.recv(5 - len(greeting))
                if not chunk:
                    break
                greeting += chunk
            return greeting == b"INFO "
    except (OSError, ValueError):
        return False


def _serving(state_dir: Path) -> tuple[str, int] | None:
    """The state dir's own nats-server that still runs and answers: (URL, pid), else None.

    Read only. Each server `up` embeds writes `nats/nats-server_<pid>.ports` (removed when
    it stops cleanly); one whose pid lives and whose URL answers still serves its fleet,
    even with its `up` gone (one killed with SIGKILL leaves it and its nodes running). A
    URL that answers for a dead pid is another server on a reused port: not this fleet."""
    try:
        entries = sorted((state_dir / "nats").iterdir())
    except OSError:
        return None
    for entry in entries:
        match = _PORTS_FILE.fullmatch(entry.name)
        if match is None or not _alive(pid := int(match.group(1))):
            continue
        try:
            urls = json.loads(entry.read_text())["nats"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for url in urls if isinstance(urls, list) else []:
            if isinstance(url, str) and _answers(url):
                return url, pid
    return None


@contextlib.contextmanager
def fleet_claim(state_dir: Path, command: str, *, probe: bool) -> Iterator[None]:
    """Run a fleet on `state_dir` alone, or refuse at once (FleetError, one line), before
    anything under it is written (`knightwatch up` and `drill` hold it around the run).

    A second `up` on a state dir whose fleet runs joined that fleet's server, rewrote its
    identities and release (the running admission service then refused the new release
    as `signature_untrusted`) and ended in a traceback. Refused here: while another `up`
    or drill holds `LOCK_FILE`, and (`probe`: no --nats-url, so the recorded server would
    be joined) while the state dir's own server still answers. A state dir whose fleet is
    gone (a stale URL file, ports file or lock) starts as before."""
    where = f"--state-dir {state_dir}: a fleet is running there"
    if probe and (serving := _serving(state_dir)) is not None:
        url, pid = serving
        raise FleetError(
            f"{where} (its server {url} answers, nats-server pid {pid}); stop that fleet "
            f"(Ctrl-C where `knightwatch up` runs, else pid {pid} and its nodes) or use "
            "another --state-dir"
        )
    lock = state_dir / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise FleetError(f"{lock}: cannot open the fleet's lock ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 128, 0).decode(errors="replace").strip() or "another process"
            raise FleetError(
                f"{where} ({holder!r} holds {lock}); stop it (Ctrl-C where it runs) or use "
                "another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"knightwatch {command}, pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it races a new claim)


def local_kit(state_dir: Path, node_ids: list[str], fleet: str = "") -> Kit:
    """The local fleet's identities, written under STATE_DIR/trust (keys 0600); `fleet`
    names the fleet (`Roster.fleet`, `up --fleet`): a new one in its first version, an
    unnamed one in its next; one named otherwise is refused (FleetError), as a fleet's
    roster keeps its name.

    A local fleet is one machine, so every key lives there: two admins, the
    people alice and bob (operators and approvers: one kills, the other
    approves a resume), carol (viewer), the supervisor, the admission service,
    the drill's venue, the operator console's own read-only identity and one
    key per node. A production fleet enrols each
    person's own key instead (`knightwatch identity`).

    The state dir's files alone: a fleet started on a server uses `local_cast` and
    `local_amend`, which first take in what its admins published there meanwhile.
    """
    kit = local_cast(state_dir, node_ids, fleet)
    _complete(kit, state_dir, node_ids, fleet)
    return kit


def local_cast(state_dir: Path, node_ids: list[str], fleet: str = "") -> Kit:
    """The state dir's identities as its files hold them (nothing added), or a new cast
    (not written yet) naming `fleet`; FleetError if the files lack part of the cast or
    name another fleet than `fleet`, before any server starts."""
    trust_dir = state_dir / "trust"
    if not (trust_dir / "anchor.toml").exists():
        kit = Kit(now_ns=SystemClock().time_ns(), nodes=node_ids, fleet=fleet)
        kit.add("venue", [Role.VENUE])
        kit.add("console", [Role.VIEWER])
        return kit
    kit = Kit.read(trust_dir)  # the same fleet again: the same identities
    lacking = [n for n in ("alice", "bob", "supervisor", "admission", "venue")
               if n not in kit.signers]  # fmt: skip
    if lacking:
        raise FleetError(
            f"{trust_dir}: the stored cast lacks {', '.join(lacking)}; use a fresh --state-dir"
        )
    _check_name(kit, trust_dir, fleet)
    return kit


def local_amend(state_dir: Path, node_ids: list[str], fleet: str = "") -> Amend:
    """What a local fleet does with the roster history its server holds (`store_roster`):
    takes in the versions its admins published since its files were written, adds what
    it lacks (`node_ids`, the console, `fleet`'s name) as the next version on top, and
    rewrites its files. Its files' own version of a number the server holds otherwise (an
    earlier release enrolled a bigger fleet's nodes that way, and the roster in force never
    held them) is refused, one line naming both."""
    trust_dir = state_dir / "trust"

    def amend(kit: Kit, history: list[Envelope]) -> None:
        for version, (mine, theirs) in enumerate(zip(kit.envelopes, history, strict=False), 1):
            if mine.payload != theirs.payload:
                later = f"v{version}.json and later" if len(kit.envelopes) > version else ""
                raise FleetError(
                    f"{trust_dir / 'roster' / f'v{version}.json'}: not the roster version "
                    f"{version} the server holds ({_differs(mine, theirs)}); move "
                    f"{later or f'v{version}.json'} aside to take the server's, or use a "
                    "fresh --state-dir"
                )
        try:
            kit.adopt(history)
        except TrustError as exc:
            raise FleetError(f"{trust_dir}: the server's roster history: {exc}") from None
        _complete(kit, state_dir, node_ids, fleet)

    return amend


def _differs(mine: Envelope, theirs: Envelope) -> str:
    """How a file's roster version differs from the server's of the same number, in short."""
    names = [{m.name for m in decode_roster(e).members} for e in (mine, theirs)]
    only = [", ".join(sorted(names[0] - names[1])), ", ".join(sorted(names[1] - names[0]))]
    if only[0] or only[1]:
        return (
            f"the file's names {only[0] or 'no one else'}, the server's {only[1] or 'no one else'}"
        )
    return f"the file's: {describe_version(mine)}; the server's: {describe_version(theirs)}"


def _check_name(kit: Kit, trust_dir: Path, fleet: str) -> None:
    if fleet and kit.roster.fleet and kit.roster.fleet != fleet:
        raise FleetError(
            f"--fleet {fleet}: the fleet in {trust_dir} is named "
            f"{kit.roster.fleet!r} (roster version {kit.roster.version}); a fleet's "
            "roster keeps its name: leave --fleet out or use a fresh --state-dir"
        )


def _complete(kit: Kit, state_dir: Path, node_ids: list[str], fleet: str) -> None:
    """`node_ids` and the console enrolled, the fleet named `fleet`, the files written.

    A node whose key file the state dir holds, but the roster does not name (a version
    of this state dir's own that its server never held), is enrolled with that key:
    `Kit.write` keeps every key file it finds, and refuses one holding another key."""
    trust_dir = state_dir / "trust"
    _check_name(kit, trust_dir, fleet)
    for name, roles in [*((n, [Role.NODE]) for n in node_ids), ("console", [Role.VIEWER])]:
        if name in kit.signers:
            continue
        if any(m.name == name for m in kit.roster.members):
            # revoked or rotated by the admins (or its key file lost): never enrolled again
            # here, which would let a key they revoked back in
            raise FleetError(
                f"{trust_dir / 'keys' / f'{name}.key'}: {name} is on the roster (version "
                f"{kit.roster.version}) with no key this state dir holds valid; start fewer "
                "nodes, or have the admins enrol its new key (`knightwatch identity add`)"
            )
        kit.add(name, roles, _kept_key(trust_dir, name))  # a bigger fleet, or a new console
    if fleet and kit.roster.fleet != fleet:
        kit.name(fleet)
    kit.write(trust_dir, private=list(kit.signers))


def _kept_key(trust_dir: Path, name: str) -> SigningKey | None:
    path = trust_dir / "keys" / f"{name}.key"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return load_signer(path).key
    except TrustError as exc:
        raise FleetError(str(exc)) from None


class _Fleet:
    """Release, admission service, venue, supervisor and node processes around one plane."""

    def __init__(
        self,
        plane: NatsControlPlane,
        state_dir: Path,
        pager: Pager,
        config: SupervisorConfig,
        registry: Path | None,
        kit: Kit,
        fleet: str = "",
    ) -> None:
        self.plane = plane
        self.kit = kit
        self.fleet = fleet
        """The fleet it runs as (`--fleet`; "": whatever its roster in force names)."""
        self.trust = kit.store()
        """The roster in force once started (`fleet_in_force`): what a resume is signed on."""
        self.clock = SystemClock()
        self.state_dir = state_dir
        self.release = LocalRelease(state_dir, registry)
        self.service = SupervisorService(
            plane,
            Supervisor(config, self.clock),
            KillSwitch(plane, self.clock, kit.signer("supervisor"), kit.store()),
            pager,
            sweep_s=1.0,
            concurrent=True,
        )
        self.procs: NodeProcesses | None = None
        self.nc: Client | None = None
        self.venue: VenueResponder | None = None
        self.planes: list[NatsControlPlane] = []

    async def connect(self, name: str) -> NatsControlPlane:
        """Another connection to the fleet's server as `name` (each identity its own)."""
        plane = NatsControlPlane(self.plane.servers, name=name, signer=self.kit.signer(name))
        await plane.connect()
        self.planes.append(plane)
        return plane

    async def fleet_in_force(self) -> str:
        """The fleet the roster in force names (the stored versions, as the admission
        service follows them: the admins may have named it with `identity name` since its
        files were written); FleetError if that is not `self.fleet`, when given."""
        store = self.trust = TrustStore(self.kit.anchor)
        await sync_roster(self.plane, store)
        named = store.roster.fleet if store.roster is not None else ""
        if self.fleet and named != self.fleet:
            here = f"fleet {named!r}" if named else "no fleet"
            raise FleetError(
                f"--fleet {self.fleet}: the roster in force on {', '.join(self.plane.servers)} "
                f"(version {store.version}) names {here}; leave --fleet out or use a fresh "
                "--state-dir"
            )
        self.fleet = named
        return named

    async def start(
        self, n: int, flow: float, console: Console, stale: int = 0
    ) -> tuple[list[str], list[str]]:
        """Spawn n nodes, the last `stale` of them on a missed deploy; wait for the rest.
        The release is requested as the target of the fleet the roster in force names:
        requested for no fleet, a named fleet refused it (wrong_fleet) and never started."""
        fleet = await self.fleet_in_force()
        release = self.release
        await asyncio.to_thread(release.build)
        assert release.trust is not None
        admission = AdmissionService(
            await self.connect("admission"),
            release.trust,
            release.registry,
            clock=self.clock,
            roster=TrustStore(self.kit.anchor),
        )
        await admission.start()
        await release.set_target(
            await self.connect("alice"),
            self.kit.signer("alice"),
            self.kit.signer("bob"),
            self.clock.time_ns(),
            fleet=fleet,
        )
        self.nc = await connect_as(self.kit.signer("venue"), self.plane.servers, name="venue")
        self.venue = VenueResponder(self.nc)
        await self.venue.start()
        await self.service.start()
        self.procs = NodeProcesses(
            self.plane.servers,
            self.state_dir,
            flow_rate=flow,
            policy=LeasePolicy(),
            extra=["--metrics-interval", str(METRICS_S)],
            trust_dir=self.state_dir / "trust",
        )
        ids = [f"n{i}" for i in range(1, n + 1)]
        stale_ids = ids[n - stale :] if stale else []
        inputs = {i: await asyncio.to_thread(release.deploy, i, stale=i in stale_ids) for i in ids}
        for node_id in ids:
            self.procs.spawn(node_id, inputs[node_id])
        healthy = [i for i in ids if i not in stale_ids]
        await _wait_admitted(self.plane, healthy, console)
        return healthy, stale_ids

    async def stop(self) -> None:
        """The service, then the node processes, the venue's connection and the planes:
        each stopped whatever failed before it (an error, or a second Ctrl-C or SIGTERM
        cancelling the stop), a failure raised once all were stopped. A service stop that raised
        left every node process, the runaway among them, running with no one to stop it."""
        async with contextlib.AsyncExitStack() as stack:  # its callbacks run last-in first
            for plane in self.planes:
                stack.push_async_callback(plane.close)
            if self.nc is not None:
                stack.push_async_callback(self.nc.close)
            if self.procs is not None:
                stack.push_async_callback(asyncio.to_thread, self.procs.stop)
            await self.service.stop()


async def run_up(
    n: int,
    flow: float,
    urls: list[str],
    state_dir: Path,
    pager: Pager,
    config: SupervisorConfig,
    console: Console,
    registry: Path | None = None,
    fleet: str = "",
) -> None:
    """The fleet until Ctrl-C: every node is admitted on a release built and signed here
    (`fleet`: the name of the fleet it runs as, `local_kit`).

    The stop signals are caught from the first step: one that came while the fleet was
    starting killed this process and left its server and node processes running (a node
    trading with nobody to stop it); now the fleet finishes starting and is stopped."""
    ids = [f"n{i}" for i in range(1, n + 1)]
    kit = local_cast(state_dir, ids, fleet)
    amend = local_amend(state_dir, ids, fleet)
    with stop_requested() as stop:
        async with control_plane(
            urls, state_dir, "up", signer=kit.signer("supervisor"), embed=kit, amend=amend
        ) as plane:
            local = _Fleet(plane, state_dir, pager, config, registry, kit, fleet)
            try:
                ids, _ = await local.start(n, flow, console)
                named = f" for fleet {local.fleet}" if local.fleet else ""
                # paths and URLs as given (a state dir ".../[/x]"): text, never markup
                console.print(
                    escape(
                        f"fleet up: {len(ids)} nodes admitted on release "
                        f"{local.release.release_id}{named} on {', '.join(plane.servers)} "
                        f"(state in {state_dir}); "
                        "`knightwatch status` to inspect, Ctrl-C to stop"
                    ),
                    highlight=False,
                )
                keys = state_dir / "trust" / "keys"
                console.print(
                    escape(
                        f"identities in {state_dir / 'trust'}: "
                        f"KNIGHTWATCH_KEY={keys / 'alice.key'} to kill and request resumes, "
                        f"{keys / 'bob.key'} to approve; the operator "
                        f"console: `knightwatch console user add alice --key {keys / 'alice.key'} "
                        f"--state-dir {state_dir}` (and bob), then `knightwatch console serve "
                        f"--state-dir {state_dir}`"
                    ),
                    highlight=False,
                )
                await stop.wait()
            finally:
                await local.stop()


async def run_drill(
    n: int,
    flow: float,
    runaway: str,
    urls: list[str],
    state_dir: Path,
    console: Console,
    *,
    stale: int = 0,
    registry: Path | None = None,
    resume_phase: bool = True,
    fleet: str = "",
) -> DrillReport:
    """Admission (with `stale` nodes on a missed deploy), runaway, automatic halt, fleet kill;
    then (`resume_phase`) evidence snapshot, preflight, a ramp back and a ramp that trips
    (`fleet`: the name of the fleet it runs as, `local_kit`)."""
    if not 0 <= stale <= n - 3:
        raise FleetError(f"--stale: must be between 0 and nodes - 3 = {n - 3} (got {stale})")
    healthy_ids = [f"n{i}" for i in range(1, n - stale + 1)]
    if runaway not in healthy_ids:
        raise FleetError(
            f"--runaway-node: must be one of the admitted nodes {', '.join(healthy_ids)} "
            f"(got {runaway!r})"
        )
    config = SupervisorConfig(rate_window_s=1.0, reject_min_orders=10_000)
    ids = [f"n{i}" for i in range(1, n + 1)]
    kit = local_cast(state_dir, ids, fleet)
    amend = local_amend(state_dir, ids, fleet)
    async with control_plane(
        urls, state_dir, "drill", signer=kit.signer("supervisor"), embed=kit, amend=amend
    ) as plane:
        leftover = sorted(
            f"{e.scope.value} {e.key!r}" if e is not None else f"{slot} (unreadable)"
            for slot, (e, _) in (await plane.states()).items()
            if e is None or e.state is not TradingState.ACTIVE
        )
        if leftover:
            raise FleetError(
                f"the drill fleet is already halted ({', '.join(leftover)}); resume those scopes "
                f"or use a fresh --state-dir"
            )
        local = _Fleet(plane, state_dir, Pager(), config, registry, kit, fleet)
        latest: dict[str, NodeMetrics] = {}

        async def on_metrics(m: NodeMetrics) -> None:
            latest[m.node_id] = m

        await plane.subscribe_metrics(on_metrics)
        try:
            _, stale_ids = await local.start(n, flow, console, stale)
            refused = await _wait_refused(plane, stale_ids)
            console.print(f"{n} nodes trading at {flow:g} orders/s each; warming up {WARMUP_S:g} s")
            await asyncio.sleep(WARMUP_S)
            before = latest.get(runaway)
            base_accepted = before.accepted if before else 0
            base_orders = before.orders if before else 0
            assert local.nc is not None
            t0 = local.clock.monotonic_ns()
            await local.nc.publish(f"{SUBJECT_RUNAWAY}.{runaway}", b"go")
            console.print(escape(f"runaway injected on {runaway}"), highlight=False)
            rule, t_halt = "", 0
            for _ in range(int(HALT_TIMEOUT_S / 0.005)):
                hit = [
                    (a, r)
                    for a, r in local.service.results
                    if a.key == runaway and runaway in r.latencies_ms
                ]
                if hit:
                    rule, t_halt = hit[0][0].rule.value, local.clock.monotonic_ns()
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(3 * METRICS_S)
            after = latest.get(runaway)
            escaped = (after.accepted - base_accepted) if after else 0
            attempted = (after.orders - base_orders) if after else 0
            alice = await local.connect("alice")
            # on the roster in force: a resume names the fleet it names (wrong_fleet else)
            ks = KillSwitch(alice, local.clock, kit.signer("alice"), local.trust)
            kill = await ks.kill(Scope.FLEET, FLEET_KEY, "drill: fleet-wide kill", timeout_s=2.0)
            resumed: ResumeReport | None = None
            bob = kit.signer("bob")
            if resume_phase:
                trip_node = next(i for i in healthy_ids if i != runaway)
                resumed = await run_resume_phase(
                    alice, ks, bob, local.nc, kill, latest, trip_node, state_dir, console,
                    metrics_s=METRICS_S,
                )  # fmt: skip
                roster = local.trust.roster
                await clear_ramps(alice, kit.signer("alice"), roster.fleet if roster else "")
            left_halted = await resume_left_halted(alice, ks, bob, "drill: end of drill")
            members = {m.node_id: m for m in await plane.members()}
            armed = sorted(i for i in stale_ids if i in members and members[i].armed)
        finally:
            await local.stop()
    halted = bool(rule)
    report = DrillReport(
        nodes=n,
        runaway_node=runaway,
        halted=halted,
        rule=rule,
        time_to_halt_ms=(t_halt - t0) / 1e6 if halted else float("nan"),
        orders_escaped=escaped,
        orders_attempted=attempted,
        kill_latencies_ms=kill.latencies_ms,
        kill_missing=kill.missing,
        stale_refused={i: v.detail for i, v in refused.items()},
        stale_armed=armed,
        release_id=local.release.release_id,
        passed=(
            halted
            and kill.ok
            and not armed
            and (resumed is None or resumed.passed)
            and not left_halted
        ),
        resume=resumed,
        left_halted=left_halted,
    )
    _print_report(report, console)
    return report


def _print_report(r: DrillReport, console: Console) -> None:
    """The report; node ids, verdict details and ids are the records' text: escaped."""
    console.print(
        escape(f"release {r.release_id}: signed by ci + release-manager, target of the fleet"),
        highlight=False,
    )
    for node_id, detail in sorted(r.stale_refused.items()):
        armed = "[red]ARMED[/red]" if node_id in r.stale_armed else "never armed"
        console.print(
            f"{escape(f'stale node {node_id} refused at join ({detail})')}; {armed}",
            highlight=False,
        )
    runaway = escape(r.runaway_node)
    if r.halted:
        console.print(
            f"[bold]{runaway} halted automatically[/bold] by {escape(r.rule)} "
            f"{r.time_to_halt_ms:.0f} ms after the runaway started"
        )
    else:
        console.print(f"[red]{runaway} was NOT halted within {HALT_TIMEOUT_S:g} s[/red]")
    console.print(
        f"orders from {runaway} after injection: {r.orders_attempted} attempted, "
        f"{r.orders_escaped} accepted by its Guard and sent to the venue"
    )
    table = Table(title="fleet-wide kill: confirmation latency per node")
    table.add_column("node")
    table.add_column("ms", justify="right")
    for node_id, ms in sorted(r.kill_latencies_ms.items()):
        table.add_row(escape(node_id), f"{ms:.2f}")
    for node_id in r.kill_missing:
        table.add_row(escape(node_id), "[red]not confirmed[/red]")
    console.print(table)
    for line in r.left_halted:
        console.print(f"[red]left not trading:[/red] {escape(line)}", highlight=False)
    console.print("[green]drill passed[/green]" if r.passed else "[red]drill FAILED[/red]")
