"""`knightwatch up` restarted on a state dir whose roster the admins moved on meanwhile.

`up --nodes 1`, then the admins enrolled dave (`identity add`, `sign`, `publish`: version
4 stored on the server, not in the state dir's files), then `up --nodes 2`: the state dir
enrolled n2 as its own version 4, the server already held another one, provisioning
skipped it, and the roster in force never named n2: "nodes not admitted within 30 s: n2",
on every later start too (the diverging v4.json stayed). Now a restarted local fleet takes
the versions the server holds (verified from its anchor) first, adds what it lacks on top
as the next version, publishes it and rewrites its files; a state dir whose files
disagree with the server's verified history is refused at once, naming both versions.
Real processes and a real nats-server throughout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from .test_fleet_up_running import _stop
from .test_up_named_fleet import ENV, _identity, _started
from .test_up_named_fleet import fleets as fleets

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()


def _enrol_dave(state: Path, tmp_path: Path) -> None:
    """dave enrolled by the admins on the running fleet, as an admin desk does it."""
    made = runner.invoke(app, ["identity", "new", "dave", "--dir", str(tmp_path / "dave")])
    assert made.exit_code == 0, made.output
    proposal = tmp_path / "add-dave.json"
    code, out = _identity(state, "admin1", "add", "dave", "--public", tmp_path / "dave" /
                          "dave.pub", "--role", "operator", "--out", proposal)  # fmt: skip
    assert code == 0, out
    code, out = _identity(state, "admin2", "sign", proposal)
    assert code == 0, out
    code, out = _identity(state, "admin1", "publish", proposal)
    assert code == 0 and "published" in out, out


def test_a_restarted_fleet_with_more_nodes_keeps_what_the_admins_published(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    _started(fleets, state)
    files_before = Kit.read(state / "trust").roster.version
    _enrol_dave(state, tmp_path)
    assert _stop(fleets.pop()) == 0
    assert Kit.read(state / "trust").roster.version == files_before  # the server's alone

    out = _started(fleets, state, "--nodes", "2")
    assert "2 nodes admitted" in out, out
    code, out = _identity(state, "carol", "show")
    assert code == 0 and "dave" in out and "n2" in out, out
    # the files are the server's history and the version on top: the next start agrees
    kit = Kit.read(state / "trust")
    assert kit.roster.version == files_before + 2
    assert set(kit.roster.names_with(Role.NODE)) == {"n1", "n2"}
    assert "dave" in {m.name for m in kit.roster.members}
    assert _stop(fleets.pop()) == 0
    out = _started(fleets, state, "--nodes", "3")
    assert "3 nodes admitted" in out, out


def test_a_state_dir_whose_files_disagree_with_the_server_is_refused(
    tmp_path: Path, fleets: list[subprocess.Popen[str]]
) -> None:
    """The files an earlier release left: their own version where the server has dave's."""
    state = tmp_path / "state"
    _started(fleets, state)
    _enrol_dave(state, tmp_path)
    assert _stop(fleets.pop()) == 0
    kit = Kit.read(state / "trust")
    stored = kit.roster.version + 1
    kit.add("n2", [Role.NODE])  # the same version number, other members
    kit.write(state / "trust", private=list(kit.signers))

    done = subprocess.run(
        [sys.executable, "-m", "knightwatch", "up", "--nodes", "2", "--flow", "0",
         "--state-dir", str(state)],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert f"v{stored}.json: not the roster version {stored}" in said, said
    assert "the file's names n2, the server's dave" in said, said
    assert not (state / "nats.url").exists()  # its server stopped: refused, nothing runs
    # as it says: its own version moved aside, the server's is taken, n2 enrolled on top
    (state / "trust" / "roster" / f"v{stored}.json").rename(tmp_path / "aside.json")
    out = _started(fleets, state, "--nodes", "2")
    assert "2 nodes admitted" in out, out
    kit = Kit.read(state / "trust")
    assert {"dave", "n2"} <= {m.name for m in kit.roster.members}
    assert kit.roster.version == stored + 1
