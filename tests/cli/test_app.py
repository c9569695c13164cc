"""The assembled `knightwatch` command: every help text reaches the reader as written,
and each area loads alone.

`main` registers only the area its command line names, so a node or a kill starts
without the console's web stack or the simulator; the tests below hold the area table to
what each area registers, and check that a lone area still parses as the full command.
"""

from __future__ import annotations

import re
import subprocess
import sys

import typer
from typer.testing import CliRunner

from knightwatch.cli import app as cli_app
from knightwatch.cli.app import app

from .conftest import command_params

# A TOML table name such as [ramp], as the help text should show it (escaped or not in source).
_TABLE = re.compile(r"\\?\[([a-z_]+)\]")


def _bracketed_help() -> list[tuple[list[str], str]]:
    """(command path, table name) for every option help that names a `[table]`."""
    return [
        (prefix, table)
        for prefix, param in command_params()
        for table in _TABLE.findall(getattr(param, "help", None) or "")
    ]


def test_help_shows_toml_table_names_instead_of_eating_them_as_markup() -> None:
    """rich reads `[ramp]` as a style tag and drops it: `--help` must still show it."""
    cases = _bracketed_help()
    assert len(cases) >= 8, cases  # the introspection found the options it is about
    for prefix, table in cases:
        result = CliRunner().invoke(app, [*prefix, "--help"], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        assert f"[{table}]" in result.output, (prefix, table, result.output)


def _names(app: typer.Typer) -> list[str]:
    commands = [c.name for c in app.registered_commands]
    groups = [g.name for g in app.registered_groups]
    assert all(isinstance(n, str) for n in commands + groups)
    return [str(n) for n in commands + groups]


def test_each_area_registers_exactly_the_names_the_table_gives_it() -> None:
    for names, _ in cli_app.AREAS:
        for name in names:
            assert sorted(_names(cli_app.build(name))) == sorted(names), name


def test_no_name_is_claimed_by_two_areas_and_the_whole_app_has_them_all() -> None:
    claimed = [n for names, _ in cli_app.AREAS for n in names]
    assert len(claimed) == len(set(claimed))
    assert sorted(_names(cli_app.build())) == sorted(claimed)
    assert sorted(_names(cli_app.app)) == sorted(claimed)


def test_an_unknown_name_builds_the_whole_app_so_typer_can_say_so() -> None:
    assert len(_names(cli_app.build("no-such-command"))) == len(
        [n for names, _ in cli_app.AREAS for n in names]
    )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knightwatch", *args], capture_output=True, text=True, timeout=60
    )


def test_a_lone_area_with_one_command_still_wants_the_commands_name() -> None:
    done = _run("demo", "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and "knightwatch demo" in done.stdout


def test_a_kill_loads_neither_the_console_nor_the_simulators_plotting() -> None:
    probe = (
        "import sys\n"
        "from knightwatch.cli.app import build\n"
        "build('kill')\n"
        "print(sorted(m for m in sys.modules if '.' not in m))\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('knightwatch.')}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    top, ours = done.stdout.splitlines()
    for heavy in ("'starlette'", "'jinja2'", "'uvicorn'", "'matplotlib'", "'numpy'"):
        assert heavy not in top, heavy
    assert "'console'" not in ours, ours
    assert "'control'" in ours  # the kill's own area did load


def test_an_unknown_command_is_refused_with_the_full_list_available() -> None:
    done = _run("no-such-command")
    assert done.returncode != 0
    assert "No such command" in done.stdout + done.stderr
