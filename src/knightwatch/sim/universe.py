"""The symbols a scenario trades: tiers of similar stocks, generated from a seed or listed.

A tier is the unit of calibration (docs/replay.md fits liquid, mid-cap and
small-cap tiers to the SEC order's aggregates), so a generated universe spreads each
tier's daily volume over [adv/2, 2*adv] to avoid 154 identical books while
keeping the tier medians the calibration was done on.
"""

from __future__ import annotations

import random

import msgspec


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One class of stocks. `peg_updates_per_s` is how often the quote a pegged
    order follows changes; a pegged algorithm re-sends a child on each update."""

    name: str
    count: int
    price: float
    adv: float
    sigma: float
    spread: float
    peg_updates_per_s: float


class SymbolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stock: reference price, daily volume, daily volatility, quoted spread in dollars."""

    name: str
    tier: str
    price: float
    adv: float
    sigma: float
    spread: float
    peg_updates_per_s: float


def generate(tiers: tuple[Tier, ...], seed: int) -> tuple[SymbolSpec, ...]:
    """Symbols named `<tier initial><index>`, ADV log-uniform in [adv/2, 2*adv], seeded."""
    rng = random.Random(f"universe:{seed}")
    out: list[SymbolSpec] = []
    for tier in tiers:
        for j in range(tier.count):
            adv = tier.adv * 2.0 ** rng.uniform(-1.0, 1.0)
            out.append(
                SymbolSpec(
                    name=f"{tier.name[:1].upper()}{j:03d}",
                    tier=tier.name,
                    price=tier.price,
                    adv=adv,
                    sigma=tier.sigma,
                    spread=tier.spread,
                    peg_updates_per_s=tier.peg_updates_per_s,
                )
            )
    return tuple(out)
