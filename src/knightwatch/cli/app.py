"""The `knightwatch` command: one typer app, one sub-app module per area."""

from __future__ import annotations

import typer

from knightwatch.cli.audit import app as audit_app
from knightwatch.cli.console import console_app
from knightwatch.cli.demo import demo
from knightwatch.cli.flags import app as flags_app
from knightwatch.cli.flags import rollout_app
from knightwatch.cli.fleet import COMMANDS as fleet_commands
from knightwatch.cli.fleet import admission_app
from knightwatch.cli.gateway import gateway, venue
from knightwatch.cli.identity import app as identity_app
from knightwatch.cli.incident import app as incident_app
from knightwatch.cli.limits import app as limits_app
from knightwatch.cli.release import app as release_app
from knightwatch.cli.release import keys_app
from knightwatch.cli.replay import replay

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
app.add_typer(flags_app, name="flags")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(release_app, name="release")
app.command("replay")(replay)
for _name, _command in fleet_commands:
    app.command(_name)(_command)
app.add_typer(rollout_app, name="rollout")
app.add_typer(admission_app, name="admission")
app.add_typer(incident_app, name="incident")
app.command("gateway")(gateway)
app.command("venue")(venue)
app.add_typer(identity_app, name="identity")
app.add_typer(console_app, name="console")
# --- end sub-apps ---


def main() -> None:
    app()
