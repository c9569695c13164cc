"""The mapped file itself: segments allocated ahead, prefault and preload that change nothing,
cut at close."""

from __future__ import annotations

import os
import stat
import tracemalloc
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.audit import AuditContext, FlightRecorder, FsyncPolicy, verify_file
from knightwatch.audit.log import SEGMENT, MappedLog, _madvise
from knightwatch.clock import SimClock

from .helpers import resident


def test_segments_are_allocated_ahead_and_cut_at_close(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = MappedLog(path, segment=1 << 16)
    log.start(0)
    assert os.path.getsize(path) == 1 << 16  # allocated: a full disk shows up here, not later
    line = b'{"seq":0}\n' * 1000  # 10,000 bytes per append
    end = 0
    for _ in range(10):  # 100,000 bytes: the second segment is needed
        if end + len(line) > log.seg_end:
            assert log.map is not None
            log.map = log.spill(line, end)
        else:
            assert log.map is not None
            log.map.write(line)
        end += len(line)
    assert log.seg_end == 2 << 16 and len(log.retired) == 1
    log.close_retired()
    log.close(end)
    assert path.read_bytes() == line * 10


def test_prefault_changes_no_byte_and_ignores_what_is_not_mapped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = MappedLog(path, segment=1 << 16)
    log.start(0)
    assert log.map is not None
    log.map.write(b"x" * 5000)
    log.prefault(0, 1 << 16)
    log.prefault(10 << 16, 4096)  # far beyond the mapped segments: nothing to do
    assert os.pread(log.fd, 5001, 0) == b"x" * 5000 + b"\0"
    log.close(5000)
    assert path.read_bytes() == b"x" * 5000


def test_preload_reads_pages_in_changes_no_byte_and_stops_where_nothing_is_mapped(
    tmp_path: Path,
) -> None:
    """The first touch of fresh memory happens in `preload` (the background thread), so a
    record copied there later finds its page in memory. The kernel's own read-ahead is
    switched off for its map here (MADV_RANDOM), so what is in memory is what was asked."""
    path = tmp_path / "a.jsonl"
    log = MappedLog(path, segment=1 << 20)
    log.start(0)
    assert log.map is not None and _madvise is not None
    assert _madvise(log._ahead_bases[0], 1 << 20, 1) == 0  # MADV_RANDOM
    log.map.write(b"x" * 5000)
    assert resident(log, 0, 1 << 20).count(True) == 2  # the two pages written
    half = 1 << 19
    assert log.preload(3 * 4096, half) == 3 * 4096 + half
    assert log._prefault, "this kernel lacks MADV_POPULATE_READ (Linux 5.14+)"
    pages = resident(log, 0, 1 << 20)
    assert pages[2:3] == [False]
    assert all(pages[3 : 3 + half // 4096]) and not any(pages[3 + half // 4096 :])
    # past the mapped segment: it says how far it got, so the caller comes back for the rest
    assert log.preload(half, 1 << 20) == 1 << 20
    assert os.pread(log.fd, 5001, 0) == b"x" * 5000 + b"\0"
    log.close(5000)
    assert path.read_bytes() == b"x" * 5000


def test_an_append_that_outruns_preload_reads_in_its_own_page_not_a_read_around(
    tmp_path: Path,
) -> None:
    """A record copy into a page nobody read in yet must not make the kernel read the pages
    around it (8 MiB on the build machine: 35-85 ms of one blocked order's call, zeroing
    memory the host had to supply). The appends' map reads nothing ahead; `preload`'s does."""
    segment = 16 << 20
    log = MappedLog(tmp_path / "a.jsonl", segment=segment)
    log.start(0)
    assert log.map is not None and log._prefault
    log.map.seek(segment // 2)
    log.map.write(b"x")  # the page fault of a record copy, nothing read in before it
    assert resident(log, 0, segment).count(True) == 1
    assert log.preload(segment // 4, 4096) == segment // 4 + 4096
    assert resident(log, 0, segment).count(True) >= 2  # the page preload was asked for too
    log.close(0)


@settings(max_examples=40, deadline=None)
@given(
    st.binary(min_size=0, max_size=20_000),
    st.integers(0, 20_000),
    st.integers(0, 20_000),
    st.integers(1, 5_000),
)
def test_feed_hashes_exactly_the_bytes_of_the_range_through_any_buffer(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, a: int, b: int, size: int
) -> None:
    path = tmp_path_factory.mktemp("feed") / "a.jsonl"
    log = MappedLog(path, segment=1 << 16)
    log.start(0)
    assert log.map is not None
    log.map.write(data)
    start, end = sorted((min(a, len(data)), min(b, len(data))))
    h = sha256()
    log.feed(h, start, end, bytearray(size))
    assert h.hexdigest() == sha256(data[start:end]).hexdigest()
    log.close(len(data))


def test_feed_reads_through_the_callers_buffer_not_a_new_one(tmp_path: Path) -> None:
    """A new buffer per pass is memory touched for the first time, which cost a Guard
    call more than the hash did (4-12 ms for a few MiB on the build machine)."""
    log = MappedLog(tmp_path / "a.jsonl", segment=16 << 20)
    log.start(0)
    assert log.map is not None
    log.map.write(os.urandom(8 << 20))
    buf = bytearray(1 << 20)
    h = sha256()
    tracemalloc.start()
    try:
        log.feed(h, 0, 8 << 20, buf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # against 8 MiB for a pread of the range
    log.close(8 << 20)


def test_feed_past_the_end_of_the_file_is_an_error_not_a_loop(tmp_path: Path) -> None:
    log = MappedLog(tmp_path / "a.jsonl", segment=1 << 16)
    log.start(0)
    with pytest.raises(OSError, match="ends before byte"):
        log.feed(sha256(), 0, (1 << 16) + 10, bytearray(4096))
    log.close(0)


def test_a_new_file_is_on_disk_by_name_before_the_recorder_writes_to_it(
    tmp_path: Path, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync writes a file's data, not the directory entry naming it: a new recorder file
    (even with `FsyncPolicy.ALWAYS`) could vanish whole in a machine crash. Its directory
    is fsynced when it is created (a crash cannot be staged here: the fsyncs are watched)."""
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def watch(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watch)
    directory = tmp_path.stat()
    path = tmp_path / "n1.jsonl"
    rec = FlightRecorder(path, clock=clock, fsync=FsyncPolicy.ALWAYS)
    assert synced == [(directory.st_dev, directory.st_ino)]
    rec.record_event("marker", AuditContext(node="n1"))
    rec.close()
    synced.clear()
    FlightRecorder(path, clock=clock, fsync=FsyncPolicy.ALWAYS).close()
    assert synced == []  # an existing file's entry was synced when it was made


def test_reopening_a_sparse_file_reads_its_data_not_its_hole(
    tmp_path: Path, clock: SimClock
) -> None:
    """A reopen read every zero byte after the data, 1 MiB at a time: a file cut to 64 GiB
    with `truncate` (sparse: nothing on disk) had a node's start read 64 GiB of zeros.
    The hole is skipped (`SEEK_DATA`/`SEEK_HOLE`); the bytes this process reads
    (`rchar` of /proc/self/io) show it."""
    path = tmp_path / "n1.jsonl"
    with FlightRecorder(path, clock=clock) as rec:
        rec.record_event("marker", AuditContext(node="n1"), n=1)
    data = path.read_bytes()
    os.truncate(path, 64 * 1024**3)
    before = _read_so_far()
    with FlightRecorder(path, clock=clock) as rec:
        read = _read_so_far() - before
        assert rec.opened_at == len(data)
        rec.record_event("marker", AuditContext(node="n1"), n=2)
    assert read < SEGMENT  # far less than the hole
    assert path.read_bytes().startswith(data)
    report = verify_file(path)
    assert report.intact and report.records == 2


def _read_so_far() -> int:
    """Bytes this process has read through read(2)-like calls (/proc/self/io `rchar`)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
