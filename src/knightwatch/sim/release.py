"""The release model: what a node's code does when a parent arrives with a flag set.

A release maps flag ids to behaviours. The same flag id can mean different
things in two releases, which is the Knight failure: the RLP release maps the
repurposed flag to the new Retail Liquidity Program code, the old release on
the server that missed the deploy maps it to Power Peg.
"""

from __future__ import annotations

import msgspec

from knightwatch.sim.powerpeg import PowerPeg
from knightwatch.sim.router import Algorithm, FillToParent

DEFAULT_BEHAVIOUR = "smars"

BEHAVIOURS: dict[str, Algorithm] = {
    "smars": FillToParent("smars"),
    "rlp": FillToParent("rlp"),
    "power_peg": PowerPeg(),
}


class Release(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A build of the router: its id and its flag table (flag id -> behaviour name)."""

    id: str
    flags: dict[str, str] = msgspec.field(default_factory=dict)

    def behaviour(self, flag: str | None) -> Algorithm:
        name = self.flags.get(flag, DEFAULT_BEHAVIOUR) if flag is not None else DEFAULT_BEHAVIOUR
        return BEHAVIOURS[name]
