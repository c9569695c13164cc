"""A long-running process reads its sockets without mapping and unmapping memory per read,
and its garbage collector does not walk what it loaded at start.

Why: asyncio reads a ready socket with `recv(256 KiB)`. CPython allocates the
256 KiB, the kernel fills in the few hundred bytes a control-plane message
has, and the bytes object is shrunk to fit. glibc's malloc serves a request
above its mmap threshold (128 KiB, raised only when a larger mapped block is
freed, which this pattern never does: the block is shrunk before it is freed)
with a fresh mapping, so every message read costs an `mmap`, an `mremap` and a
`munmap`, and the `munmap` interrupts every other core running one of the
process's threads (the flight recorder's, the log writer's) to flush its
TLB (`strace -c` on a node under `bench/kill_bench.py`: one `mmap`, `mremap`
and `munmap` per `recvfrom`). Without them a node spent 0.058-0.065 ms (11-12
%) less CPU per kill (`bench/kill_bench.py --nodes 16 --kills 600`, alternating
with the build before, two runs each), which on a machine with fewer cores
than nodes is latency taken from the next node's confirmation.

`serve_reads_from_heap` fixes glibc's thresholds (mmap at 1 MiB, trimming the
heap's top at 8 MiB) so such blocks come from the heap and go back to it. It
changes nothing else: no allocation changes size, and memory above 8 MiB of
free heap top is still given back. On another C library (musl, macOS) it does
nothing and says so.

`freeze_startup_objects` moves every object the process holds once it has
loaded its code (modules, classes, functions: 74,000 objects for the CLI) to
the collector's permanent generation. A full collection visits every tracked
object, and it runs in whichever call allocates when one is due, an order's
or a kill's: with the code loaded it took 12 ms, after the freeze under 0.1 ms
(the command is in docs/flight-recorder.md, "Where the tail comes from").
What a frozen object refers to is never collected, so only what is loaded
once is frozen: the commands call it before they start serving.
"""

from __future__ import annotations

import ctypes
import gc
import platform
from typing import Final

MMAP_THRESHOLD: Final = 1 << 20
"""Requests up to this size come from the heap (asyncio asks for 256 KiB per read)."""
TRIM_THRESHOLD: Final = 8 << 20
"""Free memory at the heap's top kept for the next read instead of given back at once."""
_M_TRIM_THRESHOLD: Final = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_THRESHOLD: Final = -3


def serve_reads_from_heap() -> bool:
    """Set glibc's malloc thresholds for this process; True if they were set.

    Call it once when a long-running command starts (node, gateway, supervisor,
    console). Idempotent. False, changing nothing, where the C library is not glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # trim first: fixing the mmap threshold also stops glibc adjusting the trim one
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )


def freeze_startup_objects() -> int:
    """Move everything the collector tracks now to its permanent generation; returns how
    many objects were moved. Call it once the process has loaded its code."""
    gc.collect()  # what is already garbage goes first: frozen, it would stay for good
    gc.freeze()
    return gc.get_freeze_count()
