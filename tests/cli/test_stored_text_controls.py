"""Text others stored, shown by `status`'s ramp table, `incident preflight`'s checklist and
`flags show`: control characters escaped, not only markup.

The fleet's own rows were already written through `shown` (test_fleet_hostile_text), but a
stored ramp record (key, id, status, trip reason) and a stored flag change (actor, reason,
origin, nodes) went out with only their markup escaped: "\\x1b[2K\\x1b[1A" in a ramp's
trip reason erased the line above it in `status` (a HALTED row), "\\r" rewrote the line it
was on. Both buckets are written by operators' and nodes' credentials, not by this command.
A real nats-server (`nats_server`).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.node.flags import change_key, state_key
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, RampRecord
from knightwatch.control.site import Site
from knightwatch.flags.state import FlagChange, FlagState
from knightwatch.incident.ramp import slot_of
from knightwatch.state import Scope

pytestmark = pytest.mark.timeout(90)

runner = CliRunner()
ESCAPES = "\x1b[2K\x1b[1A\r\x07\u202e"
"""Erase the line, move up, return to the line's start, bell, right-to-left override."""
SHOWN = "\\x1b[2K\\x1b[1A\\r\\x07\\u202e"
RAW = ("\x1b", "\r", "\x07", "\u202e")
REGISTRY = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo" / "feature-flags.yaml"
FLAG = "ops.dashboard.dark_mode"


def run(site: Site, who: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "400", **site.cli_env(who)})
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{args[:2]}: {exc!r}"
    return result.exit_code, result.output


def _store(site: Site) -> None:
    async def store() -> None:
        plane = await site.connect("alice")
        try:
            ramp = RampRecord(
                scope=Scope.SYMBOL, key=f"K{ESCAPES}", ramp_id=f"r{ESCAPES}", stage=0,
                stages=(0.1, 1.0), fraction=0.1, status="tripped", actor="alice",
                reason="x", since_ns=0, trip_reason=f"trip{ESCAPES}",
            )  # fmt: skip
            await plane.put_record(Bucket.RAMP, slot_of(ramp.scope, ramp.key), ENCODER.encode(ramp))
            change = FlagChange(
                flag_id=FLAG, value=True, nodes=(f"n{ESCAPES}",), actor=f"a{ESCAPES}",
                approver=None, reason=f"why{ESCAPES}", origin=f"o{ESCAPES}", at_ns=0,
                releases={}, revision=1,
            )  # fmt: skip
            await plane.put_record(Bucket.FLAGS, change_key(FLAG, 1), ENCODER.encode(change))
            state = FlagState(flag_id=FLAG, revision=1, node_values={f"n{ESCAPES}": True})
            await plane.put_record(Bucket.FLAGS, state_key(FLAG), ENCODER.encode(state))
            # the kill switch takes any reason (the CLI cleans its own): preflight quotes it
            await site.killswitch(plane, "alice").kill(
                Scope.SYMBOL, "ESC", f"halted{ESCAPES}", timeout_s=0.1
            )
        finally:
            await plane.close()

    asyncio.run(store())


def test_status_ramps_and_flags_show_escape_control_characters_in_stored_text(
    nats_server: Site, tmp_path: Path
) -> None:
    _store(nats_server)
    code, out = run(nats_server, "carol", "status")
    assert code == 0, out
    for raw in RAW:
        assert raw not in out, (raw, out)
    for text in (f"K{SHOWN}", f"r{SHOWN}", f"trip{SHOWN}"):
        assert text in out, (text, out)

    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(REGISTRY, registry)
    code, out = run(nats_server, "carol", "flags", "show", FLAG, "--registry", str(registry))
    assert code == 0, out
    for raw in RAW:
        assert raw not in out, (raw, out)
    for text in (f"a{SHOWN}", f"why{SHOWN}", f"o{SHOWN}", f"n{SHOWN}"):
        assert text in out, (text, out)

    code, out = run(nats_server, "carol", "incident", "preflight", "--symbol", "ESC")
    assert code in (0, 1), out
    for raw in RAW:
        assert raw not in out, (raw, out)
    assert f"halted{SHOWN}" in out, out
