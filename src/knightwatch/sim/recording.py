"""Flight recorders for replay nodes: a real file per node, or a bounded chain in memory.

With `--report DIR` each node's Guard writes `DIR/audit/<node>.jsonl`, the same
hash-chained file a live node writes, so `knightwatch audit why ORDER --file ...`
and `knightwatch audit verify` work on replay orders. Without a report the
chain is still sealed (the Guard's recording path is the live one) but only
the last line is kept, so a run of millions of orders needs constant memory.

Replay settings trade durability for speed where durability means nothing:
the simulated clock makes the flush interval simulated time, batches are large
and nothing is fsynced (the file is rewritten by the next run anyway).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection
from pathlib import Path

from knightwatch.audit.record import FsyncPolicy
from knightwatch.audit.recorder import FlightRecorder
from knightwatch.clock import Clock

NODE_FILE = re.compile(r"n[0-9]+\.jsonl")
"""A node's flight-record file in a replay's audit directory (node ids are n1..nN)."""
BATCH = 8192
FLUSH_INTERVAL_MS = 1000.0


class TailSink:
    """A sink that keeps only the last sealed line: the chain head, in bounded memory."""

    def __init__(self) -> None:
        self.last: bytes | None = None

    def write(self, data: bytes) -> None:
        # Every sealed line ends in a newline: the last line starts after the one before.
        self.last = data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1]

    def sync(self) -> None:
        return None

    def close(self) -> None:
        return None


def node_recorder(node: str, clock: Clock, audit_dir: Path | None) -> FlightRecorder:
    """The recorder for one node's Guard: `audit_dir/<node>.jsonl`, or a bounded tail."""
    path: Path | None = None
    sink: TailSink | None = TailSink()
    if audit_dir is not None:
        audit_dir.mkdir(parents=True, exist_ok=True)
        path, sink = audit_dir / f"{node}.jsonl", None
        path.unlink(missing_ok=True)  # a replay's chain starts at its own open
    return FlightRecorder(
        path,
        clock=clock,
        batch_size=BATCH,
        flush_interval_ms=FLUSH_INTERVAL_MS,
        fsync=FsyncPolicy.NONE,
        sink=sink,
    )


def clear_other_runs(audit_dir: Path, written: Collection[str]) -> None:
    """Remove the node files in `audit_dir` this run will not write (`written`: its node
    ids, none for a run without a Guard), and the directory itself if that leaves it empty.

    A report directory used again kept an earlier run's files: after an unguarded run (no
    recorder) or a smaller fleet, `replay` announced "flight recorder: 4 node files" and
    `audit why` answered from another run's orders. Other files are left alone."""
    try:
        entries = list(audit_dir.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if NODE_FILE.fullmatch(entry.name) and entry.stem not in written and not entry.is_dir():
            entry.unlink(missing_ok=True)
    if not written:
        with contextlib.suppress(OSError):  # not empty: what is left is not ours
            audit_dir.rmdir()
