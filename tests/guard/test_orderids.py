"""The duplicate check's memory: exact within its scope, bounded by what the scope holds."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.guard.orderids import BUCKETS, SHARD_MASK, OrderIds

WINDOW = 1_000_000  # ns
BUCKET = WINDOW // BUCKETS


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, WINDOW // 3)), min_size=1, max_size=300
    )
)
def test_an_id_is_remembered_for_the_window_and_forgotten_soon_after(
    steps: list[tuple[int, int]],
) -> None:
    """Model: an id accepted at t is caught until t + window, and gone by t + window + bucket."""
    ids = OrderIds(WINDOW)
    now = 0
    accepted: dict[str, int] = {}
    for n, (name, gap) in enumerate(steps):
        now += gap
        oid = f"id{name}"
        last = accepted.get(oid)
        shard = ids.shards[hash(oid) & SHARD_MASK]
        hit = oid in shard and ids.recent(oid, now)  # the Guard's duplicate test
        if last is not None and now - last < WINDOW:
            assert hit, "a duplicate within the window must be caught"
            continue
        if last is not None and now - last >= WINDOW + 2 * BUCKET:
            assert not hit, f"step {n}: kept past the window"
        if hit:
            continue  # still within window + two buckets: the Guard blocks it
        ids.add(oid, now)
        accepted[oid] = now
    # nothing accepted outside the last window (+ bucket) is still held after forgetting
    ids.full(0, now)
    recent = {o for o, t in accepted.items() if now - t < WINDOW + 2 * BUCKET}
    held = set().union(*ids.shards)
    assert held <= recent
    assert len(held) == len(ids) == sum(len(s) for s in ids.shards), "shards are disjoint"
    assert all(oid in ids.shards[hash(oid) & SHARD_MASK] for oid in held)


def test_memory_is_bounded_by_the_ids_in_the_window() -> None:
    ids = OrderIds(WINDOW)
    per_window = 500
    step = WINDOW // per_window
    for i in range(20 * per_window):  # twenty windows at a steady rate
        ids.add(f"o{i}", i * step)
    assert len(ids) <= per_window * (1 + 2 / BUCKETS) + 2 * 4
    assert len(ids._fifo) == len(ids)


def test_forgetting_is_spread_over_later_accepts() -> None:
    ids = OrderIds(WINDOW)
    for i in range(1000):  # all in one bucket
        ids.add(f"a{i}", 0)
    ids.add("late", 3 * WINDOW)  # the whole first bucket expires at once
    assert len(ids) > 900, "one accept forgets a few ids, not the whole bucket"
    for i in range(400):
        ids.add(f"b{i}", 3 * WINDOW + i)
    assert not any(f"a{i}" in ids for i in range(1000))


def test_session_scope_never_forgets_until_cleared() -> None:
    ids = OrderIds(None)
    for i in range(100):
        ids.add(f"o{i}", i * 10**12)
    assert not ids.full(1000, 10**15) and len(ids) == 100
    assert ids.full(100, 10**15)
    assert ids.clear() == 100 and len(ids) == 0


def test_full_forgets_expired_ids_before_saying_so() -> None:
    ids = OrderIds(WINDOW)
    for i in range(10):
        ids.add(f"o{i}", 0)
    assert ids.full(10, WINDOW // 2)
    assert not ids.full(10, 2 * WINDOW) and len(ids) == 0


def test_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window_ns"):
        OrderIds(0)


def test_an_id_added_twice_is_counted_once_and_leaves_once() -> None:
    ids = OrderIds(WINDOW)
    ids.add("x", 0)
    ids.add("x", 1)  # adopted again after a restart
    assert len(ids) == 1 and "x" in ids
    for i in range(50):
        ids.add(f"later{i}", 3 * WINDOW + i)
    assert "x" not in ids and len(ids) == 50


def test_ids_are_spread_over_the_shards() -> None:
    ids = OrderIds(None)
    for i in range(100_000):
        ids.add(f"o{i}", i)
    sizes = [len(s) for s in ids.shards]
    assert sum(sizes) == len(ids) == 100_000
    # a rebuild touches one shard: none holds more than a few times its share
    assert max(sizes) < 3 * 100_000 / len(sizes)


@pytest.mark.parametrize("window", [WINDOW, None])
def test_the_collector_walks_none_of_the_ids(window: int | None) -> None:
    """A full collection visits every element of a container it tracks, inside whichever
    call allocates when it is due (an order's): the held ids must not be among them."""
    ids = OrderIds(window)
    step = 3 * WINDOW // 20_000
    for i in range(20_000):  # ids come and go
        ids.add(f"o{i}", i * step)
    ids.clear()  # a new session makes new containers: still not walked
    for i in range(1_000):
        ids.add(f"p{i}", i)
    for held in (*ids.shards, ids._fifo):
        assert not gc.is_tracked(held)
    assert len(ids) == 1_000 and all(f"p{i}" in ids for i in range(1_000))
