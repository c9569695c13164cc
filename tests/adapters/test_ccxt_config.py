"""Settings of the ccxt wrapper that the Guard could never use are refused by `guard()`,
in one line naming the setting, before anything reaches a venue."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from knightwatch.adapters.ccxt import guard
from knightwatch.adapters.fleet import AdapterError

from .test_ccxt import limits


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("strategy", "", "strategy: must be a non-empty string"),
        ("strategy", None, "strategy: must be a non-empty string"),
        ("strategy", 7, "strategy: must be a non-empty string"),
        ("strategy", "s" * 65, "strategy: must be at most 64 characters"),
        ("strategy", "mm/btc", "strategy: must not contain '/'"),
        ("strategy", " mm", "strategy: must not start or end with whitespace"),
        ("strategy", "mm\n", "strategy: must not start or end with whitespace"),
        ("strategy", "m\x00m", "strategy: must not start or end with whitespace"),
        ("clock", "utc", "clock: must be a knightwatch Clock"),
        ("clock", object(), "clock: must be a knightwatch Clock"),
    ],
)
def test_a_setting_the_guard_could_never_use_is_refused_when_wrapping(
    setting: str, value: Any, says: str
) -> None:
    """Before, a strategy no order could carry was taken: every order was then refused
    (the first, where orders were open at the start, as `venue_unavailable`, "starting
    position unknown"), and a clock of the wrong type failed with an AttributeError."""
    with pytest.raises(AdapterError) as refused:
        guard(ccxt.binance(), limits=limits("0.00001"), **{setting: value})
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)
