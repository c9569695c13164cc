"""The `knightwatch` command: one typer app, one sub-app module per area.

`main` builds the app with only the area its command line names: a node process or an
operator's `knightwatch kill` does not load the console's web stack, the simulator or
the other areas first. On the build machine `knightwatch kill --help` took 0.45-0.47 s
against 0.74-0.76 s, and 8 node processes were admitted in 2.0-2.1 s against 2.7-3.0 s
(`python bench/fleet_bench.py --nodes 8 --admit-repeats 3`): start-up is the fleet's
CPU at admission and the operator's wait in an incident. Help, an unknown
name, and `app` (what tests invoke) build every area, in the order below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

HELP = "Trading safety: pre-trade guard, kill switch, attestation, flag governance, replay."


def _limits(app: typer.Typer) -> None:
    from knightwatch.cli.limits import app as limits_app

    app.add_typer(limits_app, name="limits")


def _demo(app: typer.Typer) -> None:
    from knightwatch.cli.demo import demo

    app.command("demo")(demo)


def _flags(app: typer.Typer) -> None:
    from knightwatch.cli.flags import app as flags_app

    app.add_typer(flags_app, name="flags")


def _audit(app: typer.Typer) -> None:
    from knightwatch.cli.audit import app as audit_app

    app.add_typer(audit_app, name="audit")


def _keys(app: typer.Typer) -> None:
    from knightwatch.cli.release import keys_app

    app.add_typer(keys_app, name="keys")


def _release(app: typer.Typer) -> None:
    from knightwatch.cli.release import app as release_app

    app.add_typer(release_app, name="release")


def _replay(app: typer.Typer) -> None:
    from knightwatch.cli.replay import replay

    app.command("replay")(replay)


def _fleet(app: typer.Typer) -> None:
    from knightwatch.cli.fleet import COMMANDS

    for name, command in COMMANDS:
        app.command(name)(command)


def _rollout(app: typer.Typer) -> None:
    from knightwatch.cli.flags import rollout_app

    app.add_typer(rollout_app, name="rollout")


def _admission(app: typer.Typer) -> None:
    from knightwatch.cli.fleet import admission_app

    app.add_typer(admission_app, name="admission")


def _incident(app: typer.Typer) -> None:
    from knightwatch.cli.incident import app as incident_app

    app.add_typer(incident_app, name="incident")


def _gateway(app: typer.Typer) -> None:
    from knightwatch.cli.gateway import gateway, venue

    app.command("gateway")(gateway)
    app.command("venue")(venue)


def _identity(app: typer.Typer) -> None:
    from knightwatch.cli.identity import app as identity_app

    app.add_typer(identity_app, name="identity")


def _console(app: typer.Typer) -> None:
    from knightwatch.cli.console import console_app

    app.add_typer(console_app, name="console")


AREAS: tuple[tuple[tuple[str, ...], Callable[[typer.Typer], None]], ...] = (
    (("limits",), _limits),
    (("demo",), _demo),
    (("flags",), _flags),
    (("audit",), _audit),
    (("keys",), _keys),
    (("release",), _release),
    (("replay",), _replay),
    (
        (
            "node",
            "drill-node",
            "kill",
            "resume",
            "approve",
            "requests",
            "status",
            "supervisor",
            "up",
            "drill",
        ),
        _fleet,
    ),
    (("rollout",), _rollout),
    (("admission",), _admission),
    (("incident",), _incident),
    (("gateway", "venue"), _gateway),
    (("identity",), _identity),
    (("console",), _console),
)
"""Each area: the top-level names it registers (`tests/cli/test_app.py` holds this
table to what the registrations give) and how it registers them."""


def build(command: str | None = None) -> typer.Typer:
    """The app with the area that registers `command`, or with every area (None, or a
    name no area registers: typer then lists them all or says there is no such one)."""
    app = typer.Typer(
        name="knightwatch",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _group() -> None:
        """Always a group of commands, even when one area with one command is loaded."""

    chosen = [register for names, register in AREAS if command in names]
    for register in chosen or [register for _, register in AREAS]:
        register(app)
    return app


_FULL: list[typer.Typer] = []


def __getattr__(name: str) -> Any:
    """`app`: the whole command, built on first use."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _FULL:
        _FULL.append(build())
    return _FULL[0]


def main() -> None:
    word = sys.argv[1] if len(sys.argv) > 1 else None
    build(word if word is not None and not word.startswith("-") else None)()
