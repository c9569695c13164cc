"""The console reads as a viewer-only identity of its own: a key that could act is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.console.app import ConsoleError
from knightwatch.console.serve import open_console, settings_for
from knightwatch.console.users import UserStore
from knightwatch.control.site import Site

from ..identities import KIT


@pytest.mark.parametrize("name", ["alice", "supervisor", "admin1"])
async def test_a_key_that_could_act_is_refused(
    nats_server: Site, tmp_path: Path, name: str
) -> None:
    settings = settings_for(tmp_path, [nats_server.url])
    with pytest.raises(ConsoleError, match="only the viewer role"):
        await open_console(settings, KIT.signer(name), KIT.store(), UserStore(settings.users))


async def test_a_viewer_key_opens_and_binds_loopback_settings(
    nats_server: Site, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [nats_server.url])
    console = await open_console(
        settings, KIT.signer("carol"), KIT.store(), UserStore(settings.users)
    )
    try:
        assert console.trust.roster is not None
        assert settings.audit == tmp_path / "console" / "audit.jsonl"
        assert settings.recorders == tmp_path / "audit"
    finally:
        await console.plane.close()
        console.audit.close()
