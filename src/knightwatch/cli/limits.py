"""`knightwatch limits check FILE`: validate a limits file before it reaches a router."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knightwatch.cli.options import shown
from knightwatch.limits import FLEET_RULES, OVERRIDE_RULES, Limits, LimitsError

app = typer.Typer(help="Validate and inspect limits files.", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="limits TOML file")) -> None:
    """Exit 0 and print the effective values if FILE is valid; exit 1 naming each bad key."""
    console = Console()
    try:
        limits = Limits.from_toml(file)
    except LimitsError as exc:
        # one line per problem, never wrapped: each names the file, the key and the rule,
        # and a script or grep reading the output gets all three on the line it matches;
        # the file's name is the operator's text: a control character in it is escaped
        console.print(f"[red]{escape(shown(file))}: invalid[/red]", soft_wrap=True)
        for p in exc.problems:
            console.print(f"  [red]•[/red] {escape(shown(p))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    # the file's own strings (its name, version, symbols) are shown, never read as markup:
    # a version "[/x]" would otherwise end a valid file's check with a traceback
    # and its name as given, control characters escaped: it is the operator's, not the file's
    table = Table(title=escape(f"{shown(file)} (version {limits.version})"))
    table.add_column("key")
    table.add_column("fleet", justify="right")
    for key in FLEET_RULES:
        if key != "version":
            value = getattr(limits, key)
            listed = sorted(value) if isinstance(value, frozenset) else value
            table.add_row(key, "off" if value is None else escape(str(listed)))
    console.print(table)
    for section in ("strategy", "symbol"):
        for name, ov in getattr(limits, section).items():
            set_keys = {k: getattr(ov, k) for k in OVERRIDE_RULES if getattr(ov, k) is not None}
            console.print(f"[bold]{escape(f'{section}.{name}')}[/bold]: {set_keys}")
    console.print("[green]valid[/green]")
