"""A replay's audit directory holds this run's flight records only: a `--report` directory
used again kept an earlier run's node files, which `replay` then announced as its own and
`audit why` answered from (an unguarded run writes none, a smaller fleet fewer)."""

from __future__ import annotations

from pathlib import Path

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay
from knightwatch.sim.scenario import loads

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"
EARLIER = b'{"an earlier run": true}\n'


def _short() -> str:
    """scenario-small (4 nodes) stopped at 20 s."""
    text = SMALL.read_text(encoding="utf-8")
    for old, new in (
        ("duration_s = 120", "duration_s = 20"),
        ("arrival_end_s = 60", "arrival_end_s = 10"),
        ("rollback_s = 30", "rollback_s = 10"),
    ):
        assert old in text
        text = text.replace(old, new)
    return text


def _earlier_run(audit: Path, nodes: int) -> None:
    audit.mkdir(parents=True, exist_ok=True)
    for i in range(1, nodes + 1):
        (audit / f"n{i}.jsonl").write_bytes(EARLIER)


def test_an_unguarded_run_leaves_no_earlier_runs_records_behind(tmp_path: Path) -> None:
    audit = tmp_path / "report" / "audit"
    _earlier_run(audit, 4)
    Replay(loads(_short(), "short"), resolve("none"), audit_dir=audit).run()
    assert not audit.exists()  # nothing recorded: no directory that says otherwise


def test_a_smaller_fleet_keeps_only_its_own_node_files(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    _earlier_run(audit, 8)
    (audit / "notes.txt").write_bytes(b"mine")
    Replay(loads(_short(), "short"), resolve("rates"), audit_dir=audit).run()
    assert sorted(p.name for p in audit.iterdir()) == [
        *(f"n{i}.jsonl" for i in range(1, 5)),
        "notes.txt",
    ]
    for i in range(1, 5):
        assert (audit / f"n{i}.jsonl").read_bytes() != EARLIER  # this run's chain


def test_an_unguarded_run_keeps_a_directory_holding_other_files(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    _earlier_run(audit, 2)
    (audit / "notes.txt").write_bytes(b"mine")
    Replay(loads(_short(), "short"), resolve("none"), audit_dir=audit).run()
    assert [p.name for p in audit.iterdir()] == ["notes.txt"]
