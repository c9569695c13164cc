"""Every console request on the record, in the flight recorder's own hash-chained format.

A console that can stop a fleet must be able to say afterwards who pressed
what, from where, and what was refused: logins, failed logins, every 401 and
403, every kill with the nodes that confirmed it. The records are ordinary
flight-recorder events (kind `console`, node `console`), so `knightwatch audit
verify` checks this file with no special case, and an edit, a deletion or a
cut tail is reported like any other.

The search reads the file back through the same decoder `audit verify` uses
and answers from verified records only: a search over an edited file would
report a forgery as fact.

A console whose record cannot be written refuses to lift a kill (resume
requests and approvals answer 503 naming the audit), as the Guard refuses to
trade without its recorder; a kill is never refused for it: stopping must not
wait on a disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from knightwatch.audit.errors import UnwrittenRecords
from knightwatch.audit.read import decode_record, read_lines
from knightwatch.audit.record import AuditContext, EventRecord, FsyncPolicy
from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import Sink
from knightwatch.audit.verify import verify_file
from knightwatch.clock import Clock

log = logging.getLogger(__name__)

KIND = "console"
CONTEXT = AuditContext(node="console")


def params_hash(params: object) -> str:
    """A short, stable digest of a request's canonical parameters (msgspec, sorted keys)."""
    encoded = msgspec.json.encode(params, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]


class ConsoleAudit:
    """The console's own recorder; `record` never raises into a request."""

    def __init__(self, path: Path, clock: Clock, *, sink: Sink | None = None) -> None:
        """Records to `path`, or to `sink` instead when one is given (the recorder's memory
        mode: a `MemorySink` with a capacity stands for a full disk)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._recorder = FlightRecorder(
            None if sink is not None else path,
            clock=clock,
            batch_size=1,
            flush_interval_ms=0.0,
            fsync=FsyncPolicy.BATCH,
            sink=sink,
        )

    @property
    def healthy(self) -> bool:
        """Whether the next record can be written: the recorder's own check before a
        decision (`ready`), which also retries what a failed write kept."""
        return self._recorder.ready()

    @property
    def problem(self) -> str:
        """Why the record last could not be written ("" while it always could)."""
        return self._recorder.problem

    @property
    def head(self) -> str:
        return self._recorder.head

    def record(self, **fields: str | int | float | bool | None) -> None:
        """One request: who (actor, roles, token, ip, agent), what (action, scope, params
        hash), and the answer (status, result, detail)."""
        self._recorder.record_event(KIND, CONTEXT, **fields)
        self._recorder.flush()

    def close(self) -> None:
        """Close the recorder; records it could not write are reported, not raised: the
        console is stopping either way and its stop must not hang on a full disk."""
        try:
            self._recorder.close()
        except UnwrittenRecords as exc:
            log.error("console audit closed with records unwritten: %s", exc)


class Query(msgspec.Struct, frozen=True):
    actor: str = ""
    action: str = ""
    scope: str = ""
    """Matches the record's scope or key ("fleet", "n2", "MOMO")."""
    since_ns: int = 0
    until_ns: int = 0
    limit: int = 200


def _matches(rec: EventRecord, q: Query) -> bool:
    d = rec.data
    if q.actor and d.get("actor") != q.actor:
        return False
    if q.action and d.get("action") != q.action:
        return False
    if q.scope and q.scope not in (d.get("scope"), d.get("key")):
        return False
    if q.since_ns and rec.ts < q.since_ns:
        return False
    return not (q.until_ns and rec.ts > q.until_ns)


def _events(path: Path) -> Iterator[tuple[bytes, EventRecord]]:
    with open(path, "rb") as f:
        for line in read_lines(f):
            if line.startswith(b"\0"):
                return  # the recorder's allocated, not yet written tail
            rec = decode_record(line)
            if isinstance(rec, EventRecord) and rec.kind == KIND:
                yield line, rec


class SearchResult(msgspec.Struct, frozen=True):
    records: list[EventRecord]
    intact: bool
    problem: str
    """The first problem `audit verify` found ("" when intact)."""
    head: str
    """The chain head of the verified file (what an export is checked against)."""


def search(path: Path, query: Query) -> SearchResult:
    """The newest `query.limit` matching records, newest first, with the file's verdict."""
    report = verify_file(path)
    problem = ""
    if not report.intact and report.problems:
        first = report.problems[0]
        problem = f"line {first.line}: {first.kind.value}: {first.detail}"
    found = [rec for _, rec in _events(path) if _matches(rec, query)] if report.intact else []
    return SearchResult(found[::-1][: query.limit], report.intact, problem, report.head)


def export_lines(path: Path, query: Query) -> Iterator[bytes]:
    """NDJSON: the matching records as stored (each keeps its chain fields), then one
    line with the chain head and whether the whole file verified."""
    report = verify_file(path)
    if report.intact:
        for line, rec in _events(path):
            if _matches(rec, query):
                yield line.rstrip(b"\n") + b"\n"
    yield (
        msgspec.json.encode(
            {
                "chain_head": report.head,
                "intact": report.intact,
                "records": report.records,
                "file": os.fspath(path),
            }
        )
        + b"\n"
    )
