"""Runaways made of bursts each shorter than the rate window, a window or more apart.

A burst within one metrics interval keeps a node's windowed rate over its limit for one
interval less than the window, so it is never held over it for a full window; with the
bursts a window or more apart each one was a new episode. A train of them, whatever its
size, passed every rule for good. The rates are judged over `count_window_s` too.
"""

from __future__ import annotations

import pytest

from knightwatch.control.fleet.supervisor import Action, Rule, SupervisorConfig

from .test_supervisor import Fleet


@pytest.mark.parametrize(
    ("on", "off", "peak"),
    [(0.2, 2.0, 5_000.0), (0.2, 3.0, 20_000.0), (0.2, 2.2, 2_000.0), (0.2, 5.0, 50_000.0)],
)
def test_a_train_of_short_bursts_a_window_apart_is_halted(
    on: float, off: float, peak: float
) -> None:
    """A node trading for itself at 20 orders/s sends `peak` orders/s for one metrics
    interval every `on + off` s (9x to 100x its normal on average): halted by name."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(60, 20.0) == []
    fired: list[Action] = []
    periods = 0
    while not fired and periods < 60:
        fired = f.run(on, {"n1": peak, "n2": 20.0, "n3": 20.0, "n4": 20.0}) + f.run(off, 20.0)
        periods += 1
    assert fired, "a train of bursts each shorter than the rate window was never halted"
    assert periods * (on + off) <= 45  # the minute it is averaged over fills with bursts
    assert {a.key for a in fired} == {"n1"}
    first = next(a for a in fired if a.rule is Rule.BASELINE_ORDER_RATE)
    assert "node n1 order_rate" in first.reason and "on average over the last" in first.reason


@pytest.mark.parametrize("peak", [2_000.0, 5_000.0, 10_000.0])
def test_bursts_that_average_under_the_limit_are_not_halted(peak: float) -> None:
    """A basket now and then (400 to 2,000 orders at once, one every 30 s) keeps the
    minute's average under the limit (5x the node's 20/s): nothing fires."""
    on = 0.2
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(60, 20.0) == []
    for _ in range(4):
        burst = f.run(on, {"n1": peak, "n2": 20.0, "n3": 20.0, "n4": 20.0})
        assert burst + f.run(30 - on, 20.0) == []


@pytest.mark.parametrize(("background", "size"), [(2.0, 1_500), (2.0, 3_000), (5.0, 2_000)])
def test_one_or_two_baskets_on_a_quiet_node_are_not_a_train(background: float, size: int) -> None:
    """A node doing 2-5 orders a second sends one basket (1,500 to 3,000 orders at once),
    then another 40 s later: each minute's average is over its limit (5x its baseline,
    floor 20/s), but two bursts are no train: nothing fires."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(120, background) == []
    burst = {"n1": size / 0.2, "n2": background, "n3": background, "n4": background}
    fired = f.run(0.2, burst) + f.run(40, background)
    fired += f.run(0.2, burst) + f.run(90, background)
    assert fired == []


def test_a_third_basket_within_the_minute_makes_a_train() -> None:
    """The same quiet node sends its basket three times within 60 s: halted by name, the
    reason naming the average."""
    f = Fleet(SupervisorConfig(), nodes=4)
    f.parents = 0
    assert f.run(120, 2.0) == []
    burst = {"n1": 1_500 / 0.2, "n2": 2.0, "n3": 2.0, "n4": 2.0}
    fired: list[Action] = []
    for _ in range(3):
        fired += f.run(0.2, burst) + f.run(20, 2.0)
    assert {a.key for a in fired if a.rule is Rule.BASELINE_ORDER_RATE} == {"n1"}


@pytest.mark.parametrize("period", [31.0, 45.0, 61.0, 85.0])
def test_big_bursts_further_apart_than_a_third_of_the_window_are_a_train(period: float) -> None:
    """A node at 20 orders/s sends 10,000 orders at once every `period` s (6x to 16x its
    normal on average): never three bursts within one count_window_s, so each was a basket
    now and then, for good. Three bursts each putting the minute's average over the limit,
    within three minutes whose average is over it too, halt it by name."""
    f = Fleet(SupervisorConfig(), nodes=3)
    f.parents = 0
    assert f.run(60, 20.0) == []
    burst = {"n1": 10_000 / 0.2, "n2": 20.0, "n3": 20.0}
    fired: list[Action] = []
    bursts = 0
    while not fired and bursts < 6:
        fired = f.run(0.2, burst) + f.run(period - 0.2, 20.0)
        bursts += 1
    assert fired, f"10,000 orders every {period:g} s were never halted"
    assert bursts <= 3
    assert {a.key for a in fired} == {"n1"}
    first = next(a for a in fired if a.rule is Rule.BASELINE_ORDER_RATE)
    assert "node n1 order_rate" in first.reason


@pytest.mark.parametrize(("period", "size"), [(59.0, 3_000), (40.0, 2_500), (90.0, 7_000)])
def test_baskets_spaced_out_whose_average_stays_under_the_limit_are_no_train(
    period: float, size: int
) -> None:
    """Baskets that each put the minute over the limit (5x a node's 20/s) with the one before
    it, but average under it over the minutes they come in: six of them, nothing fires."""
    f = Fleet(SupervisorConfig(), nodes=2)
    f.parents = 0
    assert f.run(60, 20.0) == []
    burst = {"n1": size / 0.2, "n2": 20.0}
    for _ in range(6):
        assert f.run(0.2, burst) + f.run(period - 0.2, 20.0) == []
