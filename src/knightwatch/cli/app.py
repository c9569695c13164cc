"""The `knightwatch` command: one typer app, one sub-app module per area."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="knightwatch",
    help="Trading safety: pre-trade guard, kill switch, attestation, flag governance, replay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- sub-apps: each area registers itself here, one line each ---
# --- end sub-apps ---


def main() -> None:
    app()
