"""The pieces both adapters share: the watched Guard, its recorder, the lease settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from knightwatch import Limits, Order, Scope, Side, SimClock, TradingState
from knightwatch.adapters.fleet import (
    AdapterError,
    LockedWatchedGuard,
    build_guard,
    limits_of,
    with_lease,
)
from knightwatch.control.node.lease import LeasePolicy


@pytest.mark.parametrize("locked", [False, True], ids=["watched", "locked"])
def test_watchers_hear_every_halt_and_resume_and_a_failing_one_cannot_undo_a_halt(
    tmp_path: Path, locked: bool
) -> None:
    g, _ = build_guard(
        Limits(), node="n1", clock=SimClock(), recorder=None, ship=False, locked=locked
    )
    assert isinstance(g, LockedWatchedGuard) is locked
    seen: list[TradingState] = []

    def broken() -> None:
        raise RuntimeError("watcher bug")

    g.watch(broken)
    g.watch(lambda: seen.append(g.node_state()))
    g.halt(Scope.NODE, "n1", "stop", "test")
    assert seen == [TradingState.HALTED]
    assert g.node_state() is TradingState.HALTED  # the broken watcher changed nothing
    g.halt(Scope.STRATEGY, "s1", "drain", "test", state=TradingState.REDUCING)
    assert g.worst_state() is TradingState.HALTED
    g.resume(Scope.NODE, "n1", "go", "test")
    assert seen[-1] is TradingState.ACTIVE
    assert g.worst_state() is TradingState.REDUCING
    report = g.latch(Scope.FLEET, "fleet", "kill", "alice")  # a node runtime's kill
    assert seen[-1] is TradingState.HALTED
    report()


def test_records_carry_the_guards_clock_but_batch_on_host_time(tmp_path: Path) -> None:
    clock = SimClock(1_700_000_000_000_000_000)
    g, _ = build_guard(
        Limits.off(), node="n1", clock=clock, recorder=tmp_path / "a" / "rec.jsonl", ship=False
    )
    g.arm("test")
    g.on_price("X", 10.0)
    for i in range(50):
        clock.advance(1_000_000_000)  # a simulated second per order: past any flush interval
        g.check(Order(f"o{i}", "s", "X", Side.BUY, 1, 10.0))
    assert g.recorder.pending > 40  # not one write per record
    g.recorder.close()
    lines = (tmp_path / "a" / "rec.jsonl").read_text().splitlines()
    assert f'"ts":{clock.time_ns()},' in lines[-1]  # stamped in simulated time


def test_lease_and_recorder_settings_fail_with_a_named_reason(tmp_path: Path) -> None:
    policy = LeasePolicy(lease_timeout_s=0.75, heartbeat_s=0.15)
    assert with_lease(Limits(), policy).lease_timeout_s == 0.75
    with pytest.raises(AdapterError, match="lease_timeout_s: the limits set 2"):
        with_lease(Limits(lease_timeout_s=2.0), policy)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AdapterError, match="recorder: cannot open"):
        build_guard(Limits(), node="n", clock=SimClock(), recorder=blocker / "x.jsonl", ship=False)


def test_limits_are_a_limits_or_a_file_and_anything_else_is_named(tmp_path: Path) -> None:
    """`guard(ex, limits=123)` raised a TypeError from deep in pathlib."""
    assert limits_of(Limits(version="v9")).version == "v9"
    f = tmp_path / "limits.toml"
    f.write_text('version = "v7"\n')
    assert limits_of(f).version == "v7" and limits_of(str(f)).version == "v7"
    for bad in (123, None, b"limits.toml", {"version": "v1"}):
        with pytest.raises(AdapterError, match="limits: must be a Limits or the path"):
            limits_of(bad)


def test_a_latched_halts_record_is_written_under_the_lock(tmp_path: Path) -> None:
    """The node runtime writes a kill's record later from its loop while a venue thread
    holds the lock to check an order: the record must wait, not go into the recorder's
    buffer beside that order's (the adapter's own latch returned it unlocked)."""
    g, _ = build_guard(
        Limits.off(), node="n1", clock=SimClock(), recorder=None, ship=False, locked=True
    )
    assert isinstance(g, LockedWatchedGuard)
    heard: list[TradingState] = []
    g.watch(lambda: heard.append(g.node_state()))
    report = g.latch(Scope.FLEET, "fleet", "kill", "alice")
    assert heard == [TradingState.HALTED]  # the watchers are still told
    done = threading.Event()

    def later() -> None:
        report()
        done.set()

    with g.lock:
        t = threading.Thread(target=later)
        t.start()
        assert not done.wait(0.2), "the halt's record was written while the lock was held"
    assert done.wait(15.0)
    t.join(15.0)
