"""Reading records back: typed decoding of a line and the last lines of a file."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NoReturn

import msgspec

from knightwatch.audit.chain import SEAL, Link, Seal
from knightwatch.audit.conform import conform
from knightwatch.audit.errors import AuditError
from knightwatch.audit.record import (
    DECISION,
    DecisionPayload,
    DecisionRecord,
    EventPayload,
    EventRecord,
    Kind,
)
from knightwatch.inputs import UNDECODABLE

_kind = msgspec.json.Decoder(Kind).decode
_decision = msgspec.json.Decoder(DecisionRecord).decode
_event = msgspec.json.Decoder(EventRecord).decode
_link = msgspec.json.Decoder(Link).decode
_seal = msgspec.json.Decoder(Seal).decode

AnyRecord = DecisionRecord | EventRecord | Seal

MAX_LINE_BYTES = 1024 * 1024
"""Longer than any record the recorder writes (it cuts records at 16 KiB); a longer line is
read only this far, so a hostile file without newlines cannot exhaust memory."""


def read_lines(f: BinaryIO, limit: int = MAX_LINE_BYTES, end: int | None = None) -> Iterator[bytes]:
    """The file's lines with their newlines; a line over `limit` bytes comes back cut to
    `limit + 1` bytes (so a reader can tell) and the rest of it is skipped unread.

    `end`: the offset where the caller knows the data ends (a recorder that has just
    opened the file); nothing after it is read. A recorder allocates its file 64 MiB
    ahead in zero bytes, and reading through them cost a starting node 74-80 ms cold
    (about 45 ms with the file in the page cache).
    """
    left = None if end is None else max(end - f.tell(), 0)

    def read(n: int) -> bytes:
        nonlocal left
        if left is None:
            return f.readline(n)
        data = f.readline(min(n, left)) if left > 0 else b""
        left -= len(data)
        return data

    def skip_hole() -> None:
        """Past a hole (zeros on no disk) instead of through it: a file with 64 GiB cut
        into its middle with `truncate` was read zero by zero, a whole hole to the line's
        end. What is skipped reads as zero bytes, no newline among them."""
        nonlocal left
        pos = f.tell()
        after = _next_data(f, pos)
        if left is not None:
            after = min(after, pos + left)
            left -= after - pos
        if after > pos:
            f.seek(after)

    while True:
        line = read(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                if not rest.strip(b"\0"):
                    skip_hole()
                rest = read(limit)
            line += b"\n" if rest else b""
        yield line


def decode_record(line: bytes) -> AnyRecord:
    """Decode one line; raises msgspec.DecodeError if it is not a record or a seal.

    A record whose payload values are outside the schema (what an unvalidated
    object looked like when the Guard blocked it) is still returned, coerced,
    with the original values quoted in its detail.
    """
    try:
        kind = _kind(line).kind
        if kind == SEAL:
            return _seal(line)
        is_decision = kind == DECISION
        try:
            return _decision(line) if is_decision else _event(line)
        except msgspec.ValidationError:
            raw = msgspec.json.decode(line)
            seq = _link(line).seq
    except UnicodeDecodeError as exc:  # msgspec lets invalid UTF-8 through as this
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from exc
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply to be a record") from None
    payload_type = DecisionPayload if is_decision else EventPayload
    payload = payload_type(**{f: raw.get(f) for f in payload_type.__struct_fields__})
    fields = msgspec.structs.asdict(conform(payload))
    if is_decision:
        return DecisionRecord(**fields, seq=seq)
    return EventRecord(**fields, seq=seq)


def last_lines(
    path: str | os.PathLike[str],
    n: int,
    chunk: int = 64 * 1024,
    limit: int = MAX_LINE_BYTES,
) -> list[bytes]:
    """The last n lines of a file (without newlines), reading from the end.

    As `read_lines` does, a line over `limit` bytes comes back cut to `limit + 1` bytes
    (its start, so a reader can tell) and is never held whole; the lines before it are
    still found (they were lost with it before: a tail showed nothing). A line is
    scanned back at most `_SCAN_MAX` bytes for its start.
    """
    if n <= 0:
        return []
    with open(path, "rb") as f:
        end = data_end(f)
        if end == 0:
            return []
        f.seek(end - 1)
        stop = end - 1 if f.read(1) == b"\n" else end  # the last line's end
        spans: list[tuple[int, int]] = []  # (start, stop) of each line, newest first
        pos = stop
        while len(spans) < n:
            if pos == 0 or stop - pos > _SCAN_MAX:
                spans.append((pos, stop))  # the file's first line, or one too long to scan
                break
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            piece = f.read(step)
            i = len(piece)
            while len(spans) < n and (j := piece.rfind(b"\n", 0, i)) >= 0:
                spans.append((pos + j + 1, stop))
                stop, i = pos + j, j
        out = []
        for start, line_end in reversed(spans):
            f.seek(start)
            out.append(f.read(min(line_end - start, limit + 1)))
    return out


_SCAN_MAX = 256 * 1024 * 1024
"""How far back `last_lines` looks for the start of one line."""


_ZERO_TAIL_MAX = 256 * 1024 * 1024
"""More than a recorder ever leaves allocated after its data (two segments)."""


def data_end(f: BinaryIO, chunk: int = 1024 * 1024) -> int:
    """Where the data ends: a live or crashed recorder's file ends in allocated zero bytes.

    A hole (a file made sparse: cut to 64 GiB with `truncate`, as a crashed or tampered
    file can be) is skipped without reading it (`SEEK_DATA`/`SEEK_HOLE`): it was read
    through 1 MiB at a time, and past 256 MiB of zeros every reader (`verify`, `why`,
    `tail`) then read the whole hole. Where the file system cannot say, the zeros are
    scanned as before.
    """
    end = last_data(f, f.seek(0, os.SEEK_END))
    floor = max(0, end - _ZERO_TAIL_MAX)
    while end > floor:
        start = max(0, end - chunk)
        f.seek(start)
        data = f.read(end - start).rstrip(b"\0")
        if data:
            return start + len(data)
        end = start
    return end  # 0, or a zero run longer than any recorder leaves: not free space


def _next_data(f: BinaryIO, pos: int) -> int:
    """Where the next data after `pos` starts (`SEEK_DATA`): the file's size if only a hole
    follows, `pos` where the file system (or the object) cannot say."""
    try:
        fd = f.fileno()
    except (OSError, io.UnsupportedOperation):
        return pos  # an in-memory file: no holes to skip
    here = os.lseek(fd, 0, os.SEEK_CUR)  # put back: `f` buffers ahead of it
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as exc:
        return os.fstat(fd).st_size if exc.errno == errno.ENXIO else pos
    finally:
        os.lseek(fd, here, os.SEEK_SET)


def last_data(f: BinaryIO, size: int) -> int:
    """Where the file's last region holding data ends (`data_ends`), on a reader's file
    object; `size` for one with no descriptor (in memory: no holes to skip)."""
    try:
        fd = f.fileno()
    except (OSError, io.UnsupportedOperation):
        return size
    return data_ends(fd, size)


def data_ends(fd: int, size: int) -> int:
    """Where the file's last region holding data ends (`SEEK_DATA`/`SEEK_HOLE`): everything
    after it is a hole, which reads as zero bytes (a file cut to 100 GB with `truncate` was
    read through zero by zero). `size` where the file system cannot say. Moves `fd`'s
    offset: callers read by offset, or seek after."""
    last = pos = 0
    try:
        while pos < size:
            pos = os.lseek(fd, os.lseek(fd, pos, os.SEEK_DATA), os.SEEK_HOLE)
            last = pos
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data after `pos`
            return min(last, size)
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return size
        raise
    return min(last, size)


SESSION = "session"
"""The event a Guard records when a new trading session starts (`Guard.start_session`):
every order id accepted before it was forgotten."""
ADOPT = "adopt"
"""The event a Guard records for an order it took over at start-up (`Guard.adopt`): its id
is used as an accepted one's is."""

