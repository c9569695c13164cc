"""A second console in the test process, on the shared fleet, and a clock the test moves.

Served through the real app over ASGI with its own record, so a test can change what the
shared console's process cannot be asked to (its recorder, its session table's clock).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from knightwatch.console.app import Console, ConsoleSettings
from knightwatch.console.local import ConsoleProc
from knightwatch.console.serve import open_console
from knightwatch.console.users import UserStore
from knightwatch.trust.identity import load_signer
from knightwatch.trust.store import TrustStore, load_anchor


class Hands:
    """A clock in seconds, moved by the test, never by waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def second_console(
    console: ConsoleProc, tmp_path: Path, prepare: Callable[[Console], None] | None = None
) -> AsyncIterator[Console]:
    """Open and start the second console (`prepare` changes it first); stop it after."""
    fleet = console.fleet
    settings = ConsoleSettings(
        urls=[fleet.url],
        users=fleet.state / "console-users.toml",
        audit=tmp_path / "audit.jsonl",
        recorders=tmp_path,
    )
    trust = TrustStore(load_anchor(fleet.state / "trust" / "anchor.toml"))
    second = await open_console(
        settings, load_signer(fleet.key("console")), trust, UserStore(settings.users)
    )
    if prepare is not None:
        prepare(second)
    await second.start()
    try:
        yield second
    finally:
        await second.stop()
        await second.plane.close()
