"""The flight recorder: every decision and control action, appended and sealed as a hash chain.

The Guard calls `ready()` before each decision and `record_order()` after it
(`record_decision()`, which reads the fields itself, everywhere else).
With a file (the live case) recording is one JSON encode and one copy into a
memory map of the file: when the call returns the record belongs to the
operating system, so a crash of the process cannot lose a decision whose order
already left. Everything else happens on a background thread: hashing each
batch, allocating the file ahead, fsync (on its own thread, as before) and
copying sealed batches to a tee sink (fleet shipping). The seal line itself is
appended by the Guard's thread at its next `ready()`, from a hash the
background thread has already computed (a few microseconds, once per batch),
so the file has one writer and the order path takes no lock.

Without a file (tests, replays, a Guard built without a recorder) records are
kept in memory and sealed inline when a batch is full or the flush interval has
passed on the injected clock, so a replay writes the same bytes every time.

Fail closed: `ready()` is False when a write, an fsync or the background thread
failed, when the file cannot grow, or when `max_pending` records wait for a
seal; the Guard then blocks every order until the recorder recovers.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from hashlib import sha256
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Self

import msgspec

from knightwatch.audit.chain import GENESIS, SEAL, finish_seal, seal_body
from knightwatch.audit.conform import SCALARS, conform, conform_decision, safe_repr
from knightwatch.audit.errors import UnwrittenRecords
from knightwatch.audit.log import PREFAULT, PREFAULT_MIN, PRELOAD_FACTOR, MappedLog, Tail
from knightwatch.audit.record import (
    DECISION,
    AuditContext,
    DecisionHead,
    DecisionLine,
    DecisionPayload,
    DecisionTail,
    EventLine,
    EventPayload,
    FsyncPolicy,
    RepeatLine,
    Scalar,
)
from knightwatch.audit.sink import MemorySink, Sink
from knightwatch.audit.syncer import Syncer
from knightwatch.clock import Clock
from knightwatch.decision import Decision

if TYPE_CHECKING:
    from hashlib import _Hash

RECOVERY: Final = "recovery"
"""Event kind written at open when a crash left torn bytes or records without a seal."""

MAX_RECORD_BYTES: Final = 16 * 1024
"""A record longer than this has its long text fields cut (see `clip`); real ones are ~0.5 KB."""
FIELD_LIMIT: Final = 1024
"""Characters of one text field a clipped record keeps."""
_CATCH_UP: Final = 4096
"""The background thread hashes until at most this many bytes are left for the seal itself."""
SEALER_BUFFER: Final = 4 * 1024 * 1024
"""The most bytes the background thread reads and hashes per pass, through a buffer it keeps."""
HASH_BUFFER: Final = 1024 * 1024
"""The most the Guard's thread reads per pass when it hashes (a flush, a close)."""
INLINE_HASH: Final = 16 * 1024
"""The most of a handed-over batch one order's call hashes (about 9 µs here): the rest
waits for the next calls, which catch up 30-40 times faster than records (400-530 B)
are written."""
_MIN_BUFFER: Final = 64 * 1024
_OVERDUE: Final = 64
"""Batches unsealed after which the background thread hands a seal over without catching up
(a Guard thread that never pauses; the Guard's calls then hash the rest, `INLINE_HASH` each)."""
_NOTHING: Final = object()
"""What `record_decision` holds before its first record, and for an object it must re-read."""
_ENCODE_ERRORS = (AttributeError, TypeError, ValueError, OverflowError)
_UNREAD: Final = object()
"""Stands for a field that could not be read: JSON cannot carry it, so the record takes
the slow path."""
_HEAD_KEY: Final = len(b'{"kind":')
"""What a `DecisionHead` encodes before its first value (cut off to splice the rest in)."""
_TAIL_KEY: Final = len(b'{"accepted":')
"""What a `DecisionTail` encodes before its first value."""


class _Ready:
    """A batch hashed by the background thread, waiting for the Guard's thread to seal it."""

    __slots__ = ("hasher", "start", "upto")

    def __init__(self, start: int, upto: int, hasher: _Hash) -> None:
        self.start = start
        self.upto = upto
        self.hasher = hasher


