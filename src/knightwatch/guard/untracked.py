"""The Guard's large containers of plain values are kept out of the garbage collector's walk.

Why: Python's cyclic collector visits every element of every container it
tracks in a full collection, and a collection runs inside whichever call
allocates when one is due: an order's `check`. One is due whenever the
objects that survived earlier collections have grown by a quarter (CPython's
rule); a Guard holds few tracked objects, so its turnover window's entries
alone make one due again and again while it trades. The duplicate check's
id sets alone made a full collection take 152 ms with 1.8 million ids held,
growing with them (the default capacity is 15 million; `python
bench/guard_bench.py --memory 2000000 --window 10800`, column
"full collection"); 2,000 symbols' full rate windows (1,000 timestamps each,
the default) add about 7.5 ms (2,000 such deques timed alone).

A set, a deque or a list of strings, integers or floats (or of tuples of them)
cannot be part of a reference cycle: nothing it holds refers back to
anything. The collector gains nothing by walking it, so `untracked` tells
CPython's collector to stop (`PyObject_GC_UnTrack`, the C API call a
container's own deallocator makes). The containers keep their speed: this is
done once, when each is made, and no operation on them tracks them again.
Dicts were measured as the alternative (a dict of plain keys and values is
never tracked): with 600,000 ids held and coming and going, an add took 0.74-0.75
µs at p50 against 0.47-0.49 with sets, and p99.9 9 against 6 µs
(`bench/orderids_bench.py`, the build that used them, alternating).

Only for containers whose elements are plain values: a container that can
hold an object with references of its own must stay tracked, or a cycle
through it would never be collected. Elsewhere than CPython (no C API to
call), nothing changes.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _untrack_call() -> Callable[[object], None] | None:
    if sys.implementation.name != "cpython":
        return None
    call = ctypes.pythonapi.PyObject_GC_UnTrack
    call.argtypes = (ctypes.py_object,)
    call.restype = None
    return call


_UNTRACK = _untrack_call()


def untracked(container: T) -> T:
    """`container`, no longer walked by the cyclic garbage collector (CPython).

    Only for a set, deque or list that will hold plain values (str, int, float,
    tuples of them), or an object whose fields only ever hold such values (and enum
    members): nothing in it can refer back, so no cycle can pass through it.
    """
    if _UNTRACK is not None and gc.is_tracked(container):
        _UNTRACK(container)
    return container
