"""Decimal amounts <-> the Guard's integer units: exact both ways, never rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knightwatch.adapters.units import UnitError, Units, decimal_of

steps = st.integers(min_value=0, max_value=10).map(lambda places: Units.from_places(places))
counts = st.integers(min_value=1, max_value=10**12)


@given(steps, counts)
def test_whole_steps_round_trip_exactly(units: Units, n: int) -> None:
    amount = units.to_amount(n)
    assert units.to_units(amount) == n
    assert units.to_units(str(amount)) == n


@given(st.integers(min_value=1, max_value=10), counts, st.integers(min_value=1, max_value=9))
def test_an_amount_between_steps_is_refused_not_rounded(places: int, n: int, extra: int) -> None:
    units = Units.from_places(places)
    off = units.to_amount(n) + units.step * Decimal(extra) / 10
    with pytest.raises(UnitError, match="not a whole number of steps"):
        units.to_units(off)


def test_tick_sized_steps_and_prices_per_unit() -> None:
    u = Units("0.00001")
    assert u.to_units("0.1") == 10_000
    assert u.to_units(0.1) == 10_000  # the float's shortest repr, not its binary expansion
    assert u.unit_price(60_000.0) == pytest.approx(0.6)
    assert u.unit_price("60000.5") == pytest.approx(0.600005)
    assert Units("0.5").to_units("2.5") == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "abc", None, True, [1]])
def test_bad_values_are_named_errors(bad: object) -> None:
    with pytest.raises(UnitError, match="amount"):
        decimal_of(bad, "amount")


@pytest.mark.parametrize("step", [0, -1, "0", float("nan")])
def test_a_step_must_be_positive(step: object) -> None:
    with pytest.raises(UnitError, match="step"):
        Units(step)  # type: ignore[arg-type]
    with pytest.raises(UnitError, match="places"):
        Units.from_places(-1)
