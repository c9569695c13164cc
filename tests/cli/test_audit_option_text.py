"""`knightwatch audit verify`: a path given to an option is the operator's text, shown as
written in the one-line error (exit 2, unreadable), never read as markup: a key or anchor
file named "[/x]" that cannot be read ended the command with a MarkupError traceback and
exit 1, which `audit verify` documents as "tampered"."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app

from ..audit.conftest import WriteFile

runner = CliRunner()


def test_key_path_with_markup_is_a_one_line_error(
    write_file: WriteFile, audit_path: Path, tmp_path: Path
) -> None:
    write_file(4)
    key = tmp_path / "[/x]" / "node.pub"
    result = runner.invoke(app, ["audit", "verify", str(audit_path), "--key", str(key)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "[/x]" in result.output


def test_trust_anchor_path_with_markup_is_a_one_line_error(
    write_file: WriteFile, audit_path: Path, tmp_path: Path
) -> None:
    write_file(4)
    anchor = tmp_path / "[/x]" / "anchor.toml"
    result = runner.invoke(
        app,
        [
            "audit", "verify", str(audit_path), "--nats-url", "nats://127.0.0.1:1",
            "--trust-anchor", str(anchor),
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "[/x]" in result.output


def test_empty_nats_url_is_refused_not_skipped(write_file: WriteFile, audit_path: Path) -> None:
    """`--nats-url "$NATS_URL"` with the variable unset asked for the control plane's
    checkpoint and key; the empty value skipped that check without a word and the chain
    alone was reported INTACT (exit 0)."""
    write_file(4)
    for given in ("", " , "):
        result = runner.invoke(app, ["audit", "verify", str(audit_path), "--nats-url", given])
        assert result.exit_code == 2, (given, result.output)
        assert "--nats-url" in result.output and "INTACT" not in result.output


def test_nats_url_that_is_no_url_is_named(write_file: WriteFile, audit_path: Path) -> None:
    write_file(4)
    result = runner.invoke(
        app, ["audit", "verify", str(audit_path), "--nats-url", "not a url", "--node", "n1"]
    )
    assert result.exit_code == 2, result.output
    assert "error: --nats-url:" in result.output and "not a url" in result.output


def test_missing_trust_anchor_is_named_once(write_file: WriteFile, audit_path: Path) -> None:
    write_file(4)
    result = runner.invoke(
        app,
        ["audit", "verify", str(audit_path), "--nats-url", "nats://127.0.0.1:1", "--node", "n1"],
        env={"KNIGHTWATCH_ANCHOR": ""},
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --trust-anchor:"), result.output
