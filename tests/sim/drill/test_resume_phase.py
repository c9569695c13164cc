"""The drill's resume phase on live processes and a real nats-server.

One drill run (4 nodes, one stale) gives every figure: an evidence snapshot
taken while the fleet is killed, which `incident verify` accepts and which
one edited byte breaks; the preflight passing with the stale node fenced and
the runaway node staying halted; a ramp through 10% -> 50% -> 100%; and a
second ramp tripped by a runaway re-injected during stage one, with the
orders that got out before the trip counted.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site
from knightwatch.sim.drill.drill import local_kit, run_drill


async def test_drill_snapshot_preflight_ramp_and_trip(tmp_path: Path) -> None:
    # a state directory whose path reads ".../[/drill]": the drill prints paths under it as
    # written (through console markup, "[/drill]" ended the drill with a traceback)
    (tmp_path / "[").mkdir()
    state = tmp_path / "[" / "drill]"
    kit = local_kit(state, [f"n{i}" for i in range(1, 5)])  # the cast the drill reuses
    site = Site(state, kit=kit)  # an authorized server serving that cast
    url = await site.astart()
    console = Console(record=True, width=200)
    try:
        report = await run_drill(4, 20.0, "n3", [url], state, console, stale=1)
    finally:
        site.stop()
    r = report.resume
    assert r is not None, console.export_text()
    printed = "".join(console.export_text().split())
    assert f"evidencesnapshot{state}/snapshot.tar:" in printed, printed
    assert report.passed and r.passed, console.export_text()

    # preflight: the stale node is fenced (never leased), the runaway stays halted
    items = {name: (ok, detail) for name, ok, detail in r.preflight}
    assert all(ok for ok, _ in items.values())
    assert "fenced, not trading: n4" in items["release"][1]
    assert "staying halted: n3" in items["alerts"][1]

    # a ramp that completes, stage by stage
    assert r.ramp_completed and r.ramp_stages == [0.1, 0.5, 1.0]

    # a ramp that trips on a runaway during stage one; the escaped orders are counted
    assert r.trip_node == "n1" and r.trip_stage == 0 and r.trip_confirmed
    assert r.trip_reason.startswith(("block-rate spike on node n1", "supervisor alert"))
    assert r.trip_orders_attempted > r.trip_orders_escaped >= 0
    # at 10% limits the runaway gets at most a tenth of its Guard's per-second budget out
    assert r.trip_orders_escaped <= 50 * (r.trip_ms / 1000 + 1)

    # the snapshot verifies, and one edited byte is found
    snapshot = Path(r.snapshot)
    runner = CliRunner()
    ok = runner.invoke(app, ["incident", "verify", str(snapshot)])
    assert ok.exit_code == 0 and "files intact" in " ".join(ok.output.split()), ok.output
    with tarfile.open(snapshot) as tar:
        names = tar.getnames()
    assert {"kill/entries.json", "recorder/heads.json", "nodes/admission.json"} <= set(names)
    assert {"nodes/clock_offsets_ms.json", "flags/state_and_history.json"} <= set(names)
    assert {"release/target.json", "supervisor/actions.jsonl"} <= set(names)
    data = bytearray(snapshot.read_bytes())
    at = data.index(b'"drill: fleet-wide kill"')
    data[at + 1] = ord("D")
    edited = tmp_path / "edited.tar"
    edited.write_bytes(bytes(data))
    bad = runner.invoke(app, ["incident", "verify", str(edited)])
    assert bad.exit_code == 1
    flat = " ".join(bad.output.split())
    assert "kill/entries.json: sha256 does not match the manifest" in flat, bad.output
