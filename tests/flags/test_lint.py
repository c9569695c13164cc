"""Lint: reused ids, dead code behind retired flags, hygiene, and the git history."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from knightwatch.cli.flags import app
from knightwatch.flags.findings import FindingCode
from knightwatch.flags.lint import run_lint

FIXTURES = Path(__file__).parent / "fixtures"
KNIGHT = FIXTURES / "knight_repo"
CLEAN = FIXTURES / "clean_repo"
DAY = date(2012, 8, 1)


def test_fixture_repo_reused_id_and_dead_code_with_file_line() -> None:
    report = run_lint(KNIGHT / "feature-flags.yaml", [KNIGHT], DAY)
    assert report.failed
    found = {(f.code, Path(f.path).name, f.line, f.flag_id) for f in report.findings}
    assert found == {
        (FindingCode.REUSED_ID, "feature-flags.yaml", 24, "trading.smars.power_peg"),
        (FindingCode.RETIRED_FLAG_REFERENCE, "router.py", 5, "trading.smars.power_peg"),
        (FindingCode.RETIRED_FLAG_REFERENCE, "router.py", 19, "trading.smars.power_peg"),
        (FindingCode.UNKNOWN_FLAG_REFERENCE, "router.py", 22, "trading.smars.legacy_sweep"),
    }
    guarded = next(f for f in report.findings if f.line == 19)
    assert "dead code" in guarded.message and "guards lines 19-21" in guarded.message


def test_cli_lint_fails_on_fixture_repo_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "findings.json"
    result = CliRunner().invoke(
        app,
        [
            "lint",
            "--registry",
            str(KNIGHT / "feature-flags.yaml"),
            "--today",
            "2012-08-01",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "router.py:19:" in result.output and "retired_flag_reference" in result.output
    assert "flags lint failed" in result.output
    codes = {f["code"] for f in json.loads(out.read_text())["findings"]}
    assert codes == {"reused_id", "retired_flag_reference", "unknown_flag_reference"}


def test_clean_registry_passes() -> None:
    report = run_lint(CLEAN / "feature-flags.yaml", [CLEAN], DAY)
    assert report.findings == () and report.files_scanned == 1
    result = CliRunner().invoke(
        app, ["lint", "--registry", str(CLEAN / "feature-flags.yaml"), "--today", "2012-08-01"]
    )
    assert result.exit_code == 0, result.output
    assert "flags lint passed" in result.output


def test_hygiene_findings(tmp_path: Path) -> None:
    (tmp_path / "feature-flags.yaml").write_text(
        """\
version: 1
flags:
  - id: SMARS
    description: the old style
    owner: smars-team
    created: 2012-07-01
    expires: 2013-01-01
    lifecycle: proposed
    safe_default: false
    trading_behaviour: true
  - id: trading.smars.no_owner
    description: nobody's
    created: 2012-07-01
    lifecycle: active
    safe_default: false
    trading_behaviour: true
  - id: trading.smars.stale
    description: forgotten
    owner: smars-team
    created: 2011-01-01
    expires: 2012-01-01
    lifecycle: active
    safe_default: false
    trading_behaviour: true
"""
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = {(f.code, f.line) for f in report.findings}
    assert found == {
        (FindingCode.NOT_NAMESPACED, 3),
        (FindingCode.MISSING_OWNER, 11),
        (FindingCode.MISSING_EXPIRY, 11),
        (FindingCode.EXPIRED_ACTIVE, 17),
    }


def test_registry_invalid_names_the_flags_line(tmp_path: Path) -> None:
    """A flag entry that does not load is reported at that entry's line (and a YAML error
    at its own line), not at line 1, so `path:line` leads to it."""
    registry = tmp_path / "feature-flags.yaml"
    good = """\
  - id: trading.smars.fine
    description: fine
    owner: smars-team
    created: 2012-07-01
    expires: 2013-01-01
    lifecycle: active
    safe_default: false
    trading_behaviour: true
