"""Every number of seconds or orders per second a command takes has an upper bound.

`up --flow inf` ran a fleet whose drill flows crashed at their first tick (`int(inf)`),
`node --metrics-interval inf` started a node that never published its counters, and
`node --attest-interval 1e9` one that never attested again. A float option either has a
finite maximum the parser enforces (one line naming the option, exit 2, before anything
starts) or is one whose value a named rule judges before it is used."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.sim.drill.flow import MAX_FLOW_PER_S

from .conftest import command_params

JUDGED_LATER = {
    # the lease policy: heartbeat 0.01-10 s, lease <= 60 s
    # (tests/control/node/test_shipping_lease.py)
    "--lease-timeout",
    "--heartbeat",
    # the scenario's timeline rules (`with_resume`)
    "--resume-after",
}


def _float_options() -> list[tuple[str, str, object]]:
    found = []
    for prefix, p in command_params():
        descriptor = getattr(p, "type_descriptor", None)
        if getattr(descriptor, "annotation", None) in (float, float | None):
            opts: list[str] = getattr(p, "opts", [])
            found.append((" ".join(prefix), opts[0], getattr(p, "max", None)))
    return found


def test_every_float_option_has_a_finite_maximum_or_a_rule_that_judges_it() -> None:
    options = _float_options()
    assert len(options) >= 10, options  # the introspection found them
    unbounded = [
        (command, option)
        for command, option, most in options
        if option not in JUDGED_LATER
        and not (isinstance(most, (int, float)) and math.isfinite(most))
    ]
    assert not unbounded, f"float options with no finite maximum: {unbounded}"


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--flow", "inf"],
        ["up", "--flow", str(MAX_FLOW_PER_S * 2)],
        ["drill", "--flow", "inf"],
        ["drill-node", "--id", "n1", "--key", "k", "--flow", "inf"],
        ["node", "--id", "n1", "--key", "k", "--metrics-interval", "inf"],
        ["node", "--id", "n1", "--key", "k", "--attest-interval", "1e9"],
    ],
)
def test_an_unbounded_value_is_refused_naming_the_option_before_anything_starts(
    args: list[str],
) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in result.output, result.output
    assert "Traceback" not in result.output
