"""Bad paths and values given to the CLI: one line naming the option or the key and the rule,
never a vague line nor a limit that is two limits depending on how an order spells it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["disable", "bob"],
        ["enable", "bob"],
        ["token", "bob", "--role", "viewer"],
        ["passwd", "bob"],
    ],
)
def test_an_empty_users_path_is_refused_naming_the_option(
    tmp_path: Path, command: list[str]
) -> None:
    # `--users "$USERS"` with USERS unset: it was read as `.` and ended
    # "error: PosixPath('.') has an empty name", naming neither the option nor the rule
    args = ["console", "user", *command, "--users", "", "--state-dir", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "--users" in result.output and "empty path" in result.output, result.output
    assert "PosixPath" not in result.output


@pytest.mark.parametrize(
    ("first", "second"), [("IBM", "ibm"), ("ibm", "IBM"), ("BRK.B", "brk.b"), ("Gme", "gME")]
)
def test_one_symbol_in_two_cases_is_refused_naming_both(
    tmp_path: Path, first: str, second: str
) -> None:
    # the Guard holds a symbol in any case as one security (restricted list, halts): two
    # override tables for it passed, and an order spelt the looser way traded at 50,000
    path = tmp_path / "limits.toml"
    path.write_text(
        f'version = "v1"\n[symbol."{first}"]\nmax_order_qty = 5\n'
        f'[symbol."{second}"]\nmax_order_qty = 50000\n'
    )
    result = runner.invoke(app, ["limits", "check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "another case" in line]
    assert len(lines) == 1, result.output
    assert str(path) in lines[0] and f"symbol.'{second}'" in lines[0], lines[0]
    assert f"symbol.'{first}'" in lines[0], lines[0]


def test_distinct_symbols_and_a_strategy_of_the_same_name_stay_valid(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        'version = "v1"\n[symbol.IBM]\nmax_order_qty = 5\n[symbol.IBMX]\nmax_order_qty = 6\n'
        "[strategy.ibm]\nmax_order_qty = 7\n"
    )
    result = runner.invoke(app, ["limits", "check", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output


SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def test_replay_refuses_an_empty_report_directory_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--report "$DIR"` with DIR unset: the run went ahead and wrote index.html,
    # summary.json and the recorder files into the directory it ran in (exit 0)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["replay", str(SMALL), "--report", ""], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "--report" in result.output and "empty path" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def _loop(p: Path) -> str:
    p.symlink_to(p)
    return "cannot be used: Too many levels of symbolic links"


def _link_into_nothing(p: Path) -> str:
    p.symlink_to(p.parent / "missing" / "out")
    return f"a link to {p.parent / 'missing' / 'out'}, which does not exist"


@pytest.mark.parametrize("option", ["--json", "--report"])
@pytest.mark.parametrize("make", [_loop, _link_into_nothing])
def test_replay_refuses_an_output_link_it_cannot_write_before_the_run(
    tmp_path: Path, option: str, make: object
) -> None:
    # both passed the check, the whole run was made, and its answer was lost at the end:
    # "cannot write ...: Too many levels of symbolic links" / "No such file" / "File exists"
    target = tmp_path / "out"
    message = make(target)  # type: ignore[operator]
    result = runner.invoke(app, ["replay", str(SMALL), option, str(target)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"{option} {target}: {message}" in result.output, result.output
    assert "small-runaway" not in result.output  # refused up front: no run, no tables
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_replay_writes_through_a_link_to_a_new_file_in_a_directory_that_exists(
    tmp_path: Path,
) -> None:
    (tmp_path / "d").mkdir()
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "d" / "summary.json")
    result = runner.invoke(app, ["replay", str(SMALL), "--json", str(link)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "summary.json").stat().st_size > 0
