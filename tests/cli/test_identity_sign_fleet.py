"""`knightwatch identity sign` signs only a proposal made for the fleet it runs on.

The same admins may anchor a staging and a production fleet. `identity sign` checked
only that the proposal's version followed the roster in force where the signer ran it:
an admin asked to "sign this staging change" (run against staging) signed a version
that named prod-ldn, and the proposer then published it on prod-ldn, where it counted
with both signatures. A proposal naming another fleet, or none on a named fleet, is
refused before it is signed (`wrong_fleet`), the file left as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site
from knightwatch.release.dsse import encode_envelope
from knightwatch.trust.roster import roster_envelope, sign_roster

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path / "site", nodes=("n1",), fleet="staging")
    try:
        site.start()
        yield site
    finally:
        site.stop()


def invoke(site: Site, who: str, *args: str | Path) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [str(a) for a in (*args, "--state-dir", site.root / "cli-state")],
        env={"COLUMNS": "250", **site.cli_env(who)},
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def proposal_for(site: Site, path: Path, fleet: str) -> bytes:
    """admin1's proposal of the next version of `site`'s roster, naming `fleet`."""
    roster = site.kit.roster
    proposed = msgspec.structs.replace(
        roster, version=roster.version + 1, issued_ns=time.time_ns(), fleet=fleet
    )
    data = encode_envelope(sign_roster(roster_envelope(proposed), site.signer("admin1").key))
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("fleet", ["prod-ldn", ""])
def test_a_proposal_for_another_fleet_is_not_signed(
    staging: Site, tmp_path: Path, fleet: str
) -> None:
    path = tmp_path / "proposal.json"
    data = proposal_for(staging, path, fleet)
    code, out = invoke(staging, "admin2", "identity", "sign", path)
    assert code == 2, out
    assert "wrong_fleet" in out and "this is fleet 'staging'" in out, out
    assert path.read_bytes() == data  # not signed: nothing to replay elsewhere


def test_a_proposal_for_this_fleet_is_signed_and_says_so(staging: Site, tmp_path: Path) -> None:
    path = tmp_path / "proposal.json"
    data = proposal_for(staging, path, "staging")
    code, out = invoke(staging, "admin2", "identity", "sign", path)
    assert code == 0 and "signed by admin1, admin2 (roster version" in out, out
    assert "fleet staging)" in out, out
    assert path.read_bytes() != data
