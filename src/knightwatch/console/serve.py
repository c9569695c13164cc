"""Starting the console: its own read-only identity, the roster followed, uvicorn on loopback.

The console reads the fleet as an identity of its own that holds only the
viewer role: it refuses to start with a key that could kill, request or
approve, because anything it does to trading state must be signed by the
person who asked, with their own key. A console bound anywhere but loopback
must say so explicitly (`--host`), and should sit behind TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvicorn
from starlette.middleware.trustedhost import TrustedHostMiddleware

from knightwatch.console.app import Console, ConsoleError, ConsoleSettings, build_app
from knightwatch.console.users import UserStore
from knightwatch.control.node.trustfeed import identify
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.trust.identity import Signer
from knightwatch.trust.policy import roles_of
from knightwatch.trust.roster import Role
from knightwatch.trust.store import TrustStore

log = logging.getLogger(__name__)


async def open_console(
    settings: ConsoleSettings, signer: Signer, trust: TrustStore, users: UserStore
) -> Console:
    """The console's state on a connected, roster-following, viewer-only plane."""
    plane = NatsControlPlane(settings.urls, name="console", signer=signer)
    await plane.connect()
    try:
        me = await identify(plane, signer, trust)
        held = roles_of(trust.roster, me.name)
        if held != {Role.VIEWER}:
            raise ConsoleError(
                f"--key: the console's own identity must hold only the viewer role; {me.name} "
                f"holds {', '.join(sorted(held)) or 'no role'} (people act with their own keys)"
            )
    except BaseException:
        await plane.close()
        raise
    return Console(settings, plane=plane, trust=trust, users=users)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The loopback addresses a console may be bound to (`--host`)."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The names a console bound to loopback answers to (the Host header, port aside). An IPv6
literal is bracketed in a Host header ("[::1]:8765"): with "::1" alone, a console bound to
::1 answered every browser request with 400."""


async def run(
    settings: ConsoleSettings,
    signer: Signer,
    trust: TrustStore,
    users: UserStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    console = await open_console(settings, signer, trust, users)
    app = build_app(console)
    if host in LOOPBACK_HOSTS:
        # Bound to loopback, the console answers only to loopback names: a page that
        # rebinds its own DNS name to 127.0.0.1 cannot reach it from a browser here.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        proxy_headers=False,
        ssl_certfile=str(settings.tls[0]) if settings.tls else None,
        ssl_keyfile=str(settings.tls[1]) if settings.tls else None,
    )
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if task.done() and not server.started:
            raise ConsoleError(f"the console could not start on {host}:{port} (see above)")
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        console.closing.set()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await task
        await console.plane.close()


def settings_for(
    state_dir: Path,
    urls: list[str],
    *,
    users: Path | None = None,
    audit: Path | None = None,
    recorders: Path | None = None,
) -> ConsoleSettings:
    return ConsoleSettings(
        urls=urls,
        users=users or state_dir / "console-users.toml",
        audit=audit or state_dir / "console" / "audit.jsonl",
        recorders=recorders or state_dir / "audit",
    )
