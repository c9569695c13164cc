"""`knightwatch gateway` options, through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_artifacts_option_is_refused_not_read_as_this_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """`--artifacts "$DIR"` with DIR unset arrives as "", which a Path reads as `.`: the
    gateway would attest whatever directory it was started in as its installed release.
    Refused naming the option (exit 2) before anything is read or connected."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        'listen_port = 1\nassume_flat = true\n[venue]\nport = 2\n[[clients]]\ncomp_id = "OMS"\n'
    )
    out = CliRunner().invoke(
        app,
        ["gateway", str(cfg), "--key", str(tmp_path / "node.key"), "--artifacts", value,
         "--release-config", str(cfg), "--flags", str(tmp_path / "flags.yaml")],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert out.exit_code == 2, out.output
    assert "'--artifacts': empty path" in out.output


@pytest.mark.parametrize("lots", ["L000=0", "L000=-1", "L000=NaN", "L000=Infinity", "=1"])
def test_a_venue_lot_that_is_no_size_is_refused_naming_the_option(
    tmp_path: Path, lots: str
) -> None:
    """A lot of 0 (or negative, NaN, infinite, or for no symbol) was accepted and the
    venue failed on its first order (`qty % 0`); refused before anything starts."""
    out = CliRunner().invoke(
        app,
        ["venue", "--fix", "--port", "1", "--lots", lots, "--state-dir", str(tmp_path / "v")],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 2, out.output
    assert f"--lots: {lots!r}: a symbol and a lot size > 0" in out.output
    assert "Traceback" not in out.output and not (tmp_path / "v").exists()
