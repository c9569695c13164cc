"""A drill flow's rates are bounded where the flow is built: an infinite rate crashed the
flow at its first tick (`int(inf)` credit), a NaN one sent nothing, silently."""

from __future__ import annotations

import math

import pytest
from nats.aio.client import Client

from knightwatch.clock import SimClock
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.sim.drill.flow import MAX_FLOW_PER_S, OrderFlow

from ...control.fleet_fixtures import make_node


@pytest.mark.parametrize("rate", [math.inf, math.nan, 0.0, -1.0, MAX_FLOW_PER_S * 1.01])
@pytest.mark.parametrize("field", ["rate_per_s", "runaway_rate_per_s"])
def test_a_rate_out_of_bounds_is_refused_naming_it(field: str, rate: float) -> None:
    runtime = make_node("n1", MemoryControlPlane(MemoryFabric()), SimClock(0))
    rates = {"rate_per_s": 10.0, "runaway_rate_per_s": 400.0, field: rate}
    with pytest.raises(ValueError, match=f"^{field}: must be > 0 and <= 5000 orders/s"):
        OrderFlow(runtime, Client(), **rates)


def test_the_bound_itself_is_a_flow() -> None:
    runtime = make_node("n1", MemoryControlPlane(MemoryFabric()), SimClock(0))
    flow = OrderFlow(runtime, Client(), MAX_FLOW_PER_S, runaway_rate_per_s=MAX_FLOW_PER_S)
    assert flow.rate == MAX_FLOW_PER_S
