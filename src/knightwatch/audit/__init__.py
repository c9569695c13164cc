"""The flight recorder: an append-only, hash-chained record of every decision.

It answers, after the fact, why each order went out or was blocked (which node,
release, flag snapshot, limits version and rules), and `verify` proves the
record was not edited, cut, reordered or padded since it was sealed, up to a head
hash kept elsewhere (`anchor`; a chain alone can be rewritten whole). A record
is in the file (the operating system's hands) before `record_decision` returns.
"""

from knightwatch.audit.chain import GENESIS, Seal
from knightwatch.audit.errors import (
    AuditError,
    ChainCorrupt,
    OrderNotFound,
    RecorderLocked,
    UnwrittenRecords,
)
from knightwatch.audit.log import MappedLog, NotARegularFile
from knightwatch.audit.read import decode_record, last_lines
from knightwatch.audit.record import (
    AuditContext,
    DecisionRecord,
    EventRecord,
    FsyncPolicy,
    format_ts,
)
from knightwatch.audit.recorder import RECOVERY, FlightRecorder
from knightwatch.audit.sink import MemorySink, Sink
from knightwatch.audit.verify import (
    Problem,
    ProblemKind,
    VerifyReport,
    verify_file,
    verify_lines,
)
from knightwatch.audit.why import Explanation, explain_order

__all__ = [
    "GENESIS",
    "RECOVERY",
    "AuditContext",
    "AuditError",
    "ChainCorrupt",
    "DecisionRecord",
    "EventRecord",
    "Explanation",
    "FlightRecorder",
    "FsyncPolicy",
    "MappedLog",
    "MemorySink",
    "NotARegularFile",
    "OrderNotFound",
    "Problem",
    "ProblemKind",
    "RecorderLocked",
    "Seal",
    "Sink",
    "UnwrittenRecords",
    "VerifyReport",
    "decode_record",
    "explain_order",
    "format_ts",
    "last_lines",
    "verify_file",
    "verify_lines",
]