class FlightRecorder:
    """Append-only, hash-chained record of decisions and events (file or memory)."""

    _write: Callable[[bytes | bytearray], int]
    """Copies a line into the file segment being appended to (file mode only)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        clock: Clock,
        batch_size: int = 512,
        flush_interval_ms: float = 50.0,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        max_pending: int = 1_000_000,
        sink: Sink | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1 (got {batch_size})")
        if not (math.isfinite(flush_interval_ms) and flush_interval_ms >= 0):
            raise ValueError(
                f"flush_interval_ms: must be a finite number >= 0 (got {flush_interval_ms})"
            )
        if max_pending < 1:
            raise ValueError(f"max_pending: must be >= 1 (got {max_pending})")
        self._clock = clock
        self._batch_size = batch_size
        self._interval_ns = int(flush_interval_ms * 1_000_000)
        self._fsync = FsyncPolicy(fsync)
        self._always = self._fsync is FsyncPolicy.ALWAYS
        self._max_pending = max_pending
        self._enc = msgspec.json.Encoder()
        self._buf = bytearray()
        self._rules: dict[int, tuple[object, msgspec.Raw]] = {}
        self._time_ns = clock.time_ns
        # what `record_decision` read from the last context, verdict and rule list
        self._last_ctx: object = _NOTHING
        self._node: Any = None
        self._release_id: Any = None
        self._flag_snapshot_id: Any = None
        self._limits_version: Any = None
        self._kind = msgspec.Raw(b"")  # the context's run of a line, spliced in (`RepeatLine`)
        self._last_decision: object = _NOTHING
        self._accepted: Any = None
        self._reason: Any = None
        self._detail: Any = None
        self._last_rules: object = _NOTHING
        self._last_raw = msgspec.Raw(b"[]")
        self._tail: msgspec.Raw | None = None  # the verdict's and rules' run, once repeated
        self._seq = 0
        self._head = GENESIS.encode()
        self._batch_first = 0  # seq of the first record not yet sealed
        self._health = threading.Lock()
        self._write_ok = True
        self._sync_ok = True
        self._closed = False
        self._ok = True  # write_ok and sync_ok and not closed; read on the hot path
        self.problem = ""
        """Why the recorder last turned unhealthy (empty while it never did)."""
        # memory mode
        self._lines: list[bytes] = []  # encoded, not yet sealed
        self._unwritten: list[bytes] = []  # sealed batches a failed write kept
        self._unwritten_n = 0
        self._flush_at = batch_size
        self._deadline = clock.monotonic_ns() + self._interval_ns
        # file mode
        self._log: MappedLog | None = None
        self._sink: Sink | None = sink
        self._end = 0
        self._opened_at: int | None = None
        self._batch_start = 0  # file offset of the first line not yet sealed
        self._seq_limit = max_pending
        self._kick_at = batch_size
        self._ready_seal: _Ready | None = None
        self._tick_seq = -1  # `seq` at the last `tick()`
        self._kept: list[bytes] = []  # lines the file could not take (it could not grow)
        self._teed = 0  # the tee sink has every sealed byte before this offset
        self._tee_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._prefaulted = 0  # the background thread prefaults again once the data passes this
        # How far ahead: twice what was written in the last fsync period, within
        # [PREFAULT_MIN, PREFAULT]. Each page made writable is dirtied, so each fsync
        # writes the whole window back and write-protects it; a fixed 1 MiB cost a node
        # that records one event per kill 256 pages of faults and writeback per fsync.
        self._ahead = PREFAULT
        self._limit = 0  # `MappedLog.limit` as of the last look (see `_recover`)
        self._loaded = 0  # pages before this offset were read in ahead (`MappedLog.preload`)
        self._hash_buf = bytearray()  # the Guard thread's, grown to the load (`_sized`)
        self._synced_end = 0
        self._sealer: threading.Thread | None = None
        self._syncer: Syncer | None = None
        if path is None:
            if sink is None:
                self._sink = MemorySink()
            return
        log = MappedLog(path)
        try:
            tail = log.scan()
            end, seq = tail.end, tail.seq
            if tail.torn:
                # The event recording the torn bytes replaces them, on disk, before the
                # file is cut: a crash in between must not lose what was cut.
                line = self._enc.encode(_recovery_line(tail.seq, clock.time_ns(), tail)) + b"\n"
                log.replace_torn(tail.end, len(tail.torn), line)
                end, seq = tail.end + len(line), tail.seq + 1
            log.start(end)
        except BaseException:
            log.close()
            raise
        self._log = log
        assert log.map is not None
        self._write = log.map.write  # the copy into the current segment, bound once per segment
        self._limit = log.limit
        self._teed = tail.batch_start
        self._end = end
        self._synced_end = end
        self._opened_at = tail.end
        self._seq = seq
        self._head = tail.head
        self._batch_start = tail.batch_start
        self._batch_first = tail.seq - tail.unsealed
        self._seq_limit = self._batch_first + max_pending
        if tail.unsealed and not tail.torn:
            line = self._enc.encode(_recovery_line(seq, clock.time_ns(), tail)) + b"\n"
            self._put(bytearray(line))
        if tail.torn or tail.unsealed:
            self._seal_here()
        if self._fsync is FsyncPolicy.BATCH:
            self._syncer = Syncer(log.sync, self._sync_result)
        self._sealer = threading.Thread(
            target=self._background, name="flight-recorder-sealer", daemon=True
        )
        self._sealer.start()

    # ------------------------------------------------------------------ state

    @property
    def lines(self) -> list[bytes]:
        """The lines (without newlines) written to an in-memory recorder's sink."""
        if isinstance(self._sink, MemorySink) and self._log is None:
            return self._sink.lines
        raise TypeError("lines: only an in-memory recorder (path=None) keeps its lines")

    @property
    def healthy(self) -> bool:
        return self._ok and self.pending < self._max_pending

    @property
    def pending(self) -> int:
        """Records not yet both written and sealed (a file holds them already, unsealed)."""
        if self._log is None:
            return len(self._lines) + self._unwritten_n
        return self._seq - self._batch_first

    @property
    def opened_at(self) -> int | None:
        """Where the file's data ended when this recorder opened it (after cutting a torn
        last line), or None for an in-memory recorder: everything recorded before it
        started lies before this offset, and only allocated zero bytes lay after it."""
        return self._opened_at

    def reader(self) -> BinaryIO:
        """The file this recorder holds, to read from its start (close it when done).

        Read through the recorder's own descriptor, not the path: a file renamed over
        the path since the recorder opened it is not the one it appends to. A starting
        node reads what was in force from it (`audit.standing.held_standing`)."""
        if self._log is None or self._log.fd < 0:
            raise TypeError("reader: only an open file recorder holds a file")
        return self._log.reader()

    @property
    def seq(self) -> int:
        """The seq the next line will carry."""
        return self._seq

    @property
    def head(self) -> str:
        """Hash of the last seal; publish it elsewhere (after `sync()`) to anchor the chain."""
        return self._head.decode()

    # ------------------------------------------------------------------ hot path

    def ready(self) -> bool:
        """Called before every decision: seals a batch that is due; True if recording works."""
        log = self._log
        if log is None:
            if len(self._lines) >= self._flush_at or self._clock.monotonic_ns() >= self._deadline:
                self.flush()
            return self._ok and len(self._lines) + self._unwritten_n < self._max_pending
        r = self._ready_seal
        if r is not None:
            self._apply(r)
        if self._ok and self._seq < self._seq_limit and self._end < self._limit:
            return True
        return self._recover(log)

    def tick(self) -> bool:
        """The Guard's idle tick (its lease renewal): `ready()`, and when nothing was
        recorded since the previous tick, a batch the Guard's calls were hashing a slice at
        a time (after a flood) is sealed now, whole, instead of a slice per later tick."""
        r = self._ready_seal
        if r is not None and self._seq == self._tick_seq:
            self._apply(r, sys.maxsize)
        ok = self.ready()
        self._tick_seq = self._seq
        return ok

    def _recover(self, log: MappedLog) -> bool:
        """The slow side of `ready()`: write kept lines, grow the file here if it must."""
        if self._kept:
            self._retry_kept()
        if self._end >= log.limit and not self._closed:
            try:
                log.prepare_next()  # normally done ahead by the background thread
            except OSError as exc:
                self._set_health(write_ok=False, why=f"{log.path}: cannot grow the file ({exc})")
        # The background thread grows the file ahead; `_limit` lags behind it (it only
        # grows, so a stale one sends a call here rather than past the room there is).
        self._limit = log.limit
        return self._ok and self._seq < self._seq_limit and self._end < self._limit

    def record_decision(
        self, order: object, decision: object, context: AuditContext, rules: tuple[str, ...]
    ) -> None:
        """Record one verdict; never raises for what the Guard was handed."""
        u: Any = order
        try:
            oid, st, sy, sd, q, p, pid = (
                u.id, u.strategy, u.symbol, u.side, u.qty, u.price, u.parent_id
            )  # fmt: skip
        except Exception:  # not an order (or a hostile one): the slow path reads what it can
            oid = st = sy = sd = q = p = pid = _UNREAD
        self.record_order(order, oid, st, sy, sd, q, p, pid, decision, context, rules)

    def record_order(
        self,
        order: object,
        oid: Any,
        strategy: Any,
        symbol: Any,
        side: Any,
        qty: Any,
        price: Any,
        parent_id: Any,
        decision: object,
        context: AuditContext,
        rules: tuple[str, ...],
    ) -> None:
        """`record_decision` with the order's fields already read (the Guard reads them
        once, for its checks): the Guard's hot path, the file append inlined (see `_put`).
        A field the record cannot carry as it is sends it down the slow path, which reads
        what it can from `order` itself."""
        seq = self._seq
        # The facts that repeat from order to order are read once per object, not per
        # record: a context, a verdict and a rule list are immutable, and the last one
        # of each is held here (so its identity cannot be reused by another object).
        # While they repeat, their runs of the line are spliced in already encoded
        # (`RepeatLine`); a new verdict (a block's own detail) is encoded in full: encoding
        # its run to splice it would cost such a record a second encode.
        # A value that cannot be read or encoded sends the record down the slow path.
        buf = self._buf
        try:
            if context is not self._last_ctx:
                self._use_context(context)
            if decision is self._last_decision and rules is self._last_rules:
                tail = self._tail
                if tail is None:
                    tail = self._tail = self._encode_tail()
                line: RepeatLine | DecisionLine = RepeatLine(
                    seq,
                    self._time_ns(),
                    self._kind,
                    oid,
                    strategy,
                    symbol,
                    side,
                    qty,
                    price,
                    parent_id,
                    tail,
                )
            else:
                if decision is not self._last_decision:
                    self._use_decision(decision)
                if rules is not self._last_rules:
                    self._use_rules(rules)
                line = DecisionLine(
                    seq,
                    self._time_ns(),
                    DECISION,
                    self._node,
                    self._release_id,
                    self._flag_snapshot_id,
                    self._limits_version,
                    oid,
                    strategy,
                    symbol,
                    side,
                    qty,
                    price,
                    parent_id,
                    self._accepted,
                    self._reason,
                    self._detail,
                    self._last_raw,
                )
            self._enc.encode_into(line, buf)
        except _ENCODE_ERRORS:
            self._enc.encode_into(self._odd_decision(seq, order, decision, context, rules), buf)
        if len(buf) > MAX_RECORD_BYTES:
            # a hostile value (a 1 MB order id) must not become a record of that size
            self._enc.encode_into(
                self._odd_decision(seq, order, decision, context, rules, cut=True), buf
            )
        buf.append(10)
        if self._log is None or self._kept or self._always:
            self._put(buf)
            return
        self._seq = seq + 1
        try:
            self._write(buf)
        except ValueError:  # the line crosses into the next segment
            if not self._spill(bytes(buf)):
                return
        self._end += len(buf)
        if self._seq >= self._kick_at:
            self._kick_at = self._seq + self._max_pending
            self._wake.set()

    def record_event(self, kind: Any, context: AuditContext, **fields: object) -> None:
        if type(kind) is not str or not kind or kind in (DECISION, SEAL):
            raise ValueError(f"kind: must be a non-empty string other than {DECISION!r}, {SEAL!r}")
        for name, value in fields.items():
            if not isinstance(value, SCALARS):
                raise TypeError(
                    f"{kind}.{name}: must be str, int, float, bool or None "
                    f"(got {type(value).__name__})"
                )
        data: dict[str, Scalar] = fields  # type: ignore[assignment]
        r = self._ready_seal
        if r is not None:
            # Seal here too: after a run of fills and cancels the next order would
            # otherwise hash everything they wrote before it could be decided.
            self._apply(r)
        seq = self._seq
        ts = self._clock.time_ns()
        line = EventLine(
            seq,
            ts,
            kind,
            context.node,
            context.release_id,
            context.flag_snapshot_id,
            context.limits_version,
            data,
        )
        buf = self._buf
        odd: DecisionPayload | EventPayload | None = None
        try:
            self._enc.encode_into(line, buf)
        except _ENCODE_ERRORS:
            odd = conform(EventPayload(ts, kind, *_ctx(context), data))
            self._enc.encode_into(_event_line(seq, odd), buf)
        if len(buf) > MAX_RECORD_BYTES:
            payload = odd if odd is not None else EventPayload(ts, kind, *_ctx(context), data)
            self._enc.encode_into(_event_line(seq, conform(clip(payload))), buf)
        buf.append(10)
        self._put(buf)

    def _put(self, buf: bytearray) -> None:
        """Hand one encoded line (ending in a newline) to the file or the batch."""
        self._seq += 1
        if self._log is None:
            self._lines.append(bytes(buf))
            if self._always:
                self.flush()
            return
        if self._kept:
            self._kept.append(bytes(buf))
            return
        try:
            self._write(buf)
        except ValueError:  # the line crosses into the next segment
            if not self._spill(bytes(buf)):
                return
        self._end += len(buf)
        if self._always:
            self._sync_here()
        if self._seq >= self._kick_at:
            self._kick_at = self._seq + self._max_pending
            self._wake.set()

    def _use_context(self, ctx: object) -> None:
        """Read a context's fields for the records that follow (kept only if it is frozen)."""
        c: Any = ctx
        node, release, flags, limits = c.node, c.release_id, c.flag_snapshot_id, c.limits_version
        # raises for a value JSON cannot carry, before anything is kept: the slow path
        head = self._enc.encode(DecisionHead(DECISION, node, release, flags, limits))
        self._node, self._release_id, self._flag_snapshot_id = node, release, flags
        self._limits_version = limits
        self._kind = msgspec.Raw(head[_HEAD_KEY:-1])
        self._last_ctx = ctx if type(ctx) is AuditContext else _NOTHING

    def _use_decision(self, decision: object) -> None:
        """Read a verdict's fields for the records that follow (kept only if it is frozen)."""
        d: Any = decision
        self._accepted, self._reason, self._detail = d.accepted, d.reason, d.detail
        self._last_decision = decision if type(decision) is Decision else _NOTHING
        self._tail = None

    def _use_rules(self, rules: object) -> None:
        """Encode a rule list once per distinct tuple (the Guard passes the same few)."""
        cached = self._rules.get(id(rules))
        if cached is not None and cached[0] is rules:
            raw = cached[1]
        else:
            if len(self._rules) > 4096:
                self._rules.clear()
            raw = msgspec.Raw(self._enc.encode(rules))
            if type(rules) is tuple:
                self._rules[id(rules)] = (rules, raw)
        self._last_raw = raw
        self._last_rules = rules if type(rules) is tuple else _NOTHING
        self._tail = None

    def _encode_tail(self) -> msgspec.Raw:
        """The run of a line from `accepted` to `rules`, for a verdict that repeats."""
        t = DecisionTail(self._accepted, self._reason, self._detail, self._last_raw)
        return msgspec.Raw(self._enc.encode(t)[_TAIL_KEY:-1])

    def _odd_decision(
        self,
        seq: int,
        order: object,
        decision: object,
        ctx: object,
        rules: object,
        *,
        cut: bool = False,
    ) -> DecisionLine:
        """Record whatever the Guard was handed, even an object that is not an Order.

        With `cut`, text fields longer than `FIELD_LIMIT` are cut, saying how long they were.
        """
        a = _read
        raw = DecisionPayload(
            self._clock.time_ns(),
            DECISION,
            a(ctx, "node", None) or safe_repr(ctx),
            a(ctx, "release_id", None),
            a(ctx, "flag_snapshot_id", None),
            a(ctx, "limits_version", ""),
            a(order, "id", None) or safe_repr(order),
            a(order, "strategy", ""),
            a(order, "symbol", ""),
            a(order, "side", ""),
            a(order, "qty", 0),
            a(order, "price", None),
            a(order, "parent_id", None),
            a(decision, "accepted", False),
            a(decision, "reason", None) or safe_repr(decision),
            a(decision, "detail", ""),
            rules,  # type: ignore[arg-type]
        )
        p = conform_decision(raw)
        if cut:
            clipped = clip(p)
            assert isinstance(clipped, DecisionPayload)
            p = conform_decision(clipped)
        return DecisionLine(
            seq,
            p.ts,
            DECISION,
            *_ctx_of(p),
            p.order_id,
            p.strategy,
            p.symbol,
            p.side,
            p.qty,
            p.price,
            p.parent_id,
            p.accepted,
            p.reason,
            p.detail,
            msgspec.Raw(self._enc.encode(p.rules)),
        )

    # ------------------------------------------------------------------ file mode

    def _spill(self, line: bytes) -> bool:
        """Write a line that crosses into the next segment; False if it had to be kept."""
        log = self._log
        assert log is not None
        try:
            self._write = log.spill(line, self._end).write
        except OSError as exc:
            # The segment could not be allocated now (the background thread prepares
            # it ahead, so ready() said no long before this unless the line is huge).
            self._set_health(write_ok=False, why=f"{log.path}: cannot grow the file ({exc})")
            self._kept.append(line)
            return False
        return True

    def _retry_kept(self) -> None:
        """Write the lines a failed grow kept, in order; healthy again once all are in."""
        kept, self._kept = self._kept, []
        for i, line in enumerate(kept):
            if not self._spill_or_write(line):
                self._kept.extend(kept[i + 1 :])
                return
        self._set_health(write_ok=True)

    def _spill_or_write(self, line: bytes) -> bool:
        try:
            self._write(line)
        except ValueError:
            if not self._spill(line):
                return False
        self._end += len(line)
        return True

    def _apply(self, r: _Ready, budget: int = INLINE_HASH) -> None:
        """Append the seal for a batch the background thread hashed (Guard's thread).

        The batch's bytes written since the background thread's last pass are hashed
        here, at most `budget` of them per call: a flooded Guard that outran the
        background thread by megabytes catches up over the next calls instead of in
        one order's call (a flush or close passes no limit)."""
        if r.start != self._batch_start or self._closed:
            self._ready_seal = None
            return  # the batch was sealed here in the meantime (flush)
        log = self._log
        assert log is not None
        h = r.hasher
        upto = r.upto + budget
        if upto < self._end:
            self._feed(log, h, r.upto, upto)
            r.upto = upto
            return
        self._ready_seal = None
        self._feed(log, h, r.upto, self._end)
        self._seal(h)

    def _seal_here(self) -> None:
        """Seal the current batch now, hashing it on this thread (flush, close, open)."""
        log = self._log
        assert log is not None
        r = self._ready_seal
        if r is not None:
            self._apply(r, sys.maxsize)
        if self._seq == self._batch_first:
            return
        h = sha256()
        self._feed(log, h, self._batch_start, self._end)
        self._seal(h)

    def _feed(self, log: MappedLog, h: _Hash, start: int, end: int) -> None:
        """Hash the file's bytes [start, end) on this thread, through its buffer."""
        buf = self._hash_buf = _sized(self._hash_buf, end - start, HASH_BUFFER)
        log.feed(h, start, end, buf)

    def _seal(self, h: _Hash) -> None:
        if self._kept:
            return  # records are still outside the file; seal once they are in
        body = seal_body(
            self._seq, self._clock.time_ns(), self._seq - self._batch_first, self._head
        )
        line, digest = finish_seal(h, body)
        self._seq += 1
        if not self._spill_or_write(line):
            return  # kept with the records: sealed in order once the file can grow
        self._head = digest
        self._batch_start = self._end
        self._batch_first = self._seq
        self._seq_limit = self._seq + self._max_pending
        self._kick_at = self._seq + self._batch_size
        self._wake.set()

    def _sync_here(self) -> None:
        log = self._log
        assert log is not None
        try:
            log.sync()
        except OSError as exc:
            self._set_health(sync_ok=False, why=f"{log.path}: fsync failed ({exc})")
            return
        self._set_health(sync_ok=True)

    def _background(self) -> None:
        """Hash batches, keep the file allocated ahead, fsync, feed the tee sink."""
        try:
            self._background_loop()
        except BaseException as exc:  # fail closed: nothing else would seal or grow the file
            self._set_health(write_ok=False, why=f"flight recorder background thread died: {exc!r}")
            raise

    def _background_loop(self) -> None:
        log = self._log
        assert log is not None
        interval_s = max(self._interval_ns / 1e9, 0.001)
        start = self._batch_start
        pos = start
        h = sha256()
        buf = bytearray()  # this thread's, used again for every pass (`_sized`)
        handed = False
        due = self._clock.monotonic_ns() + self._interval_ns
        asked = self._end  # the fsync thread was last asked to cover the file up to here
        self._keep_ahead(log)  # the first records must not wait on the first touch either
        while True:
            self._wake.wait(interval_s)
            self._wake.clear()
            if self._stopping:
                return
            self._keep_ahead(log)
            sealed_to = self._batch_start
            if sealed_to != start:  # a seal was appended: the next batch starts after it
                self._tee()
                if self._syncer is not None:
                    asked = self._end
                    self._syncer.request()
                start = pos = sealed_to
                h = sha256()
                handed = False
                due = self._clock.monotonic_ns() + self._interval_ns
            if handed:
                # The seal waits for the Guard's thread, which may not call for a while (an
                # idle Guard; one hashing a flood's slices). Its records are in the file:
                # the fsync policy's interval holds for them without the seal.
                if self._syncer is not None and self._end > asked:
                    asked = self._end
                    self._syncer.request()
                continue
            end = self._end
            while end - pos > _CATCH_UP:
                buf = _sized(buf, end - pos, SEALER_BUFFER)
                upto = min(end, pos + len(buf))
                log.feed(h, pos, upto, buf)
                pos = upto
                end = self._end
                # A Guard thread that never pauses keeps ahead of this loop: keep the
                # file ahead of it meanwhile, and hand an overdue batch over as it is
                # (the Guard hashes what was written since this pass read it).
                self._keep_ahead(log)
                if self._seq - self._batch_first >= _OVERDUE * self._batch_size:
                    break
            unsealed = self._seq - self._batch_first
            now = self._clock.monotonic_ns()
            if unsealed and (unsealed >= self._batch_size or now >= due):
                self._ready_seal = _Ready(start, pos, h)
                handed = True
            elif not unsealed:
                due = now + self._interval_ns

    def _keep_ahead(self, log: MappedLog) -> None:
        """Unmap left segments, make the pages ahead writable, allocate the next segment,
        and read in (allocate) the pages further ahead."""
        log.close_retired()
        end = self._end
        if end >= self._prefaulted:
            ahead = self._ahead
            log.prefault(end, ahead)
            self._prefaulted = end + ahead // 2
        if log.needs_next(end):
            try:
                log.prepare_next()
            except OSError as exc:
                self._set_health(write_ok=False, why=f"{log.path}: cannot grow ({exc})")
        elif not self._write_ok and not self._kept:
            self._set_health(write_ok=True)
        reach = PRELOAD_FACTOR * self._ahead
        if end + reach // 2 >= self._loaded:
            start = max(end, self._loaded)
            self._loaded = log.preload(start, end + reach - start)

    def _tee(self) -> None:
        """Hand every sealed batch not yet handed to the tee sink (either thread)."""
        sink = self._sink
        log = self._log
        if sink is None or log is None:
            return
        with self._tee_lock:
            start, end = self._teed, self._batch_start
            if end <= start:
                return
            try:
                sink.write(log.read(start, end))
            except OSError as exc:
                self._set_health(write_ok=False, why=f"tee sink failed ({exc})")
                return
            self._teed = end

    # ------------------------------------------------------------------ memory mode

    def _flush_memory(self) -> bool:
        sink = self._sink
        assert sink is not None
        if self._lines:
            batch = b"".join(self._lines)
            n = len(self._lines)
            self._lines = []
            body = seal_body(self._seq, self._clock.time_ns(), n, self._head)
            line, self._head = finish_seal(sha256(batch), body)
            self._seq += 1
            self._unwritten.append(batch + line)
            self._unwritten_n += n
        if self._unwritten:
            data = self._unwritten[0] if len(self._unwritten) == 1 else b"".join(self._unwritten)
            try:
                sink.write(data)
            except OSError as exc:
                # Keep every record; retry only at the interval so a dead disk
                # costs one syscall per interval, not one per order.
                self._set_health(write_ok=False, why=f"sink write failed ({exc})")
                self._flush_at = self._max_pending
                self._deadline = self._clock.monotonic_ns() + self._interval_ns
                return False
            self._unwritten.clear()
            self._unwritten_n = 0
        self._set_health(write_ok=True)
        self._flush_at = self._batch_size
        self._deadline = self._clock.monotonic_ns() + self._interval_ns
        if self._always or not self._sync_ok:
            try:
                sink.sync()
            except OSError as exc:
                self._set_health(sync_ok=False, why=f"sink fsync failed ({exc})")
                return False
            self._set_health(sync_ok=True)
        return True

    # ------------------------------------------------------------------ control

    def flush(self) -> bool:
        """Seal (and in memory mode write) everything recorded so far; returns `healthy`."""
        if self._closed:
            return False
        if self._log is None:
            return self._flush_memory()
        if self._kept:
            self._retry_kept()
        self._seal_here()
        self._tee()
        return self._ok and not self._kept

    def _sync_result(self, error: OSError | None) -> None:
        """Called from the fsync thread: a failed fsync makes the recorder unhealthy.

        An fsync write-protects the pages it wrote back, the ones ahead too: make
        those writable again here, off the order path.
        """
        why = "" if error is None else f"fsync failed ({error})"
        self._set_health(sync_ok=error is None, why=why)
        if self._log is not None and not self._closed:
            end = self._end
            ahead = min(PREFAULT, max(PREFAULT_MIN, 2 * (end - self._synced_end)))
            self._synced_end = end
            self._ahead = ahead
            self._log.prefault(end, ahead)
            # the background thread may race this: at worst one window is made writable
            # twice, or a page faults once on the order path; no byte changes either way
            self._prefaulted = end + ahead // 2

    def _set_health(
        self, *, write_ok: bool | None = None, sync_ok: bool | None = None, why: str = ""
    ) -> None:
        with self._health:
            if write_ok is not None:
                self._write_ok = write_ok
            if sync_ok is not None:
                self._sync_ok = sync_ok
            if why:
                self.problem = why
            self._ok = self._write_ok and self._sync_ok and not self._closed

    def sync(self) -> bool:
        """Seal, then wait until everything written is on stable storage (any policy).

        For a controlled shutdown, an end-of-day checkpoint or before publishing
        `head` as an anchor. Returns whether the recorder is healthy afterwards.
        """
        if not self.flush():
            return False
        return self.sync_written()

    def sync_written(self) -> bool:
        """Wait until everything already written is on stable storage, sealing nothing:
        the one call here another thread may make while the writer records (a checkpoint
        seals under the writer's lock, then waits for the disk outside it, so a gateway's
        engine threads never wait for an fsync). Returns whether the recorder is healthy."""
        if self._log is not None:
            self._sync_here()
        elif self._sink is not None:
            try:
                self._sink.sync()
                self._set_health(sync_ok=True)
            except OSError as exc:
                self._set_health(sync_ok=False, why=f"sink fsync failed ({exc})")
        return self._ok

    def close(self) -> None:
        """Seal, fsync (unless the policy is none), stop the threads, close the file.

        Idempotent. Raises `UnwrittenRecords`, and stays open for a retry, if
        records could not be written or fsynced.
        """
        if self._closed:
            return
        log = self._log
        where = log.path if log is not None else getattr(self._sink, "path", "sink")
        if not self.flush() and self.pending:
            raise UnwrittenRecords(
                f"{where}: {self.pending} records could not be written; "
                "the recorder stays open, call close() again to retry"
            )
        if self._fsync is not FsyncPolicy.NONE and not self.sync():
            raise UnwrittenRecords(
                f"{where}: records were written but fsync failed; "
                "the recorder stays open, call close() again to retry"
            )
        if self._sealer is not None:
            self._stopping = True
            self._wake.set()
            self._sealer.join()
        if self._syncer is not None:
            self._syncer.stop()
        self._tee()
        self._closed = True
        self._set_health()
        if log is not None:
            log.close(self._end)
        elif self._sink is not None:
            self._sink.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _recovery_line(seq: int, ts: int, tail: Tail) -> EventLine:
    """The `recovery` event for what a crash left: records unsealed, bytes cut as torn."""
    torn = tail.torn
    data: dict[str, Scalar] = {
        "unsealed_records": tail.unsealed,
        "truncated_bytes": len(torn),
        "truncated_sha256": sha256(torn).hexdigest() if torn else None,
    }
    return EventLine(seq, ts, RECOVERY, *_ctx(AuditContext(node="")), data)


