"""LockedGuard: the same Guard, safe from several threads at once."""

from __future__ import annotations

import threading
from pathlib import Path

from knightwatch.audit import FlightRecorder
from knightwatch.audit.verify import verify_file
from knightwatch.clock import SystemClock
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard, LockedGuard
from knightwatch.limits import Limits
from knightwatch.order import Fill, Order, Side
from knightwatch.state import Scope


def test_every_public_call_of_the_guard_is_locked() -> None:
    public = {n for n, v in vars(Guard).items() if callable(v) and not n.startswith("_")} - {
        "listen_for_halts",
        "lots",
        "quantity",
    }  # set once at wiring / pure arithmetic
    assert public <= set(vars(LockedGuard)), sorted(public - set(vars(LockedGuard)))


def test_threads_hammering_one_guard_keep_its_books_and_chain_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = SystemClock()
    recorder = FlightRecorder(path, clock=clock, batch_size=64, flush_interval_ms=1)
    guard = LockedGuard(Limits.off(), node="gw", clock=clock, recorder=recorder)
    guard.arm("test")
    guard.on_price("IBM", 100.0)
    errors: list[BaseException] = []

    def trader(t: int) -> None:
        try:
            for i in range(1_500):
                oid = f"{t}:{i}"
                if guard.check(Order(oid, f"s{t}", "IBM", Side.BUY, 10, 100.0)):
                    if i % 3:
                        guard.on_fill(Fill(oid, "IBM", Side.BUY, 10, 100.0))
                    else:
                        guard.on_cancel(oid)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(3_000):
                guard.counters()
                guard.flush_records()
                guard.exposure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=trader, args=(t,)) for t in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert guard.working_qty("IBM") == (0, 0)
    assert guard.position("IBM") == 4 * 1_000 * 10
    assert guard.counters()[0] == 6_000
    recorder.close()
    report = verify_file(path)
    assert report.intact and report.records > 6_000 * 2


def test_a_latched_halts_record_is_written_under_the_lock() -> None:
    # the node runtime latches a kill, confirms it, and writes its record later from its
    # event loop while the FIX engine's threads hold the lock to check orders: the record
    # must wait for the lock, not go into the flight recorder beside an order's
    guard = LockedGuard(Limits.off(), node="gw")
    guard.arm("test")
    guard.on_price("IBM", 100.0)
    report = guard.latch(Scope.NODE, "gw", "kill", "ops")
    d = guard.check(Order("o1", "s", "IBM", Side.BUY, 1, 100.0))
    assert d.reason is RejectReason.HALTED  # it blocks from the latch on
    done = threading.Event()

    def later() -> None:
        report()
        done.set()

    with guard.lock:  # an order being checked on another thread
        t = threading.Thread(target=later)
        t.start()
        assert not done.wait(0.2), "the halt's record was written while the lock was held"
    assert done.wait(15.0)
    t.join(15.0)
