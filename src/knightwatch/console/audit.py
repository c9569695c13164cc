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

The recorder is used by one thread of its own, never the server's event loop: a
record is queued to it in the order the requests were answered and written in that
order, and the check before lifting a kill runs on that thread after every record
queued before it. A disk that hangs stalls the record, not the kills (before, it was
written on the loop, and every request after it waited for the disk). The queue is
bounded (`MAX_QUEUED`): past it, a request's record is dropped and counted, never
waited for; one record naming how many were lost follows the records queued before
them, and the console refuses to lift a kill until that count is on the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from knightwatch.audit.errors import UnwrittenRecords
from knightwatch.audit.read import decode_record, read_lines
from knightwatch.audit.record import AuditContext, EventRecord, FsyncPolicy
from knightwatch.audit.recorder import FlightRecorder
from knightwatch.audit.sink import Sink
from knightwatch.audit.verify import verify_file
from knightwatch.clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

KIND = "console"
CONTEXT = AuditContext(node="console")
MAX_QUEUED = 100_000
"""Records waiting for a disk that hangs, at most (a few hundred bytes each): hours of
an operator's clicks, and a bound on what a stuck disk can make the console hold."""
DROPPED = "console_records_dropped"


def params_hash(params: object) -> str:
    """A short, stable digest of a request's canonical parameters (msgspec, sorted keys)."""
    encoded = msgspec.json.encode(params, order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]


class _Stamped:
    """The recorder's clock: on the writer thread, while a queued record is written, the
    wall time it was queued at (its request's, as when records were written on the loop);
    else, and on every other thread, `clock` itself."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._local = threading.local()

    def monotonic_ns(self) -> int:
        return self._clock.monotonic_ns()

    def time_ns(self) -> int:
        at: int | None = getattr(self._local, "at", None)
        return self._clock.time_ns() if at is None else at

    @contextlib.contextmanager
    def at(self, ns: int) -> Iterator[None]:
        self._local.at = ns
        try:
            yield
        finally:
            self._local.at = None


class ConsoleAudit:
    """The console's own recorder, on a thread of its own; `record` never raises into a
    request and never waits for the disk."""

    def __init__(
        self, path: Path, clock: Clock, *, sink: Sink | None = None, max_queued: int = MAX_QUEUED
    ) -> None:
        """Records to `path`, or to `sink` instead when one is given (the recorder's memory
        mode: a `MemorySink` with a capacity stands for a full disk)."""
        self._max_queued = max_queued
        self._count_lock = threading.Lock()
        self._queued = 0
        self.dropped = 0
        """Records dropped because `max_queued` were waiting, not yet on the record."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._stamped = _Stamped(clock)
        self._recorder = FlightRecorder(
            None if sink is not None else path,
            clock=self._stamped,
            batch_size=1,
            flush_interval_ms=0.0,
            fsync=FsyncPolicy.BATCH,
            sink=sink,
        )
        # one worker: records are written in the order they were queued, and nothing
        # else ever touches the recorder (it is not shared between threads)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-audit")

    def _on_writer(self, fn: Callable[[], T]) -> Future[T]:
        return self._writer.submit(fn)

    def _check(self) -> tuple[bool, str]:
        ready = self._recorder.ready()
        with self._count_lock:
            dropped = self.dropped
        if ready and dropped:
            return False, f"{dropped} records dropped while the disk did not answer"
        return ready, self._recorder.problem

    async def writable(self) -> tuple[bool, str]:
        """Whether the next record can be written, and why not: the recorder's own check
        before a decision (`ready`, which also retries what a failed write kept), run after
        every record queued before this call."""
        return await asyncio.wrap_future(self._on_writer(self._check))

    async def settled(self) -> None:
        """Returns once every record queued before this call was written (or failed)."""
        await asyncio.wrap_future(self._on_writer(lambda: None))

    @property
    def healthy(self) -> bool:
        """`writable()` for a caller off the event loop: waits for the records before it."""
        return self._on_writer(self._check).result()[0]

    @property
    def problem(self) -> str:
        """Why the record last could not be written ("" while it always could)."""
        return self._on_writer(self._check).result()[1]

    @property
    def head(self) -> str:
        return self._on_writer(lambda: self._recorder.head).result()

    def _write(self, at: int, fields: dict[str, str | int | float | bool | None]) -> None:
        with self._count_lock:
            self._queued -= 1
        try:
            with self._stamped.at(at):
                self._recorder.record_event(KIND, CONTEXT, **fields)
                self._recorder.flush()
        except Exception:  # the record must never take the answer (or a kill) down with it
            log.exception("console audit record failed")

    def _write_dropped(self, at: int) -> None:
        """The count of a run of dropped records, after the records queued before them."""
        with self._count_lock:
            dropped, self.dropped = self.dropped, 0
        try:
            with self._stamped.at(at):
                self._recorder.record_event(DROPPED, CONTEXT, count=dropped)
                self._recorder.flush()
        except Exception:
            log.exception("console audit: the count of %d dropped records failed", dropped)

    def record(self, **fields: str | int | float | bool | None) -> Future[None]:
        """One request: who (actor, roles, token, ip, agent), what (action, scope, params
        hash), and the answer (status, result, detail). Queued, in call order, to the
        recorder's thread; the future is done once it was written (or failed, logged).
        With `max_queued` waiting it is dropped and counted (done at once, never waited
        for)."""
        at = self._clock.time_ns()  # when it happened, not when the disk took it
        with self._count_lock:
            if self._queued >= self._max_queued:
                self.dropped += 1
                if self.dropped == 1:  # a run of drops begins: its count follows the queue
                    log.error(
                        "console audit: %d records wait for the disk; dropping (counted)",
                        self._queued,
                    )
                    self._on_writer(lambda: self._write_dropped(at))
                done: Future[None] = Future()
                done.set_result(None)
                return done
            self._queued += 1
        return self._on_writer(lambda: self._write(at, fields))

    def close(self) -> None:
        """Write what is queued and close the recorder; records it could not write are
        reported, not raised: the console is stopping either way and its stop must not
        hang on a full disk. Blocks: call it off the event loop."""
        try:
            self._on_writer(self._recorder.close).result()
        except UnwrittenRecords as exc:
            log.error("console audit closed with records unwritten: %s", exc)
        except RuntimeError:  # closed before: the writer is shut down
            return
        self._writer.shutdown(wait=True)


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
