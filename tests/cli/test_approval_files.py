"""A second person's signed approval (`flags approve`, `admission approve`) and an admin's
roster proposal are written whole or not at all. `flags approve --out` into a directory that
does not exist was a FileNotFoundError traceback after connecting and signing; a write that
failed partway (a full disk, a file size limit) left a cut file under the name, which the
requester could not use and the next try was refused as "already exists"."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site

RLP = "trading.smars.rlp_enabled"


def test_flags_approve_into_a_missing_directory_is_one_line_before_connecting(
    tmp_path: Path,
) -> None:
    out = tmp_path / "no" / "a.json"
    result = CliRunner().invoke(
        app,
        ["flags", "approve", RLP, "on", "--for", "alice", "--reason", "r", "--out", str(out),
         "--nats-url", "nats://127.0.0.1:1"],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert f"error: --out {out}: {out.parent} is not a directory" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.parent.exists()


def _limited() -> None:  # no file this process writes may grow past 64 bytes (a full disk)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_an_approval_that_cannot_be_written_whole_leaves_no_file(
    nats_server: Site, tmp_path: Path
) -> None:
    out = tmp_path / "approvals" / "rlp-on.json"
    out.parent.mkdir()
    command = [sys.executable, "-m", "knightwatch", "flags", "approve", RLP, "on", "--for",
               "alice", "--reason", "canary", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "COLUMNS": "300", **nats_server.cli_env("bob")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, preexec_fn=_limited, env=env
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: --out {out}: cannot write: File too large" in done.stdout, done.stdout
    assert list(out.parent.iterdir()) == []  # neither a cut file nor a temporary one
    # the next try, with room to write, is not refused as "already exists"
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert out.read_bytes().startswith(b"{"), out.read_bytes()[:80]
