"""The Guard's own errors, outside the engine module so the compiled build can compile it.

mypyc compiles the engine; a class there deriving from a built-in exception
(`RuntimeError`) is a thing it cannot compile, so such classes live here.
"""

from __future__ import annotations

from knightwatch.errors import KnightwatchError


class RecorderUnavailable(KnightwatchError, RuntimeError):
    """A loosening call (resume) refused because the flight recorder cannot record it."""