_ID_CHUNK = 4 * 1024 * 1024
"""Bytes `accepted_ids` decodes per call (whole lines; a longer line is read whole)."""


class UnreadableRecord(AuditError, ValueError):
    """A line of a recorder's file that a reader must understand and cannot: one it skipped
    could be an order the node accepted (`accepted_ids`). `why`: the rule the line breaks."""

    why: str = ""


class _IdFields(msgspec.Struct, gc=False):
    """What re-learning the used order ids needs of any line (`accepted_ids`): typed
    loosely, so a record the Guard blocked with odd values still decodes; each value is
    checked where it matters."""

    kind: Any = None
    ts: Any = None
    order_id: Any = None
    accepted: Any = None
    data: Any = None  # an event's fields (an `adopt` event's order_id)


_id_fields = msgspec.json.Decoder(_IdFields)


class AcceptedIds(msgspec.Struct, frozen=True):
    """The order ids of a file's accepted decisions, oldest first, with when each was
    recorded (wall ns): `ids[i]` at `ts[i]`."""

    ids: list[str]
    ts: list[int]


def accepted_ids(
    f: BinaryIO,
    path: str | os.PathLike[str],
    *,
    since: int | None = None,
    end: int | None = None,
    each_chunk: Callable[[bytes, int, int], None] | None = None,
) -> AcceptedIds:
    """The order ids the file's accepted decisions hold (a new order's id, a replace's new
    id) and its adopted orders' (`adopt` events: orders a gateway took over at a start-up
    that may have ended since), in file order: those after its last `session` event (the
    ids a Guard had forgotten by then are not taken back), and with `since` only those
    recorded after it (wall ns: older ones were out of the duplicate window).

    A restarted node re-learns them (`Guard.remember_order_ids`) so an id it accepted
    before the restart is still refused as a duplicate. Every line is decoded into a small
    struct (its kind, time, order id and verdict, nothing else), 4 MiB of lines per
    call. A line that does not decode, a decision whose verdict is not true or false, or
    an accepted one without its order id as text or its time as an integer raises
    `UnreadableRecord` naming the file and line: skipped, it could be an id the node used.

    `f` is open at its start (`FlightRecorder.reader`); `end`: where the data ends when a
    recorder holding the file says so (`FlightRecorder.opened_at`), nothing after it is read.
    `each_chunk(buf, cut, lineno)`: given every chunk of whole lines once its ids are taken
    (`buf[:cut]`, the first of them line `lineno + 1`), so another reader needs no pass of
    its own over the file (`audit.standing.read_back`).
    """
    ids: list[str] = []
    times: list[int] = []
    lineno = 0  # lines before the chunk
    left = end
    rest = b""
    while True:
        want = _ID_CHUNK if left is None else min(_ID_CHUNK, left)
        data = f.read(want) if want > 0 else b""
        if left is not None:
            left -= len(data)
        buf = rest + data
        cut = len(buf) if not data else buf.rfind(b"\n") + 1
        if len(buf) - cut > MAX_LINE_BYTES:
            at = lineno + buf.count(b"\n", 0, cut) + 1
            raise UnreadableRecord(
                f"{os.fspath(path)}: line {at}: longer "
                f"than {MAX_LINE_BYTES} bytes, no record a recorder writes; run "
                "`knightwatch audit verify` on the file"
            )
        if cut:
            chunk = memoryview(buf)[:cut]  # not copied: decoded in place
            try:
                lines = _id_fields.decode_lines(chunk)
                # one JSON value per line: a blank line, or two values on one, is no
                # recorder's (and the line an error names would be wrong)
                if len(lines) != buf.count(b"\n", 0, cut) + (buf[cut - 1] != 10):
                    raise msgspec.DecodeError("not one record per line")
                after = _take_ids(lines, ids, times, since, path, lineno)
            except (*UNDECODABLE, UnicodeDecodeError):
                after = _take_ids_by_line(buf[:cut], ids, times, since, path, lineno)
            finally:
                chunk.release()
            if each_chunk is not None:
                each_chunk(buf, cut, lineno)
            lineno = after
        rest = buf[cut:]
        if not data:
            return AcceptedIds(ids, times)


