"""The shipping buffer is bounded in bytes as well as in lines.

While the fleet's audit stream is away, sealed lines wait in the node's shipping buffer.
Its bound was 100,000 lines whatever their size; a recorder's line may be up to 16 KiB
(an order with long fields, a blocked order quoting them), so a node rejecting a router's
junk through an outage could hold 1.6 GB of copies in memory. The file keeps every line
either way; the buffer drops its oldest, counted (`AUDIT_DROPPED`).
"""

from __future__ import annotations

import threading

from knightwatch.control.node.shipping import DEFAULT_MAX_BYTES, ShippingSink

KIB = 1024


def _lines(first: int, n: int, size: int) -> bytes:
    """`n` lines of `size` bytes (without the newline), numbered from `first`."""
    return b"".join(f"{i:08d}".encode().ljust(size, b"x") + b"\n" for i in range(first, first + n))


def test_the_default_buffer_holds_at_most_its_bytes_of_long_lines() -> None:
    sink = ShippingSink()
    size, batch, batches = 16 * KIB, 256, 20  # 80 MiB of 16 KiB lines
    for b in range(batches):
        sink.write(_lines(b * batch, batch, size))
    kept = sink.take(10**9, 10**12)
    assert sum(map(len, kept)) <= DEFAULT_MAX_BYTES
    assert len(kept) == DEFAULT_MAX_BYTES // size  # as many as fit, not fewer
    assert sink.dropped == batch * batches - len(kept)
    assert kept[-1].startswith(f"{batch * batches - 1:08d}".encode())  # the newest kept
    assert kept[0].startswith(f"{sink.dropped:08d}".encode())  # the oldest dropped


def test_a_byte_bound_drops_the_oldest_and_take_gives_room_back() -> None:
    sink = ShippingSink(max_buffered=1000, max_bytes=10 * KIB)
    sink.write(_lines(0, 8, KIB))
    sink.write(_lines(8, 4, KIB))
    assert sink.dropped == 2  # 12 lines of 1 KiB, 10 fit
    assert [line[:8] for line in sink.take(3, 10**6)] == [b"00000002", b"00000003", b"00000004"]
    sink.write(_lines(12, 3, KIB))  # the room taken is free again
    assert sink.dropped == 2
    assert len(sink.take(100, 10**6)) == 10


def test_writes_from_a_recorder_thread_and_takes_from_the_loop_keep_the_count() -> None:
    """A `LockedGuard`'s recorder hands sealed batches from the engine's thread while the
    loop takes: every line written is either taken or dropped, none counted twice."""
    sink = ShippingSink(max_buffered=500, max_bytes=64 * KIB)
    taken: list[bytes] = []
    done = threading.Event()

    def writer() -> None:
        for b in range(400):
            sink.write(_lines(b * 10, 10, 100))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        taken.extend(sink.take(50, 10**6))
    thread.join()
    taken.extend(sink.take(10**6, 10**9))
    assert len(taken) + sink.dropped == 4000
    numbers = [int(line[:8]) for line in taken]
    assert numbers == sorted(numbers)
