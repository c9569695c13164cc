"""The flag registry as release admission needs it: every id ever issued and its meaning.

Kept apart from the registry loader so that `knightwatch.release` can depend
on flags (admission checks a manifest's flag schema against it) while flags
never depends on release: the one direction keeps the layers acyclic.
"""

from __future__ import annotations

import msgspec


class RegistrySchema(msgspec.Struct, frozen=True):
    """The flag registry as admission needs it.

    `definitions` holds every id the registry has ever had (active, proposed
    and retired tombstones) with its definition hash; `retired` names the
    tombstones. `FlagRegistry.admission_schema()` builds it from the registry file.
    """

    definitions: dict[str, str]
    retired: frozenset[str] = frozenset()
