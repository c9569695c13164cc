"""The flight recorder: every decision and control action, appended as a hash chain.

The Guard calls `ready()` before each decision and `record_decision()` after it.
Recording only appends a tuple; encoding, hashing and IO happen in `flush()`,
which `ready()` runs when a batch is full or the flush interval has passed. If a
record cannot be written, `ready()` turns False and the Guard blocks every
order (fail closed) until a later flush writes everything that was kept.
"""

from __future__ import annotations

import math
import os
import threading
from hashlib import sha256
from types import TracebackType
from typing import Any, Self

import msgspec

from knightwatch.audit.chain import GENESIS, Link, body_hash, seal_batch, split_line
from knightwatch.audit.conform import SCALARS, conform, conform_decision
from knightwatch.audit.errors import ChainCorrupt, UnwrittenRecords
from knightwatch.audit.record import (
    DECISION,
    AuditContext,
    DecisionPayload,
    EventPayload,
    FsyncPolicy,
    Scalar,
)
from knightwatch.audit.sink import FileSink, MemorySink, Sink
from knightwatch.audit.syncer import Syncer
from knightwatch.clock import Clock
from knightwatch.decision import Decision
from knightwatch.order import Order

_DecisionItem = tuple[int, Order, Decision, AuditContext, tuple[str, ...]]
_EventItem = tuple[int, str, AuditContext, dict[str, Scalar]]

RECOVERY = "recovery"
"""Event kind written when a torn last line left by a crash was cut off on open."""

MAX_RECORD_BYTES = 16 * 1024
"""A record longer than this has its long text fields cut (see `clip`); real ones are ~0.5 KB."""
FIELD_LIMIT = 1024
"""Characters of one text field a clipped record keeps."""


