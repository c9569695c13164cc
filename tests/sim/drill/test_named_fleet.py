"""The live drill on a named fleet (`Roster.fleet`), end to end on real processes.

The drill set its release as the fleet's target with a request and an approval naming no
fleet, so on a named fleet the admission service refused it (wrong_fleet) and the drill
ended before a node started. Now the target is requested for the fleet the roster in force
names, and the drill's resumes (which name it too) pass: the whole drill passes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from knightwatch.control.plane.connect import FleetError
from knightwatch.control.site import Site
from knightwatch.sim.drill.drill import local_kit, run_drill
from knightwatch.state import TradingState
from knightwatch.trust.command import check_state
from knightwatch.trust.kit import Kit


async def test_the_drill_passes_on_a_named_fleet(tmp_path: Path) -> None:
    state = tmp_path / "drill"
    kit = local_kit(state, ["n1", "n2", "n3"], fleet="drill-ldn")
    assert kit.roster.fleet == "drill-ldn"
    site = Site(state, kit=kit)
    url = await site.astart()
    console = Console(record=True, width=200)
    try:
        report = await run_drill(3, 20.0, "n2", [url], state, console, resume_phase=False)
    finally:
        site.stop()
    assert report.passed and report.halted and not report.kill_missing, console.export_text()


async def test_the_drill_runs_as_the_fleet_its_admins_named(tmp_path: Path) -> None:
    """Named by a version the admins published (`identity name`), not in the drill's files:
    its target request and its resumes name the fleet of the roster in force."""
    state = tmp_path / "drill"
    kit = local_kit(state, ["n1", "n2", "n3"])
    site = Site(state, kit=kit)
    url = await site.astart()
    console = Console(record=True, width=200)
    try:
        await site.publish(
            kit.name("drill-ldn")
        )  # stored on the server, the files left as they were
        assert Kit.read(state / "trust").roster.fleet == ""
        report = await run_drill(3, 20.0, "n2", [url], state, console, resume_phase=False)
        plane = await site.connect("carol")
        try:
            left = [e for e, _ in (await plane.states()).values() if e is not None]
        finally:
            await plane.close()
    finally:
        site.stop()
    assert report.passed, console.export_text()
    # the drill's last step resumed what it killed, and each resume counts on this fleet's
    # roster (one naming no fleet was stored, and refused by every node: wrong_fleet)
    assert left and all(e.state is TradingState.ACTIVE for e in left), left
    for e in left:
        check_state(e.command(), e.proof, kit.roster, now_ns=time.time_ns(), live=False)


def test_a_local_fleet_keeps_its_name(tmp_path: Path) -> None:
    unnamed = local_kit(tmp_path, ["n1"])
    assert unnamed.roster.fleet == ""
    named = local_kit(tmp_path, ["n1"], fleet="dev-ldn")  # an unnamed one is named once
    assert named.roster.fleet == "dev-ldn"
    assert named.roster.version == unnamed.roster.version + 1
    assert local_kit(tmp_path, ["n1"]).roster.fleet == "dev-ldn"  # read back from its files
    with pytest.raises(FleetError, match=r"--fleet prod-ldn: the fleet in .* is named 'dev-ldn'"):
        local_kit(tmp_path, ["n1"], fleet="prod-ldn")
