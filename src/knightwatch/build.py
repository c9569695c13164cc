"""Which build of knightwatch is running: pure Python, or the hot path compiled with mypyc.

The compiled build is the same source compiled to C extension modules by
mypyc (`make compiled`, or `HATCH_BUILD_HOOK_ENABLE_CUSTOM=true pip install .`
where a C compiler is present); everything else, and every platform without a
compiler, runs the pure package. Both must decide alike, which is why
`make test` runs the tests on both. `python -m knightwatch.build` says which
one is installed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from typing import Final

HOT_PATH: Final = (
    "knightwatch.guard.engine",
    "knightwatch.guard.lanes",
    "knightwatch.guard.ledger",
    "knightwatch.guard.rates",
    "knightwatch.guard.halts",
    "knightwatch.guard.orderids",
    "knightwatch.audit.recorder",
)
"""The modules the compiled build compiles (the build hook reads this list)."""


def compiled_modules() -> tuple[str, ...]:
    """The hot-path modules that were imported from a compiled extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    out = []
    for name in HOT_PATH:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith(suffixes):
            out.append(name)
    return tuple(out)


def compiled() -> bool:
    """True if every hot-path module is compiled."""
    return len(compiled_modules()) == len(HOT_PATH)


def describe() -> str:
    done = compiled_modules()
    if not done:
        return "pure Python"
    if len(done) == len(HOT_PATH):
        return f"compiled with mypyc ({len(done)} hot-path modules)"
    return "partly compiled: " + ", ".join(done)


if __name__ == "__main__":
    print(describe())
