"""The mapped file itself: segments allocated ahead, prefault that changes nothing, cut at close."""

from __future__ import annotations

import os
from pathlib import Path

from knightwatch.audit.log import MappedLog


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
