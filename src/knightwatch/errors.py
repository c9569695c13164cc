"""One root for every error knightwatch raises, so an embedding program can catch them all.

Each class keeps its built-in base as well (`LimitsError` is still a
`ValueError`, `ControlPlaneUnavailable` still a `RuntimeError`), so existing
`except ValueError` clauses keep working; `except KnightwatchError` is the one
clause that catches everything the library itself decided to raise.
"""

from __future__ import annotations


class KnightwatchError(Exception):
    """Base of every exception defined by knightwatch."""


def escaped(text: str) -> str:
    """`text` with every character that is not printable (a newline, an escape sequence, a
    carriage return, a byte of a file name that is not UTF-8) written out as its escape
    (`\\n`, `\\x1b`), so stored or given text can neither redraw an operator's screen nor
    start a line of its own. The one place this is done: the CLI's output, its log lines,
    the release verdicts and the console's stop reasons all call it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


QUOTE_LIMIT = 80
"""Characters of a bad value an error message repeats; the rest is cut and the cut is said."""


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters with the cut stated.

    A 10 MB id must not become a 10 MB error message (or audit record): the
    operator needs the start of the value, its size and the rule it broke.
    """
    if isinstance(value, str | bytes) and len(value) > limit:
        head = repr(value[:limit])
        return (
            f"{head}... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'}, cut)"
        )
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the error being reported
        return f"<{type(value).__name__} object>"
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters, cut)"
    return text
