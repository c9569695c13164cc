"""The release model: what a node's code does when a parent arrives with a flag set.

A release maps flag ids to behaviours. The same flag id can mean different
things in two releases, which is the Knight failure: the RLP release maps the
repurposed flag to the new Retail Liquidity Program code, the old release on
the server that missed the deploy maps it to Power Peg.

A release is also what a node attests: its file table (the bytes it runs, here
derived from the release's own identity and flag table, so two releases never
hash alike) and its compiled-in flag table, where each behaviour carries the
meaning the flag registry would hash (`MEANINGS`).
"""

from __future__ import annotations

import msgspec

from knightwatch.sim.powerpeg import PowerPeg
from knightwatch.sim.router import Algorithm, FillToParent, RetailLiquidity

DEFAULT_BEHAVIOUR = "smars"

BEHAVIOURS: dict[str, Algorithm] = {
    "smars": FillToParent("smars"),
    "rlp": RetailLiquidity(),
    "power_peg": PowerPeg(),
}

MEANINGS: dict[str, str] = {
    "smars": "Route the parent with the standard SMARS algorithm until it is filled.",
    "rlp": "Route eligible retail orders to the NYSE Retail Liquidity Program.",
    "power_peg": "Power Peg: send child orders pegged to the quote for the parent.",
}
"""What switching a flag on means for each behaviour: the text its definition hash covers."""


class Release(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A build of the router: its id and its flag table (flag id -> behaviour name)."""

    id: str
    flags: dict[str, str] = msgspec.field(default_factory=dict)

    def behaviour(self, flag: str | None) -> Algorithm:
        name = self.flags.get(flag, DEFAULT_BEHAVIOUR) if flag is not None else DEFAULT_BEHAVIOUR
        return BEHAVIOURS[name]

    def flag_table(self) -> dict[str, object]:
        """The compiled-in flag table as a release manifest and an attestation state it."""
        return {
            flag: {"description": MEANINGS[beh], "safe_default": False, "trading_behaviour": True}
            for flag, beh in sorted(self.flags.items())
        }

    def files(self) -> dict[str, bytes]:
        """The release's artifact files: what differs between two builds is what gets hashed."""
        table = msgspec.json.encode(dict(sorted(self.flags.items())))
        out = {"smars/VERSION": self.id.encode(), "smars/flags.json": table}
        for beh in sorted(set(self.flags.values())):
            out[f"smars/algo/{beh}.py"] = f"# {MEANINGS[beh]}\n".encode()
        return out
