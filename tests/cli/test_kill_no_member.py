"""`knightwatch kill --node n9` when n9 is no member (a typo for the runaway, n7).

It waited its whole `--timeout` for a node that does not exist, then printed
"not confirmed: n9: no membership record: never seen, so its lease is unknown", which the
runbook reads as a partitioned, frozen or dead node to go and look at, while the runaway
traded on. Now it answers at once that the kill reached no node, names the live ones,
says the kill is stored (n9 is halted if it joins), and exits 1 (done, not confirmed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)


def test_a_node_kill_naming_no_member_says_so_at_once_and_names_the_live_nodes(
    fleet_up: Path,
) -> None:
    keys = ["--state-dir", str(fleet_up), "--key", str(fleet_up / "trust/keys/alice.key")]
    began = time.monotonic()
    result = runner.invoke(
        app, ["kill", "--node", "n9", "--reason", "runaway", "--timeout", "30", *keys]
    )
    took = time.monotonic() - began
    out = " ".join(result.output.split())
    assert result.exit_code == 1, out
    assert "kill reached no node: n9 is not a member of this fleet (live: n1, n2)" in out, out
    assert "n9 is halted if it joins" in out and "stored at revision" in out, out
    assert took < 15, f"it waited {took:.1f} s for a node that is no member"
    status = runner.invoke(app, ["status", "--node", "n9", *keys])
    assert status.exit_code == 0 and "HALTED" in status.output, status.output
