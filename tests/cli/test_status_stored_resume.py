"""`knightwatch status` judges a stored resume at the store's write time, as nodes do.

A two-person resume held back past its expiry and then stored right over the kill it
names verifies at its issue time, but every node refuses it (stored after its expiry)
and holds the slot halted: `status` must show it so, not as ACTIVE. `up` as a real
process (real nats-server, real nodes), status run as the other CLI tests run it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.wire import FLEET_KEY, StateEntry
from knightwatch.state import Scope, TradingState
from knightwatch.trust.identity import load_signer

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)
S = 1_000_000_000


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def entry_cells(out: str) -> list[str]:
    """The cells of the one row of the "kill switch entries" table, each cell's wrapped
    lines joined by a space (the table wraps at the runner's 80 columns)."""
    table = out[out.index("kill switch entries") :]
    lines = table[table.index("┡") :].splitlines()[1:]
    cells: list[list[str]] = []
    for line in lines:
        if not line.startswith("│"):
            break
        parts = [p.strip() for p in line.strip().strip("│").split("│")]
        cells = cells or [[] for _ in parts]
        for cell, part in zip(cells, parts, strict=True):
            if part:
                cell.append(part)
    return [" ".join(c) for c in cells]


def test_status_shows_a_resume_stored_after_its_expiry_held_halted(fleet_up: Path) -> None:
    state = str(fleet_up)
    keys = fleet_up / "trust" / "keys"

    def as_(name: str) -> list[str]:
        return ["--state-dir", state, "--key", str(keys / f"{name}.key")]

    alice = load_signer(keys / "alice.key", "alice")
    bob = load_signer(keys / "bob.key", "bob")

    async def store_held_back_resume() -> None:
        """alice and bob sign a resume of the stored kill that expired a second ago;
        stored compare-and-set right over that kill (its history is intact)."""
        async with control_plane(recorded_url(fleet_up), fleet_up, "t", signer=alice) as plane:
            kill, revision = await plane.get_state(Scope.FLEET, FLEET_KEY)
            assert kill is not None and kill.state is TradingState.HALTED
            now = time.time_ns()
            resume = StateEntry(
                Scope.FLEET, FLEET_KEY, TradingState.ACTIVE, "held back", "alice",
                uuid.uuid4().hex, now - 2 * S, now - S, supersedes=kill.command_id,
                decided_on=revision,
            ).signed(alice.key, bob.key)  # fmt: skip
            await plane.put_state(resume, expected_revision=revision)

    assert invoke("kill", "--reason", "incident", *as_("alice"))[0] == 0
    asyncio.run(store_held_back_resume())
    code, out = invoke("status", *as_("carol"))
    assert code == 0, out
    scope, _, shown, actor, reason, *_ = entry_cells(out)
    assert (scope, reason) == ("fleet", "held back"), out
    assert shown == "UNVERIFIED (held HALTED)", out  # not ACTIVE: as every node holds it
    assert "REFUSED: expired: stored after its expiry" in actor, out
