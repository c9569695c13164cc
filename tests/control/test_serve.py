from __future__ import annotations

from pathlib import Path

from knightwatch.control.serve import default_recorder_path


def test_default_flight_recorder_lives_under_the_state_dir(tmp_path: Path) -> None:
    assert default_recorder_path(tmp_path, "n7") == tmp_path / "audit" / "n7.jsonl"
