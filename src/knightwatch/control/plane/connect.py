"""Connecting to the control plane: the URL given, the one `knightwatch up` recorded, or a new one.

Every process (nodes, the supervisor, operators' commands, the drill) connects
the same way, so a command that cannot reach the server fails fast with the
same message everywhere, and only processes that may embed a server do.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.server import EmbeddedNatsServer
from knightwatch.errors import KnightwatchError

log = logging.getLogger(__name__)

URL_FILE = "nats.url"


class FleetError(KnightwatchError, RuntimeError):
    """A fleet operation that cannot proceed; the message names what to fix."""


def recorded_url(state_dir: Path) -> list[str]:
    """The server URL(s) `knightwatch up` (or an embedding node) wrote into the state dir."""
    path = state_dir / URL_FILE
    if not path.exists():
        return []
    return [u for u in path.read_text().split() if u]


@contextlib.asynccontextmanager
async def control_plane(
    urls: list[str],
    state_dir: Path,
    name: str,
    *,
    replicas: int = 1,
    embed: bool = False,
) -> AsyncIterator[NatsControlPlane]:
    """A connected plane: to `urls`, else to the state dir's server, else (if `embed`) a new one.

    An embedded server is stopped, and its URL file removed, on exit.
    """
    server: EmbeddedNatsServer | None = None
    targets = urls or recorded_url(state_dir)
    plane: NatsControlPlane | None = None
    if targets:
        plane = NatsControlPlane(targets, name=name, replicas=replicas)
        try:
            await plane.connect()
        except ControlPlaneUnavailable:
            if urls or not embed:
                raise
            plane = None
    if plane is None:
        if not embed:
            raise FleetError(
                f"no control plane: pass --nats-url, or start one with `knightwatch up` "
                f"(looked for {state_dir / URL_FILE})"
            )
        server = EmbeddedNatsServer(state_dir / "nats")
        url = server.start()
        (state_dir / URL_FILE).write_text(url + "\n")
        plane = NatsControlPlane(url, name=name, replicas=replicas)
        await plane.connect()
    try:
        yield plane
    finally:
        await plane.close()
        if server is not None:
            with contextlib.suppress(FileNotFoundError):
                (state_dir / URL_FILE).unlink()
            server.stop()
