"""`incident verify` shows an archive's own text with its control characters escaped.

A member name in the archive and the `incomplete.json` lines are the archive's text,
whoever made it: printed raw, a name such as "\\r\\x1b[2K" followed by a green "OK ...
files intact" erased the FAIL line of a tampered archive and drew an OK in its place
(only the exit code still said 1), and a gap line could erase the one above it. They
are written as their escapes, as status and preflight print stored text.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.incident.snapshot import INCOMPLETE, seal
from knightwatch.release.keys import SigningKey

runner = CliRunner()
T = 1_700_000_000_000_000_000
FORGED = "\r\x1b[2K\x1b[32mOK\x1b[0m s.tar: 3 files intact"


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_member_added_under_a_hostile_name_is_failed_with_its_name_escaped(
    tmp_path: Path,
) -> None:
    sealed = seal(
        {"kill/entries.json": b"{}"}, SigningKey.generate(), actor="a", reason="r", taken_ns=T
    )
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(sealed)) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        extra = tarfile.TarInfo(f"zz{FORGED}")
        extra.size = 2
        dst.addfile(extra, io.BytesIO(b"{}"))
    archive = tmp_path / "s.tar"
    archive.write_bytes(out.getvalue())
    code, text = _run("incident", "verify", str(archive))
    assert code == 1, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert "FAIL zz\\r\\x1b[2K" in text and "in the archive, not in the manifest" in text, text


def test_incomplete_lines_are_shown_with_control_characters_escaped(tmp_path: Path) -> None:
    gaps = json.dumps([f"recorder/n1.jsonl: gone{FORGED}"]).encode()
    archive = tmp_path / "s.tar"
    archive.write_bytes(
        seal({INCOMPLETE: gaps}, SigningKey.generate(), actor="a", reason="r", taken_ns=T)
    )
    code, text = _run("incident", "verify", str(archive))
    assert code == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert "incomplete: recorder/n1.jsonl: gone\\r\\x1b[2K" in text, text
