"""Property: no accepted sequence of registry versions binds one id to two meanings."""

from __future__ import annotations

import itertools
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.registry import RegistryDocument, RegistryLedger

IDS = ("trading.smars.rlp", "trading.smars.peg", "ops.ui.dark")
MEANINGS = ("route to RLP", "Power Peg", "dark theme")

definitions = st.builds(
    lambda i, m, life, safe, trading: FlagDefinition(
        IDS[i], MEANINGS[m], safe, trading, life, date(2012, 1, 1), owner="o"
    ),
    st.integers(0, len(IDS) - 1),
    st.integers(0, len(MEANINGS) - 1),
    st.sampled_from(list(Lifecycle)),
    st.booleans(),
    st.booleans(),
)
versions = st.lists(st.lists(definitions, max_size=4), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(versions)
def test_accepted_history_never_maps_an_id_to_two_hashes(
    history: list[list[FlagDefinition]],
) -> None:
    ledger = RegistryLedger()
    meanings: dict[str, set[str]] = {}
    lifecycles: dict[str, list[Lifecycle]] = {}
    accepted_ids: list[set[str]] = []
    for number, flags in enumerate(history):
        doc = RegistryDocument(f"v{number}", tuple(flags), tuple(range(1, len(flags) + 1)))
        if ledger.admit(doc, f"v{number}"):
            continue
        accepted_ids.append({f.id for f in flags})
        for f in flags:
            meanings.setdefault(f.id, set()).add(f.meaning_hash)
            lifecycles.setdefault(f.id, []).append(f.lifecycle)
    for flag_id, hashes in meanings.items():
        assert len(hashes) == 1, flag_id
        ranks = [life.rank for life in lifecycles[flag_id]]
        assert ranks == sorted(ranks), flag_id
    for earlier, later in itertools.pairwise(accepted_ids):
        assert earlier <= later


def test_first_version_with_distinct_ids_is_accepted() -> None:
    flags = tuple(
        FlagDefinition(i, m, False, True, Lifecycle.ACTIVE, date(2012, 1, 1))
        for i, m in zip(IDS, MEANINGS, strict=True)
    )
    ledger = RegistryLedger()
    assert ledger.admit(RegistryDocument("v0", flags, (1, 2, 3)), "v0") == []