def _read(obj: object, name: str, default: Any) -> Any:
    """An attribute of whatever the Guard was handed, or `default` if reading it raises
    anything at all (a hostile `__getattr__` or property)."""
    try:
        return getattr(obj, name, default)
    except Exception:
        return default


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > FIELD_LIMIT:
        return f"{value[:FIELD_LIMIT]}... [cut: {len(value)} characters]"
    return value


def clip(p: DecisionPayload | EventPayload) -> DecisionPayload | EventPayload:
    """The payload with every text field longer than `FIELD_LIMIT` cut, saying so."""
    fields: dict[str, Any] = {f: _cut(getattr(p, f)) for f in p.__struct_fields__}
    if isinstance(p, EventPayload):
        data = p.data if isinstance(p.data, dict) else {}
        fields["data"] = {str(_cut(k)): _cut(v) for k, v in data.items()}
    else:
        rules = p.rules if isinstance(p.rules, tuple | list) else ()
        fields["rules"] = tuple(_cut(r) for r in rules)
    return type(p)(**fields)


def _event_line(seq: int, p: DecisionPayload | EventPayload) -> EventLine:
    assert isinstance(p, EventPayload)
    return EventLine(seq, p.ts, p.kind, *_ctx_of(p), p.data)


def _ctx(c: AuditContext) -> tuple[str, str | None, str | None, str]:
    return c.node, c.release_id, c.flag_snapshot_id, c.limits_version


def _ctx_of(p: DecisionPayload | EventPayload) -> tuple[str, str | None, str | None, str]:
    return p.node, p.release_id, p.flag_snapshot_id, p.limits_version


def _sized(buf: bytearray, need: int, cap: int) -> bytearray:
    """`buf`, or a larger one while `need` exceeds it, up to `cap`: a thread's read buffer
    grows to its load once and is kept (a new one per pass is fresh memory every time)."""
    if need <= len(buf) or len(buf) >= cap:
        return buf
    return bytearray(min(cap, max(need, 2 * len(buf), _MIN_BUFFER)))
