"""Failures of the flight recorder, each a distinct type so callers can fail closed precisely."""

from __future__ import annotations

from knightwatch.errors import KnightwatchError


class AuditError(KnightwatchError):
    """Base for every flight-recorder failure."""


class ChainCorrupt(AuditError, ValueError):
    """An existing file cannot be extended: a seal does not match its batch or chain, a
    line after the last seal is not the next record, or its end is no crash's torn line.

    Appending after a corrupt record would bless it, so the recorder refuses to open.
    """


class RecorderLocked(AuditError):
    """Another recorder already appends to this file; two writers would fork the chain."""


class UnwrittenRecords(AuditError, OSError):
    """`close()` could not write everything recorded; the recorder stays open for a retry."""


class OrderNotFound(AuditError, LookupError):
    """No decision for this order id exists in the file."""
