"""`--heartbeat` and `--lease-timeout` of `node`, `drill-node` and `gateway`, named when refused.

A lease policy no node can keep safely was refused as "heartbeat_s: must be between 0.01
and 10" or "lease_timeout_s: must be >= 3 x heartbeat_s", fields no command has; the
gateway said so only after it had read its key and anchor and hashed its release tree.
Now each is one line naming the option and the rule (exit 2), before any file is read,
anything is written or anything connects.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--heartbeat", "0"], "error: --heartbeat: must be between 0.01 and 10 (got 0.0)"),
        (["--heartbeat", "nan"], "error: --heartbeat: must be between 0.01 and 10 (got nan)"),
        (
            ["--heartbeat", "0.5", "--lease-timeout", "1"],
            "error: --lease-timeout: must be >= 3 x --heartbeat = 1.5 (got 1.0)",
        ),
        (["--lease-timeout", "inf"], "error: --lease-timeout: must be <= 60 (got inf)"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["node", "--id", "n1"],
        ["drill-node", "--id", "n1"],
        ["gateway", "absent-gateway.toml"],
    ],
)
def test_a_lease_no_node_can_keep_is_refused_naming_the_option(
    command: list[str], options: list[str], said: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    key = tmp_path / "absent.key"
    args = [*command, *options, "--key", str(key), "--state-dir", str(state)]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert result.output.strip() == said, result.output  # one line; no key or file read
    assert not state.exists()
