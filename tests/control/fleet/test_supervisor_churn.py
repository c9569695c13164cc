"""A runaway that churns: alternating sides, its position flat, its turnover up, its P&L down.

The slow-bleed rule watched the order rate only. A loop buying at the offer and selling at
the bid with bigger clips (the same orders a second, or 1.4x, each 3-4x its size) keeps the
order rate under `bleed_multiple` x its baseline, the turnover under 5x its own and under the
notional floor, and the position flat. On every node at once (the peers' P&L falling with
it) it lost $18k a minute a node, for good, and nothing fired; on one node, the peer P&L rule
took nearly three minutes ($50k). The bleed rule holds the executed notional rate to
`bleed_multiple` x its baseline too.
"""

from __future__ import annotations

import pytest

from knightwatch.clock import SimClock
from knightwatch.control.fleet.supervisor import Action, Rule, Supervisor, SupervisorConfig
from knightwatch.control.plane.wire import NodeMetrics

S = 1_000_000_000
TICK = S // 5
NODES = ("n1", "n2", "n3", "n4")


def _churn(
    orders_x: float, clip_x: float, loss_per_s: float, seconds: float, who: tuple[str, ...]
) -> list[Action]:
    """Four nodes trading for themselves at 20 orders/s of $2,000, every order filled; after
    60 s the nodes `who` send `orders_x` as many orders of `clip_x` the size, each losing
    `loss_per_s`. Stops at the first judgement that fires."""
    clock = SimClock(10 * S)
    sup = Supervisor(SupervisorConfig(), clock)
    acc = {n: [0.0, 0.0, 0.0] for n in NODES}  # orders, notional, pnl
    fired: list[Action] = []
    for k in range(round((60 + seconds) * S / TICK)):
        clock.advance(TICK)
        for n in NODES:
            churning = n in who and k >= 60 * S // TICK
            rate = 20.0 * (orders_x if churning else 1.0)
            a = acc[n]
            a[0] += rate * TICK / S
            a[1] += rate * TICK / S * 2_000.0 * (clip_x if churning else 1.0)
            a[2] -= loss_per_s * TICK / S if churning else 0.0
            orders = int(a[0])
            m = NodeMetrics(
                n, 0, orders, orders, 0, orders, 0.0, a[2], True, 0, notional=a[1],
                instance=f"{n}-1",
            )  # fmt: skip
            fired += sup.observe(m)
        if fired:
            return fired
    return fired


CLIPS = [(1.0, 4.0), (1.4, 3.0)]
WHO = {"one node": ("n1",), "every node": NODES}


@pytest.mark.parametrize("who", sorted(WHO))
@pytest.mark.parametrize(("orders_x", "clip_x"), CLIPS)
def test_nodes_churning_bigger_clips_at_a_loss_are_halted_as_a_bleed(
    orders_x: float, clip_x: float, who: str
) -> None:
    fired = _churn(orders_x, clip_x, 300.0, 600, WHO[who])
    assert fired, "nodes churning at a loss under every rate limit passed"
    assert {(a.rule, a.key) for a in fired} == {(Rule.SLOW_BLEED, n) for n in WHO[who]}, fired
    at = (fired[0].at_ns - 10 * S) / S - 60
    assert 60 <= at <= 66, at  # within its bleed window, as an order-rate bleed is
    why = fired[0].reason
    assert "node n1 held at" in why and "notional_rate" in why and "P&L fell" in why, why


@pytest.mark.parametrize(("orders_x", "clip_x"), CLIPS)
def test_bigger_clips_with_no_loss_are_a_busy_fleet_not_a_bleed(
    orders_x: float, clip_x: float
) -> None:
    assert _churn(orders_x, clip_x, 0.0, 600, NODES) == []


def test_a_small_loss_on_bigger_clips_is_no_bleed() -> None:
    """$100 a second is $6k a minute, under `bleed_loss` ($10k): the Guard's loss limit's."""
    assert _churn(1.0, 4.0, 100.0, 600, NODES) == []