class FlightRecorder:
    """Append-only, hash-chained record of decisions and events (file or memory)."""

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
        if sink is not None and path is not None:
            raise ValueError("path and sink: give one, not both")
        self._clock = clock
        self._batch_size = batch_size
        self._interval_ns = int(flush_interval_ms * 1_000_000)
        self._fsync = FsyncPolicy(fsync)
        self._always = self._fsync is FsyncPolicy.ALWAYS
        self._max_pending = max_pending
        if sink is None:
            sink = MemorySink() if path is None else FileSink(path)
        self._sink: Sink = sink
        self._pending: list[_DecisionItem | _EventItem] = []
        self._unwritten: list[bytes] = []  # sealed batches a failed write kept
        self._unwritten_n = 0  # records in them
        self._unsynced = False
        self._health = threading.Lock()
        self._write_ok = True
        self._sync_ok = True
        self._encoder = msgspec.json.Encoder()
        self._seq = 0
        self._head = GENESIS.encode()
        self._closed = False
        self._ok = True  # write_ok and sync_ok and not closed; read on the hot path
        self._flush_at = batch_size
        self._deadline = clock.monotonic_ns() + self._interval_ns
        self._syncer = (
            Syncer(self._sink.sync, self._sync_result)
            if self._fsync is FsyncPolicy.BATCH and not isinstance(self._sink, MemorySink)
            else None
        )
        try:
            self._resume()
        except BaseException:
            self._sink.close()
            raise

    def _resume(self) -> None:
        """Continue the chain of an existing file so a restart appends instead of forking."""
        last, torn = self._sink.tail()
        if last is not None:
            parts = split_line(last)
            try:
                link = msgspec.json.decode(last, type=Link)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                link = None
            if parts is None or link is None or body_hash(parts[0]) != parts[1]:
                where = getattr(self._sink, "path", "the sink")
                raise ChainCorrupt(
                    f"{where}: the last complete record does not match its own hash; "
                    "run `knightwatch audit verify` before appending to this file"
                )
            self._seq = link.seq + 1
            self._head = parts[1]
        if torn:
            self._sink.discard_torn(len(torn))
            self.record_event(
                RECOVERY,
                AuditContext(node=""),
                truncated_bytes=len(torn),
                truncated_sha256=sha256(torn).hexdigest(),
            )

    @property
    def lines(self) -> list[bytes]:
        """The sealed lines (without newlines) of an in-memory recorder."""
        if isinstance(self._sink, MemorySink):
            return self._sink.lines
        raise TypeError("lines: only an in-memory recorder (path=None) keeps its lines")

    @property
    def healthy(self) -> bool:
        return self._ok and self.pending < self._max_pending

    @property
    def pending(self) -> int:
        """Records accepted but not yet written to the sink."""
        return len(self._pending) + self._unwritten_n

    @property
    def seq(self) -> int:
        """The seq the next sealed record will carry."""
        return self._seq

    @property
    def head(self) -> str:
        """Hash of the last sealed record; publish it elsewhere to anchor the chain."""
        return self._head.decode()

    def ready(self) -> bool:
        if len(self._pending) >= self._flush_at or self._clock.monotonic_ns() >= self._deadline:
            self.flush()
        return self._ok and len(self._pending) + self._unwritten_n < self._max_pending

    def record_decision(
        self, order: Order, decision: Decision, context: AuditContext, rules: tuple[str, ...]
    ) -> None:
        self._pending.append((self._clock.time_ns(), order, decision, context, rules))
        if self._always:
            self.flush()

    def record_event(self, kind: str, context: AuditContext, **fields: object) -> None:
        if type(kind) is not str or not kind or kind == DECISION:
            raise ValueError(f"kind: must be a non-empty string other than {DECISION!r}")
        for name, value in fields.items():
            if not isinstance(value, SCALARS):
                raise TypeError(
                    f"{kind}.{name}: must be str, int, float, bool or None "
                    f"(got {type(value).__name__})"
                )
        data: dict[str, Scalar] = fields  # type: ignore[assignment]
        self._pending.append((self._clock.time_ns(), kind, context, data))
        if self._always:
            self.flush()

    def flush(self) -> bool:
        if self._closed:
            return False
        if self._pending:
            items = self._pending
            self._pending = []
            pieces, seq, self._head = seal_batch(self._encode(items), self._seq, self._head)
            self._unwritten.append(b"".join(pieces))
            self._unwritten_n += seq - self._seq
            self._seq = seq
        if self._unwritten:
            data = self._unwritten[0] if len(self._unwritten) == 1 else b"".join(self._unwritten)
            try:
                self._sink.write(data)
            except OSError:
                # Keep every record; retry only at the interval so a dead disk
                # costs one syscall per interval, not one per order.
                self._set_health(write_ok=False)
                self._flush_at = self._max_pending
                self._deadline = self._clock.monotonic_ns() + self._interval_ns
                return False
            self._unwritten.clear()
            self._unwritten_n = 0
            self._unsynced = True
        self._set_health(write_ok=True)
        self._flush_at = self._batch_size
        self._deadline = self._clock.monotonic_ns() + self._interval_ns
        if self._unsynced or not self._sync_ok:
            if self._syncer is not None:
                self._syncer.request()
            elif self._always:
                try:
                    self._sink.sync()
                except OSError:
                    self._set_health(sync_ok=False)
                    return False
                self._set_health(sync_ok=True)
            self._unsynced = False
        return True

    def _sync_result(self, error: OSError | None) -> None:
        """Called from the fsync thread: a failed fsync makes the recorder unhealthy."""
        self._set_health(sync_ok=error is None)

    def _set_health(self, *, write_ok: bool | None = None, sync_ok: bool | None = None) -> None:
        with self._health:
            if write_ok is not None:
                self._write_ok = write_ok
            if sync_ok is not None:
                self._sync_ok = sync_ok
            self._ok = self._write_ok and self._sync_ok and not self._closed

    def sync(self) -> bool:
        """Flush, then wait until everything written is on stable storage (any policy).

        For a controlled shutdown, an end-of-day checkpoint or before publishing
        `head` as an anchor. Returns whether the recorder is healthy afterwards.
        """
        if not self.flush():
            return False
        if self._syncer is not None:
            self._syncer.request()
            self._syncer.drain()
        else:
            try:
                self._sink.sync()
                self._set_health(sync_ok=True)
            except OSError:
                self._set_health(sync_ok=False)
        return self._ok

    def close(self) -> None:
        if self._closed:
            return
        where = getattr(self._sink, "path", "sink")
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
        if self._syncer is not None:
            self._syncer.stop()
        self._closed = True
        self._set_health()
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

    def _encode(self, items: list[_DecisionItem | _EventItem]) -> list[bytes]:
        """Encode payload objects in one C call; fall back per record on odd values.

        A hostile value (a 1 MB order id, a 10 MB halt reason) must not become a
        record of that size: a line over `MAX_RECORD_BYTES` is re-encoded with its
        long text fields cut, and each cut field says how long it was.
        """
        payloads = [_payload(item) for item in items]
        try:
            lines = self._encoder.encode_lines(payloads).split(b"\n")[:-1]
        except (TypeError, ValueError, OverflowError):
            lines = [self._encode_one(p) for p in payloads]
        if max(map(len, lines)) > MAX_RECORD_BYTES:
            lines = [
                line if len(line) <= MAX_RECORD_BYTES else self._encode_one(clip(p))
                for line, p in zip(lines, payloads, strict=True)
            ]
        return lines

    def _encode_one(self, payload: DecisionPayload | EventPayload) -> bytes:
        try:
            return self._encoder.encode(payload)
        except (TypeError, ValueError, OverflowError):
            return self._encoder.encode(conform(payload))


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


def _payload(item: _DecisionItem | _EventItem) -> DecisionPayload | EventPayload:
    if len(item) == 5:
        ts, order, decision, ctx, rules = item
        try:
            return DecisionPayload(
                ts,
                DECISION,
                ctx.node,
                ctx.release_id,
                ctx.flag_snapshot_id,
                ctx.limits_version,
                order.id,
                order.strategy,
                order.symbol,
                order.side,
                order.qty,
                order.price,
                order.parent_id,
                decision.accepted,
                decision.reason,
                decision.detail,
                rules,
            )
        except AttributeError:
            return _odd_decision(item)
    ts, kind, ctx, data = item
    return EventPayload(
        ts, kind, ctx.node, ctx.release_id, ctx.flag_snapshot_id, ctx.limits_version, data
    )


def _odd_decision(item: _DecisionItem) -> DecisionPayload:
    """Record whatever the Guard was handed, even an object that is not an Order."""
    ts, order, decision, ctx, rules = item
    a = getattr
    raw = DecisionPayload(
        ts,
        DECISION,
        a(ctx, "node", repr(ctx)),
        a(ctx, "release_id", None),
        a(ctx, "flag_snapshot_id", None),
        a(ctx, "limits_version", ""),
        a(order, "id", repr(order)),
        a(order, "strategy", ""),
        a(order, "symbol", ""),
        a(order, "side", ""),
        a(order, "qty", 0),
        a(order, "price", None),
        a(order, "parent_id", None),
        a(decision, "accepted", False),
        a(decision, "reason", repr(decision)),
        a(decision, "detail", ""),
        rules,
    )
    return conform_decision(raw)
