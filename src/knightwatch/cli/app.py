"""The `knightwatch` command: one typer app, one sub-app module per area."""

from __future__ import annotations

import typer

from knightwatch.cli.demo import demo
from knightwatch.cli.limits import app as limits_app

app = typer.Typer(
    name="knightwatch",
    help="Trading safety: pre-trade guard, kill switch, attestation, flag governance, replay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- sub-apps: each area registers itself here, one line each ---
app.add_typer(limits_app, name="limits")
app.command("demo")(demo)
# --- end sub-apps ---


def main() -> None:
    app()
