"""One root for every error knightwatch raises, so an embedding program can catch them all.

Each class keeps its built-in base as well (`LimitsError` is still a
`ValueError`, `ControlPlaneUnavailable` still a `RuntimeError`), so existing
`except ValueError` clauses keep working; `except KnightwatchError` is the one
clause that catches everything the library itself decided to raise.
"""

from __future__ import annotations


class KnightwatchError(Exception):
    """Base of every exception defined by knightwatch."""
