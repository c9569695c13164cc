"""One error type for bad release input, so the CLI can show it without a traceback."""

from __future__ import annotations

from knightwatch.errors import KnightwatchError


class ReleaseInputError(KnightwatchError, ValueError):
    """A key, manifest, envelope, policy or flag file that cannot be used.

    The message always names the file or field and the rule it broke, because an
    operator reading it at 09:25 has no time to open a debugger.
    """
