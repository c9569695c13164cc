"""A replay is deterministic for a scenario and seed in everything it reports, the resume's
ramp included: its id was random, so two runs of one scenario printed different events,
control-plane commands and `--json` summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay
from knightwatch.sim.scenario import loads

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def _quick_resume() -> str:
    """scenario-small with a kill 10 s into the runaway, a resume 2 s after it, a 40 s stop."""
    text = SMALL.read_text(encoding="utf-8")
    for old, new in (
        ("duration_s = 120", "duration_s = 40"),
        ("arrival_end_s = 60", "arrival_end_s = 20"),
        ("notice_s = 20", "notice_s = 5"),
        ("reaction_s = 40", "reaction_s = 5\nresume_after_s = 2"),
    ):
        assert old in text
        text = text.replace(old, new)
    return text


def _summary() -> dict[str, Any]:
    r = Replay(loads(_quick_resume(), "quick"), resolve("kill_switch,rates")).run()
    assert r.resume is not None and r.resume.ramp  # the run resumed through a ramp
    out = r.summary()
    del out["wall_seconds"]
    return out


def test_a_resume_through_the_ramp_reports_the_same_on_every_run() -> None:
    first, second = _summary(), _summary()
    assert any("ramp " in e["what"] for e in first["events"])
    assert first == second
