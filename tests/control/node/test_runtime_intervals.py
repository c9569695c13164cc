"""A node's timing inputs are bounded where the node is built, not only by the CLI.

An infinite `metrics_s` passed every check: the node never published its counters (the
supervisor saw nothing of its order flow, then halted it as silent). An infinite
`attest_s` crashed the constructor with an OverflowError traceback, and a huge finite one
meant the node never attested again, so drift after admission went unseen."""

from __future__ import annotations

import math

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.node.runtime import (
    MAX_ADMISSION_TTL_S,
    MAX_ATTEST_S,
    MAX_METRICS_S,
    NodeError,
    NodeRuntime,
)
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.guard.engine import Guard
from knightwatch.limits import Limits

from ...identities import signer, trust
from ..fleet_fixtures import POLICY


def build(**timing: float) -> NodeRuntime:
    guard = Guard(Limits(lease_timeout_s=POLICY.lease_timeout_s), node="n1", clock=SimClock(0))
    plane = MemoryControlPlane(MemoryFabric())
    return NodeRuntime(
        guard, plane, clock=SimClock(0), policy=POLICY, trust=trust(), signer=signer("n1"),
        **timing,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics_s", math.inf),
        ("metrics_s", math.nan),
        ("metrics_s", MAX_METRICS_S * 2),
        ("metrics_s", 0.0),
        ("metrics_s", -1.0),
        ("attest_s", math.inf),
        ("attest_s", math.nan),
        ("attest_s", MAX_ATTEST_S + 1),
        ("attest_s", 0.0),
        ("admission_ttl_s", math.inf),
        ("admission_ttl_s", math.nan),
        ("admission_ttl_s", MAX_ADMISSION_TTL_S + 1),
        ("admission_ttl_s", 1.0),  # shorter than the 5 s default attest_s
    ],
)
def test_an_interval_out_of_its_bounds_is_refused_naming_the_field(
    field: str, value: float
) -> None:
    with pytest.raises(NodeError, match=f"^{field}: must be between") as caught:
        build(**{field: value})
    assert "\n" not in str(caught.value)


def test_the_bounds_themselves_are_accepted() -> None:
    build(metrics_s=MAX_METRICS_S, attest_s=MAX_ATTEST_S, admission_ttl_s=MAX_ADMISSION_TTL_S)
    build(metrics_s=0.01, attest_s=0.05)
