"""Exact conversion between a venue's decimal amounts and the Guard's integer quantities.

The Guard counts whole units (`Order.qty` is an int) so that positions, working
quantities and parent totals add up exactly, with no float drift across a day of
fills. Crypto and FX amounts are decimals (0.00123 BTC). Each instrument's
amounts are therefore expressed in multiples of its own smallest step, the
step the venue itself enforces: the market's amount precision in ccxt, the
instrument's size increment in NautilusTrader. `0.00123 BTC` with a step of
`0.00001` is 123 units; an amount that is not a whole number of steps cannot
be sent to that venue and is refused, never rounded.

Prices follow the quantities: the Guard multiplies units by price for every
notional, exposure and P&L figure, so its prices are per unit (price x step).
Notional, exposure, turnover and loss limits therefore stay in the quote
currency, while quantity limits (`max_order_qty`, `max_position_qty`, parent
quantities) are in units of the step, and `tick_size` for tick collars is per
unit too. An instrument whose step is 1 (shares, most FX) needs no translation.

A contract's amounts count contracts, and one contract is worth `multiplier` of the
underlying (ccxt's `contractSize`, NautilusTrader's `multiplier`: 1,000 DOGE a contract,
50 x the index for a future): its per-unit price is price x step x multiplier, or every
notional, exposure and loss figure would read 1/multiplier of what is traded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from knightwatch import KnightwatchError


class UnitError(KnightwatchError, ValueError):
    """An amount that is not a whole number of the instrument's steps; says which."""


_MAX_EXPONENT = 100
"""How far from 1, in powers of ten, a venue amount or price may be."""


def decimal_of(value: object, what: str) -> Decimal:
    """A finite Decimal from a venue value (str, int, Decimal, or float via its shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise UnitError(f"{what}: must be a number, got {value!r}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise UnitError(f"{what}: not a number ({value!r})") from None
    if not d.is_finite():
        raise UnitError(f"{what}: must be finite, got {value!r}")
    if not -_MAX_EXPONENT <= d.adjusted() <= _MAX_EXPONENT:
        # no amount or price is this far from 1; dividing it by a step would overflow
        # Python's decimal context (an ArithmeticError traceback, not a refusal)
        raise UnitError(
            f"{what}: {value!r:.40} is out of range (1e-{_MAX_EXPONENT} to 1e+{_MAX_EXPONENT})"
        )
    return d


class Units:
    """One instrument's step: amounts <-> Guard units, prices -> per-unit prices."""

    __slots__ = ("_step_f", "multiplier", "step")

    def __init__(
        self, step: Decimal | str | int | float, multiplier: Decimal | str | int | float = 1
    ) -> None:
        s = decimal_of(step, "step")
        if s <= 0:
            raise UnitError(f"step: must be > 0, got {step!r}")
        m = decimal_of(multiplier, "multiplier")
        if m <= 0:
            raise UnitError(f"multiplier: must be > 0, got {multiplier!r}")
        self.step = s.normalize()
        self.multiplier = m.normalize()
        self._step_f = float(self.step * self.multiplier)

    @classmethod
    def from_places(cls, places: int) -> Units:
        """The step of an amount with `places` decimal places (0 -> 1, 3 -> 0.001)."""
        if places < 0:
            raise UnitError(f"places: must be >= 0, got {places}")
        return cls(Decimal(1).scaleb(-places))

    def to_units(self, amount: object, what: str = "amount") -> int:
        """The amount as a whole number of steps; refuses anything else (never rounds)."""
        d = decimal_of(amount, what)
        q = d / self.step
        if q != q.to_integral_value():
            raise UnitError(f"{what}: {d} is not a whole number of steps of {self.step}")
        return int(q)

    def to_amount(self, units: int) -> Decimal:
        return (self.step * units).normalize()

    def unit_price(self, price: object, what: str = "price") -> float:
        """The price of one unit (price x step x multiplier), as the Guard's notional
        arithmetic wants it."""
        if type(price) is float:
            return price * self._step_f
        return float(decimal_of(price, what) * self.step * self.multiplier)

    def __repr__(self) -> str:
        if self.multiplier == 1:
            return f"Units(step={self.step})"
        return f"Units(step={self.step}, multiplier={self.multiplier})"