def _take_ids(
    lines: list[_IdFields],
    ids: list[str],
    times: list[int],
    since: int | None,
    path: str | os.PathLike[str],
    lineno: int,
) -> int:
    """Take the accepted ids of decoded lines (the line after `lineno` first); returns the
    number of the last line."""
    for rec in lines:
        lineno += 1
        kind = rec.kind
        if kind == DECISION:
            accepted = rec.accepted
            if accepted is False:
                continue
            if accepted is not True:
                _unreadable_line(path, lineno, "a decision whose verdict is not true or false")
            oid, what = rec.order_id, "an accepted decision"
        elif kind == ADOPT:  # taken over at a start-up: its id was used all the same
            data = rec.data
            oid, what = (data.get("order_id") if type(data) is dict else None), "an adopt event"
        elif kind == SESSION:
            ids.clear()
            times.clear()
            continue
        elif type(kind) is not str:
            _unreadable_line(path, lineno, "a line without its kind as text")
        else:
            continue
        ts = rec.ts
        if type(oid) is not str or not oid or type(ts) is not int:
            _unreadable_line(
                path, lineno, f"{what} without its order id as text and its time as an integer"
            )
        if since is None or ts > since:
            ids.append(oid)
            times.append(ts)
    return lineno


def _take_ids_by_line(
    chunk: bytes,
    ids: list[str],
    times: list[int],
    since: int | None,
    path: str | os.PathLike[str],
    lineno: int,
) -> int:
    """`_take_ids` one line at a time: a chunk that did not decode whole, so the line that
    does not decode is named."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    for line in lines:
        try:
            rec = _id_fields.decode(line)
        except (*UNDECODABLE, UnicodeDecodeError) as exc:
            _unreadable_line(path, lineno + 1, f"not a record ({exc})")
        lineno = _take_ids([rec], ids, times, since, path, lineno)
    return lineno


def _unreadable_line(path: str | os.PathLike[str], lineno: int, why: str) -> NoReturn:
    exc = UnreadableRecord(
        f"{os.fspath(path)}: line {lineno}: {why}; the node cannot tell which order ids it "
        "already used; run `knightwatch audit verify` on the file"
    )
    exc.why = why
    raise exc


def unreadable_id(line: bytes) -> str | None:
    """Why a starting node cannot take the order id of `line` (a decision or `adopt` event
    of its file) back (`accepted_ids` refuses the file on it), or None. `audit verify`
    names such a line: the node's refusal tells the operator to run it."""
    try:
        rec = _id_fields.decode(line)
    except (*UNDECODABLE, UnicodeDecodeError) as exc:
        return f"not a record ({exc})"
    try:
        _take_ids([rec], [], [], None, "", 0)
    except UnreadableRecord as exc:
        return exc.why
    return None
