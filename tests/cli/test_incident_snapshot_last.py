"""`knightwatch incident snapshot --last N`: a count no tail can be kept for is refused
before anything connects, naming the option. Unbounded, `--last 99999999999999999999` was
taken, the stores read, and the command ended with an OverflowError traceback (a
tail's bound must fit a C size) and no snapshot written."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.incident import LAST_MAX

runner = CliRunner()


def test_last_beyond_its_bound_is_refused_naming_the_option(tmp_path: Path) -> None:
    for given in ("99999999999999999999", str(LAST_MAX + 1)):
        result = runner.invoke(
            app,
            [
                "incident", "snapshot", "--last", given, "--out", str(tmp_path / "s.tar"),
                "--nats-url", "nats://127.0.0.1:1", "--state-dir", str(tmp_path),
            ],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        assert "--last" in result.output, result.output
    assert not (tmp_path / "s.tar").exists()
