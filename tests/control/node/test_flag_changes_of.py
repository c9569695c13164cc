"""`changes_of`: a flag's change history is its own keys' records, never a longer id's.

Flag ids hold dots, so `change.a.b.` begins the keys of flag `a.b` and of flag `a.b.c`
alike: `a.b`'s history listed `a.b.c`'s changes, and the checks that an approval was used
already (`flags set`, `rollout start`) read them as `a.b`'s own.
"""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.control.node.flags import change_key, changes_of
from knightwatch.flags.state import FlagChange, StateUnavailable


def _change(flag_id: str, revision: int, value: bool = True) -> FlagChange:
    return FlagChange(flag_id, value, (), "alice", "bob", "why", "cli", 1, {}, revision)


def _records(*changes: FlagChange) -> dict[str, tuple[bytes, int]]:
    return {
        change_key(c.flag_id, c.revision): (msgspec.json.encode(c), i)
        for i, c in enumerate(changes, 1)
    }


def test_a_longer_ids_changes_are_not_this_flags() -> None:
    records = _records(_change("a.b", 3), _change("a.b.c", 5), _change("a.bc", 7))
    assert [(c.flag_id, c.revision) for c in changes_of("a.b", records)] == [("a.b", 3)]
    assert [(c.flag_id, c.revision) for c in changes_of("a.b.c", records)] == [("a.b.c", 5)]


@pytest.mark.parametrize(("flag_id", "revision"), [("a.x", 3), ("a.b", 4)])
def test_a_record_under_another_changes_key_is_unavailable(flag_id: str, revision: int) -> None:
    """A record filed under `change.a.b.3` that holds another flag's or revision's change
    is no change of `a.b` at 3: the history cannot be told, so it fails closed."""
    records = {change_key("a.b", 3): (msgspec.json.encode(_change(flag_id, revision)), 1)}
    with pytest.raises(StateUnavailable, match=r"'change\.a\.b\.3' holds the change of"):
        changes_of("a.b", records)


def test_a_key_whose_tail_is_no_revision_number_is_skipped() -> None:
    records = _records(_change("a.b", 2))
    records["change.a.b.٣"] = (b"{}", 9)  # an Arabic-Indic digit: no revision of a.b
    assert [c.revision for c in changes_of("a.b", records)] == [2]
