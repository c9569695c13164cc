"""`knightwatch release attest` given what judges a node against a release (`--policy`,
`--release`, `--registry`, `--node-key`) but no `--envelope`: refused naming the options
(exit 2). Before, they were dropped without a word: the command printed what the node runs
and exited 0, so `release attest ... --policy p.toml --release R && deploy` deployed a node
no admission check had looked at."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

from .test_release import site as site

runner = CliRunner()


@pytest.mark.parametrize(
    "extra",
    [
        ("--policy", "policy.toml"),
        ("--release", "2012.08.01-rlp"),
        ("--registry", "flags.yaml"),
        ("--node-key", "keys/ci.key"),
    ],
)
def test_judging_options_without_envelope_are_refused(site: Path, extra: tuple[str, str]) -> None:
    option, value = extra
    given = value if option == "--release" else str(site / value)
    result = runner.invoke(
        app,
        [
            "release", "attest", "--node", "n1", "--artifacts", str(site / "release"),
            "--config", str(site / "config.toml"), "--flags", str(site / "flags.yaml"),
            option, given,
        ],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert option in result.output and "--envelope" in result.output
    assert "sha256" not in result.output  # no contents table passed off as an answer
