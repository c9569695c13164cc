"""The assembled `knightwatch` command: every help text reaches the reader as written."""

from __future__ import annotations

import re

from typer.testing import CliRunner

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
