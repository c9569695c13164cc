"""A flag's `history` is append-only across versions of the registry.

Who retired Power Peg, and when, is the record: an entry edited or dropped in a later
commit passed `flags lint --history` (only meaning and lifecycle were compared).
"""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from knightwatch.flags.findings import FindingCode
from knightwatch.flags.lint import run_lint
from knightwatch.flags.registry import RegistryLedger, parse_registry

DAY = date(2012, 8, 1)

HEAD = """\
version: 1
flags:
  - id: trading.smars.power_peg
    description: Power Peg test order generator
    owner: smars-team
    created: 2003-01-01
    lifecycle: retired
    safe_default: false
    trading_behaviour: true
    history:
"""
CREATED = "      - {at: 2003-01-01, actor: alice, action: created}\n"
RETIRED = "      - {at: 2005-06-01, actor: bob, action: retired, note: code removed}\n"
LATER = "      - {at: 2012-07-31, actor: carol, action: audited}\n"


def _admit(*versions: str) -> list[tuple[FindingCode, str]]:
    ledger = RegistryLedger()
    found: list[tuple[FindingCode, str]] = []
    for number, text in enumerate(versions, 1):
        doc = parse_registry(text, "r.yaml")
        found += [(f.code, f.message) for f in ledger.admit(doc, f"v{number}")]
    return found


@pytest.mark.parametrize(
    ("later", "how"),
    [
        (CREATED, "removed"),  # the retirement entry dropped
        (RETIRED, "changed"),  # the first entry dropped
        (CREATED + RETIRED.replace("bob", "mallory"), "changed"),
        (CREATED + RETIRED.replace("2005-06-01", "2005-06-02"), "changed"),
        (CREATED + RETIRED.replace("code removed", "kept"), "changed"),
        (RETIRED + CREATED, "changed"),  # reordered
        (CREATED + LATER + RETIRED, "changed"),  # inserted before an entry
        ("      []\n", "removed"),
    ],
)
def test_a_rewritten_history_entry_is_an_error(later: str, how: str) -> None:
    found = _admit(HEAD + CREATED + RETIRED, HEAD + later)
    rewritten = [m for c, m in found if c is FindingCode.HISTORY_REWRITTEN]
    assert len(rewritten) == 1, found
    assert rewritten[0].startswith("v2: flag 'trading.smars.power_peg': history entry ")
    assert f"was {how}; a flag's history is append-only" in rewritten[0]


def test_entries_appended_after_the_last_are_accepted() -> None:
    assert _admit(HEAD + CREATED, HEAD + CREATED + RETIRED, HEAD + CREATED + RETIRED + LATER) == []


def test_the_rewrite_is_judged_against_the_last_accepted_version() -> None:
    """An entry appended in v2 is part of the record from then on: v3 dropping it is
    reported, as is v3 dropping an entry v1 held."""
    found = _admit(HEAD + CREATED, HEAD + CREATED + RETIRED, HEAD + CREATED)
    assert [c for c, _ in found] == [FindingCode.HISTORY_REWRITTEN]
    assert "history entry 2 (2005-06-01 retired by 'bob'" in found[0][1]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


def test_lint_history_fails_a_history_entry_rewritten_in_the_working_tree(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "feature-flags.yaml"
    _git(tmp_path, "init", "-q")
    registry.write_text(HEAD + CREATED + RETIRED)
    _git(tmp_path, "add", "feature-flags.yaml")
    _git(tmp_path, "commit", "-q", "-m", "retire power peg")
    registry.write_text(HEAD + CREATED + RETIRED.replace("bob", "mallory"))
    report = run_lint(registry, [tmp_path], DAY, history=True)
    assert report.failed
    (finding,) = [f for f in report.findings if f.code is FindingCode.HISTORY_REWRITTEN]
    assert finding.message.startswith("working tree: flag 'trading.smars.power_peg'")
    assert finding.line == 3
