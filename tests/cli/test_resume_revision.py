"""`knightwatch resume --revision N`: a resume request pinned to the halt its requester reviewed.

The console's request carried the revision of the halt it showed, the CLI's did not: an
operator read `status` (a kill at revision N), another person killed again on top ("runaway
again"), and `resume` made a request decided on that new kill, which an approver then lifted
though its requester never saw it. Now `--revision N` (the rev `status` shows) refuses the
request, exit 1, in one line naming both revisions, and makes none; checked again where the
request is made, so a kill stored while the preflight runs refuses it too. `up` as a real
process (real nats-server, real nodes), the CLI run as the other CLI tests run it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.fleet import session
from knightwatch.cli.incident import resume_flow
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.approvals import RequestMoved
from knightwatch.control.fleet.killswitch import KillSwitch
from knightwatch.control.plane.connect import control_plane, recorded_url
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.state import Scope
from knightwatch.trust.identity import load_signer

from .test_status_stored_resume import entry_cells

runner = CliRunner()
pytestmark = pytest.mark.timeout(120)
WAIT = ("--timeout", "20")


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def as_(state: Path, name: str) -> list[str]:
    return ["--state-dir", str(state), "--key", str(state / "trust" / "keys" / f"{name}.key")]


def shown_revision(state: Path) -> int:
    """The rev `status` shows for the fleet's kill, as an operator copies it."""
    code, out = invoke("status", *as_(state, "carol"))
    assert code == 0, out
    scope, *_, rev = entry_cells(out)
    assert scope == "fleet", out
    return int(rev)


async def stored_requests(state: Path) -> dict[str, tuple[bytes, int]]:
    carol = load_signer(state / "trust" / "keys" / "carol.key", "carol")
    async with control_plane(recorded_url(state), state, "t", signer=carol) as plane:
        return await plane.records(Bucket.APPROVALS)


def killed_twice(state: Path) -> tuple[int, int]:
    """A fleet kill the operator reviewed (its revision as `status` shows it), then another
    person's kill on top ("runaway again"): both revisions."""
    revisions = []
    for reason in ("incident", "runaway again"):
        code, out = invoke("kill", "--reason", reason, *WAIT, *as_(state, "alice"))
        assert code == 0, out
        revisions.append(shown_revision(state))
    reviewed, now = revisions
    assert now > reviewed
    return reviewed, now


def test_a_resume_pinned_to_a_revision_a_new_kill_replaced_is_refused(fleet_up: Path) -> None:
    reviewed, now = killed_twice(fleet_up)

    code, out = invoke(
        "resume", "--reason", "all clear", "--revision", str(reviewed), *as_(fleet_up, "alice")
    )
    assert code == 1, out
    said = [line for line in out.splitlines() if "resume refused" in line]
    assert len(said) == 1, out  # one line: both revisions and what is stored now
    assert f"--revision {reviewed}: fleet 'fleet' was stored again since" in said[0], out
    assert f"(revision {now} now: HALTED by 'alice': 'runaway again')" in said[0], out
    assert "preflight" not in out, out  # refused before a preflight halts or pages anyone
    assert asyncio.run(stored_requests(fleet_up)) == {}  # no request was made

    code, out = invoke(
        "resume", "--symbol", "NEVER", "--reason", "x", "--revision", str(now),
        *as_(fleet_up, "alice"),
    )  # fmt: skip
    assert code == 1, out
    assert f"--revision {now}: symbol 'NEVER' has no entry stored (never killed)" in out, out

    # the revision stored now, as `status` shows it: requested, decided on it
    code, out = invoke(
        "resume", "--reason", "all clear", "--revision", str(now), *as_(fleet_up, "alice")
    )
    assert code == 0, out
    assert f"(of the halt at revision {now})" in out, out
    assert re.search(r"approve (\w+)", out) is not None, out


def test_a_kill_stored_while_the_request_is_made_refuses_it(fleet_up: Path) -> None:
    """The revision checked again where the request is made: a kill stored after the first
    check (while the preflight ran) refuses it, and nothing is written. The kill switch the
    CLI's flow made before passed no revision: the request was decided on the kill its
    requester never saw."""
    reviewed, now = killed_twice(fleet_up)

    alice = fleet_up / "trust" / "keys" / "alice.key"

    async def request(shown: int) -> None:
        async with session("", fleet_up, "t", alice, None) as (plane, signer, store):
            ks = KillSwitch(plane, SystemClock(), signer, store)
            await resume_flow(plane, ks, Scope.FLEET, FLEET_KEY, "all clear", shown=shown)

    with pytest.raises(RequestMoved) as moved:
        asyncio.run(request(reviewed))
    assert (moved.value.shown, moved.value.now) == (reviewed, now)
    assert asyncio.run(stored_requests(fleet_up)) == {}


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "", str(2**63)])
def test_a_revision_no_halt_can_have_is_refused_naming_the_option(bad: str, tmp_path: Path) -> None:
    code, out = invoke(
        "resume", "--reason", "x", "--revision", bad, "--state-dir", str(tmp_path / "s")
    )
    assert code == 2 and "'--revision'" in out, out
    assert not (tmp_path / "s").exists()  # refused before anything connects or is written
