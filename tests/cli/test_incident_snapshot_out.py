"""`incident snapshot --out` is checked before anything connects or is collected.

An `--out` naming earlier evidence (or a link, a directory, a path under a file) was
refused only after the whole snapshot had been collected: the evidence of minutes of
listening and reading was thrown away at the end, during an incident, and the operator
had to take it again with the fleet further from the kill. Each is now one line, exit 2,
before any key is read or any server is dialled; the archive's write at the end stays
exclusive (`write_new`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site
from knightwatch.incident.snapshot import verify_snapshot

NOWHERE = "nats://127.0.0.1:1"


def _file(p: Path) -> tuple[Path, str]:
    p.write_bytes(b"earlier evidence")
    return p, "already exists; refusing to overwrite it"


def _dangling_link(p: Path) -> tuple[Path, str]:
    p.symlink_to(p.parent / "nowhere.tar")
    return p, "already exists; refusing to overwrite it"


def _link_to_evidence(p: Path) -> tuple[Path, str]:
    (p.parent / "kept.tar").write_bytes(b"earlier evidence")
    p.symlink_to(p.parent / "kept.tar")
    return p, "already exists; refusing to overwrite it"


def _directory(p: Path) -> tuple[Path, str]:
    p.mkdir()
    return p, "is a directory; --out must name a file"


def _under_a_file(p: Path) -> tuple[Path, str]:
    p.write_bytes(b"a file")
    return p / "snap.tar", "is not a directory"


@pytest.mark.parametrize(
    "make", [_file, _dangling_link, _link_to_evidence, _directory, _under_a_file]
)
def test_an_out_that_cannot_take_the_archive_is_refused_before_collecting(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]]
) -> None:
    out, said = make(tmp_path / "evidence.tar")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(
        app,
        ["incident", "snapshot", "--out", str(out), "--nats-url", NOWHERE,
         "--state-dir", str(tmp_path / "state"), "--key", str(tmp_path / "no.key")],
    )  # fmt: skip
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, text
    # before: the key was read and the server dialled first ("no.key ..." / "cannot
    # reach"), and with a fleet up the evidence was collected, then thrown away
    assert f"error: --out {out}" in text and said in text, text
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "state").exists()


@pytest.mark.timeout(90)
def test_a_default_name_taken_that_second_gets_the_next_one(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --out the archive is named by the second it was taken in: a second snapshot
    in that second found the name taken, and its evidence, collected by then, was thrown
    away ("choose another --out"). It now takes the next free name, `-2` on."""
    monkeypatch.chdir(tmp_path)
    start = datetime.now(tz=UTC)
    planted = set()
    for s in range(-2, 300):  # every default name the next five minutes could give it
        name = f"snapshot-{(start + timedelta(seconds=s)).strftime('%Y%m%dT%H%M%SZ')}.tar"
        (tmp_path / name).write_bytes(b"earlier evidence")
        planted.add(name)
    result = CliRunner().invoke(app, ["incident", "snapshot"], env=nats_server.cli_env("alice"))
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert all((tmp_path / n).read_bytes() == b"earlier evidence" for n in planted)
    (written,) = {p.name for p in tmp_path.glob("snapshot-*.tar")} - planted
    assert written.endswith("Z-2.tar") and f"snapshot {written}:" in out, out
    assert verify_snapshot((tmp_path / written).read_bytes(), source=written).ok
