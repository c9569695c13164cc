"""`knightwatch rollout status --json`: stdout holds JSON alone, on every path. An error line
("error: no rollout for ...", "error: control plane unreachable ...") was printed to stdout,
where a script's JSON parser read it instead of the document it asked for."""

from __future__ import annotations

import json
import socket

from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site


def test_no_rollout_is_an_empty_list_on_stdout_and_the_error_on_stderr(
    nats_server: Site,
) -> None:
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    for args in (["rollout", "status", "--json"], ["rollout", "status", "ops.none", "--json"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        assert result.exit_code == 1, result.output
        assert json.loads(result.stdout) == [], result.stdout
        assert "error: no rollout" in result.stderr, result.stderr


def test_an_unreachable_plane_leaves_stdout_empty_and_says_so_on_stderr(
    nats_server: Site,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"COLUMNS": "300", **nats_server.cli_env("alice")}
    env["KNIGHTWATCH_NATS_URL"] = f"nats://127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["rollout", "status", "--json"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    assert "error: control plane unreachable" in result.stderr, result.stderr
