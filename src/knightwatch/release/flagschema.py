"""A release's flag schema: each flag id it understands with the hash of its meaning.

Knight's reused flag meant RLP on seven servers and Power Peg on the eighth.
Comparing ids alone cannot see that; comparing (id, definition hash) can. The
hash is the one `knightwatch.flags` records in the registry
(sha256 hex over the meaning-bearing fields), so a release, a node and the
registry can be compared directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from knightwatch.errors import quoted
from knightwatch.flags.definition import MAX_FLAG_ID, definition_hash
from knightwatch.release.canonical import is_sha256_hex
from knightwatch.release.errors import ReleaseInputError

FlagSchema = dict[str, str]


class FlagMeaning(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The meaning-bearing fields of a flag, as a node's compiled-in table states them."""

    description: str
    safe_default: bool
    trading_behaviour: bool


def check_flag_id(flag_id: object, *, where: str) -> str:
    if (
        not isinstance(flag_id, str)
        or not flag_id
        or len(flag_id) > MAX_FLAG_ID
        or any(c.isspace() for c in flag_id)
    ):
        raise ReleaseInputError(
            f"{where}: flag id {quoted(flag_id)} must be a string of 1..{MAX_FLAG_ID} "
            "characters without whitespace"
        )
    return flag_id


def schema_from_table(table: Mapping[str, object], *, where: str) -> FlagSchema:
    """Flag table -> schema.

    A value is either an already computed definition hash (64 lower-case hex,
    as the registry records it) or the meaning itself (`description`,
    `safe_default`, `trading_behaviour`), hashed exactly as the registry does.
    """
    schema: FlagSchema = {}
    for raw_id, value in table.items():
        flag_id = check_flag_id(raw_id, where=where)
        if isinstance(value, str) and is_sha256_hex(value):
            schema[flag_id] = value
            continue
        try:
            meaning = msgspec.convert(value, FlagMeaning)
        except msgspec.ValidationError as exc:
            raise ReleaseInputError(
                f"{where}: flag {quoted(flag_id)}: value must be a definition hash "
                f"(64 lower-case hex digits) or a mapping with description, safe_default and "
                f"trading_behaviour: {exc}"
            ) from exc
        schema[flag_id] = definition_hash(
            flag_id, meaning.description, meaning.safe_default, meaning.trading_behaviour
        )
    return dict(sorted(schema.items()))