"""
    registry.write_text(
        "version: 1\nflags:\n" + good + good.replace("fine", "wrong").replace("false", "maybe")
    )
    (finding,) = run_lint(registry, [tmp_path], DAY).findings
    assert finding.code is FindingCode.REGISTRY_INVALID
    assert finding.line == 11 and "trading.smars.wrong" in finding.message
    registry.write_text("version: 1\nflags:\n" + good + "  - id: [unclosed\n")
    (finding,) = run_lint(registry, [tmp_path], DAY).findings
    assert finding.code is FindingCode.REGISTRY_INVALID and finding.line == 12, finding


def test_configured_accessor_and_unparseable_source(tmp_path: Path) -> None:
    shutil.copy(CLEAN / "feature-flags.yaml", tmp_path / "feature-flags.yaml")
    (tmp_path / "a.py").write_text('if feature("risk.other.x"):\n    pass\n')
    (tmp_path / "b.py").write_text("def broken(:\n")
    default = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert [f.code for f in default.findings] == [FindingCode.SOURCE_UNPARSEABLE]
    assert not default.failed
    result = CliRunner().invoke(
        app,
        [
            "lint",
            "--registry",
            str(tmp_path / "feature-flags.yaml"),
            "--accessor",
            "feature",
            "--today",
            "2012-08-01",
        ],
    )
    assert result.exit_code == 1
    assert "a.py:1:" in result.output and "unknown_flag_reference" in result.output


def test_old_code_in_a_declared_encoding_is_scanned_not_skipped(tmp_path: Path) -> None:
    """Power Peg code in Latin-1 with its PEP 263 coding line, or UTF-8 with a byte-order
    mark, is Python that runs; lint called it "not UTF-8" / unparseable, warned and passed.
    A file Python itself cannot decode is still only a warning."""
    shutil.copy(CLEAN / "feature-flags.yaml", tmp_path / "feature-flags.yaml")
    peg = 'if flags.is_enabled("trading.smars.power_peg"):  # caf\u00e9\n    route()\n'
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\n" + peg.encode("latin-1"))
    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbf" + peg.encode())
    (tmp_path / "bad.py").write_bytes(b"x = '\xe9'\n")
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = {(Path(f.path).name, f.line, f.code) for f in report.findings}
    assert found == {
        ("bad.py", 1, FindingCode.SOURCE_UNPARSEABLE),
        ("bom.py", 1, FindingCode.RETIRED_FLAG_REFERENCE),
        ("latin.py", 2, FindingCode.RETIRED_FLAG_REFERENCE),
    }
    assert report.failed


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


REGISTRY_V1 = (CLEAN / "feature-flags.yaml").read_text()


def _commit(repo: Path, text: str, message: str) -> None:
    (repo / "feature-flags.yaml").write_text(text)
    _git(repo, "add", "feature-flags.yaml")
    _git(repo, "commit", "-q", "-m", message)


def test_history_finds_id_redefined_in_a_later_commit(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _commit(tmp_path, REGISTRY_V1, "add flags")
    # The second commit edits the description of a live flag in place (its recorded
    # hashes removed so the single-version check cannot see it): a new meaning, old id.
    redefined = "\n".join(
        line for line in REGISTRY_V1.splitlines() if "definition_hash" not in line
    ).replace("NYSE Retail Liquidity Program.", "Power Peg parent orders.")
    _commit(tmp_path, redefined + "\n", "reuse the id")
    registry = tmp_path / "feature-flags.yaml"
    assert not run_lint(registry, [tmp_path], DAY).failed
    report = run_lint(registry, [tmp_path], DAY, history=True)
    assert report.versions_checked == 3
    redefinitions = [f for f in report.findings if f.code is FindingCode.REDEFINED_ID]
    assert len(redefinitions) == 1
    assert redefinitions[0].flag_id == "trading.smars.rlp_enabled"
    assert redefinitions[0].message.startswith("commit ")
    result = CliRunner().invoke(
        app, ["lint", "--registry", str(registry), "--history", "--today", "2012-08-01"]
    )
    assert result.exit_code == 1 and "redefined_id" in result.output


def test_history_finds_removed_tombstone_and_resurrection(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _commit(tmp_path, REGISTRY_V1, "add flags")
    without_peg = REGISTRY_V1.split("  - id: trading.smars.power_peg")[0]
    _commit(tmp_path, without_peg, "drop the tombstone")
    _commit(tmp_path, REGISTRY_V1.replace("lifecycle: retired", "lifecycle: active"), "revive")
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY, history=True)
    codes = {(f.code, f.flag_id) for f in report.findings}
    assert (FindingCode.TOMBSTONE_REMOVED, "trading.smars.power_peg") in codes
    assert (FindingCode.LIFECYCLE_REGRESSED, "trading.smars.power_peg") in codes
    assert report.failed


def test_history_outside_git_is_an_error(tmp_path: Path) -> None:
    shutil.copy(CLEAN / "feature-flags.yaml", tmp_path / "feature-flags.yaml")
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY, history=True)
    assert [f.code for f in report.findings] == [FindingCode.HISTORY_UNAVAILABLE]
    assert report.failed


def test_history_keeps_the_first_meaning_of_a_flag_added_in_a_broken_commit(
    tmp_path: Path,
) -> None:
    _git(tmp_path, "init", "-q")
    _commit(tmp_path, REGISTRY_V1, "add flags")
    # One commit both breaks another flag (a recorded hash that does not match) and
    # introduces a new flag; the next commit fixes the break and changes the new flag's
    # meaning under the same id. The ledger must still know the first meaning.
    new_flag = (
        "  - id: trading.smars.new_router\n"
        "    description: Route to venue A.\n"
        "    owner: smars-team\n"
        "    created: 2012-07-20\n"
        "    expires: 2099-12-31\n"
        "    lifecycle: active\n"
        "    safe_default: false\n"
        "    trading_behaviour: true\n"
    )
    broken = REGISTRY_V1.replace("definition_hash: cf4a47c5", "definition_hash: 00000000", 1)
    _commit(tmp_path, broken + new_flag, "add new_router (and break rlp)")
    _commit(
        tmp_path,
        REGISTRY_V1 + new_flag.replace("Route to venue A.", "Route to venue B."),
        "fix rlp; reuse new_router",
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY, history=True)
    redefined = [f for f in report.findings if f.code is FindingCode.REDEFINED_ID]
    assert [f.flag_id for f in redefined] == ["trading.smars.new_router"]
    assert "changed meaning" in redefined[0].message
    assert report.failed


def test_history_with_a_version_that_is_not_utf8_is_a_named_warning_not_a_traceback(
    tmp_path: Path,
) -> None:
    """git output was decoded as text, strictly: one committed version with a Latin-1
    byte ended `flags lint --history` with a UnicodeDecodeError. That version is named
    and skipped like any version that does not parse; the rest is still checked."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "feature-flags.yaml").write_bytes(b"version: 1\nflags: []\n# caf\xe9\n")
    _git(tmp_path, "add", "feature-flags.yaml")
    _git(tmp_path, "commit", "-q", "-m", "latin-1 comment")
    _commit(tmp_path, REGISTRY_V1, "add flags")
    without_peg = REGISTRY_V1.split("  - id: trading.smars.power_peg")[0]
    _commit(tmp_path, without_peg, "drop the tombstone")
    registry = tmp_path / "feature-flags.yaml"
    report = run_lint(registry, [tmp_path], DAY, history=True)
    skipped = [f for f in report.findings if f.code is FindingCode.REGISTRY_INVALID]
    assert len(skipped) == 1 and "feature-flags.yaml: not UTF-8 text (byte 26, line 3" in (
        skipped[0].message
    )
    codes = {(f.code, f.flag_id) for f in report.findings}
    assert (FindingCode.TOMBSTONE_REMOVED, "trading.smars.power_peg") in codes
    result = CliRunner().invoke(
        app, ["lint", "--registry", str(registry), "--history", "--today", "2012-08-01"]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1 and "tombstone_removed" in result.output, result.output


def test_history_follows_the_registry_across_a_move(tmp_path: Path) -> None:
    """The commit that moved the registry into `config/` also dropped the Power Peg
    tombstone. `--history` started the file's history at the move, where the tombstone
    was already gone, and passed."""
    _git(tmp_path, "init", "-q")
    _commit(tmp_path, REGISTRY_V1, "add flags")
    (tmp_path / "config").mkdir()
    _git(tmp_path, "mv", "feature-flags.yaml", "config/feature-flags.yaml")
    moved = tmp_path / "config" / "feature-flags.yaml"
    moved.write_text(REGISTRY_V1.split("  - id: trading.smars.power_peg")[0])
    _git(tmp_path, "commit", "-q", "-am", "tidy: move the registry")
    report = run_lint(moved, [tmp_path / "config"], DAY, history=True)
    assert report.versions_checked == 3
    removed = [f for f in report.findings if f.code is FindingCode.TOMBSTONE_REMOVED]
    assert [f.flag_id for f in removed] == ["trading.smars.power_peg"], report.findings
    assert removed[0].message.startswith("commit ")
    assert report.failed


def test_code_in_a_symlinked_directory_is_scanned_and_a_link_loop_ends(tmp_path: Path) -> None:
    """`Path.rglob` does not enter a symlinked directory: a package linked into the source
    tree (a vendored or shared module) was never scanned, and its Power Peg code passed lint
    unsaid. It is scanned like any other directory; a link back to a directory above it is
    not entered again (its files are scanned once, where they are), so the walk ends."""
    repo = tmp_path / "repo"
    outside = tmp_path / "shared"
    repo.mkdir()
    outside.mkdir()
    shutil.copy(CLEAN / "feature-flags.yaml", repo / "feature-flags.yaml")
    (outside / "peg.py").write_text('if is_enabled("trading.smars.power_peg"):\n    pass\n')
    (repo / "smars").symlink_to(outside, target_is_directory=True)
    (outside / "back").symlink_to(repo, target_is_directory=True)  # smars/back/smars/...: a loop
    report = run_lint(repo / "feature-flags.yaml", [repo], DAY)
    found = {(f.code, f.path, f.line) for f in report.findings}
    assert (FindingCode.RETIRED_FLAG_REFERENCE, str(repo / "smars" / "peg.py"), 1) in found
    assert report.failed and report.files_scanned == 1
