"""The recorder's file: records are copied into a shared memory map, so a crash loses none.

A copy into a `MAP_SHARED` mapping lands in the kernel's page cache, which
belongs to the file, not to the process: once `FlightRecorder.record_decision`
returns, a kill -9, a segfault or an OOM kill cannot take the record with it
(only a machine crash can, which is the fsync policy's job). The copy costs a
few hundred nanoseconds, against about 2 µs for a `write()` call per record.

The file is mapped in segments of `SEGMENT` bytes, allocated ahead with
`posix_fallocate` (so a full disk is an error when a segment is prepared, on
the recorder's own thread, never a SIGBUS when a record is copied). Each
segment is mapped twice: records are copied into a map that reads nothing
ahead, and the background thread reads the pages ahead in through the other
(see `_segment`), so the first touch of fresh memory is never the Guard's. The unused
rest of the last segment reads as zero bytes until `close` cuts it off; readers
treat trailing zero bytes as free space. On open, `scan` finds where the data
ends, what a crash left half-written, and the records after the last seal, and
checks every seal.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import mmap
import os
import re
import stat
import threading
from collections.abc import Callable
from hashlib import sha256
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from knightwatch.audit.chain import GENESIS, SEAL, Link, Seal, split_line
from knightwatch.audit.errors import AuditError, ChainCorrupt, RecorderLocked
from knightwatch.audit.read import data_ends
from knightwatch.inputs import UNDECODABLE

if TYPE_CHECKING:
    from hashlib import _Hash

    from _typeshed import WriteableBuffer

SEGMENT = 64 * 1024 * 1024
"""Bytes mapped at a time; also the step in which the file is allocated."""

RESERVE = 4 * 1024 * 1024
"""Room that must stay free ahead of the data for the recorder to accept decisions."""

_CHUNK = 1024 * 1024
PREFAULT = 1024 * 1024
"""The most bytes ahead of the data whose pages are made writable off the order path."""
PREFAULT_MIN = 64 * 1024
"""The least: a recorder that writes little (a node between kills) keeps a short window,
because every page made writable is dirty, and every fsync writes it back again."""
PRELOAD_FACTOR = 8
"""Pages read in ahead of the data: this many times the writable window (512 KiB to 8 MiB).

Reading a page in allocates its memory without dirtying it, so an fsync does not
write it back. Memory the process touches for the first time can cost far more
than a page fault: on a virtual machine that hands freed memory back to its host
(free page reporting, ballooning) the host must supply it again, measured at
about 2 ms per MiB on the 2-core build machine, 14-19 ms once per 8 MiB of
records. Done on the background thread, well ahead, the Guard's thread never pays it."""
_MADV_POPULATE_READ = 22  # Linux 5.14+: fault pages in (allocate them) without dirtying them
_MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault pages in writable without changing them


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """libc's madvise through ctypes, which releases the interpreter lock during the call."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    madvise: Callable[[int, int, int], int] = fn
    return madvise


def _address(m: mmap.mmap) -> int:
    """Where a map starts in memory (its address, not a buffer export: it stays closable)."""
    view = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def _populate_works() -> bool:
    """Whether this kernel has MADV_POPULATE_READ (Linux 5.14+), tried on a page of its own."""
    if _madvise is None:
        return False
    page = mmap.mmap(-1, mmap.PAGESIZE)
    try:
        return _madvise(_address(page), mmap.PAGESIZE, _MADV_POPULATE_READ) == 0
    finally:
        page.close()


_madvise = _libc_madvise()
_POPULATE = _populate_works()
_SEAL_MARK = b',"kind":"seal",'
_SEAL_LINE = re.compile(rb'\{"seq":\d+,"ts":-?\d+(,"kind":"seal",)[^\n]*\n')
"""A seal line as the recorder writes it (matched at a line's start)."""
_LINE_START = b'{"seq":'
"""How every line the recorder writes starts."""
_CONTROL = re.compile(rb"[\x01-\x1f]")
"""Bytes no record holds (JSON escapes them; a NUL is a byte a crash left unstored)."""
_SEAL_MAX = 4096
"""Longer than any seal line (about 200 bytes): a longer line is a record."""
_decode_link = msgspec.json.Decoder(Link).decode
_decode_seal = msgspec.json.Decoder(Seal).decode


class NotARegularFile(AuditError, ValueError):
    """The recorder's path must be a regular file: a device or a pipe cannot be mapped,
    and a symbolic link is not followed."""


class Tail(msgspec.Struct, frozen=True):
    """What `scan` found at the end of an existing file."""

    end: int
    """Offset after the last complete line worth keeping."""
    torn: bytes
    """Bytes cut after it: the last line, half-written when a crash stopped the writer."""
    seq: int
    """The seq the next line must carry."""
    head: bytes
    """The hash of the last seal (hex), or GENESIS."""
    batch_start: int
    """Offset of the first line after the last seal."""
    unsealed: int
    """Record lines after the last seal (written before a crash, never sealed)."""


def is_seal(line: bytes) -> bool:
    """Cheap test used while scanning: seal lines carry their kind third, after seq and ts."""
    return _SEAL_MARK in line[:96]


def _open_own(path: str) -> int:
    """Open the recorder's file for appends, creating it (0600) if it does not exist.

    A link is never followed (`O_NOFOLLOW`), and a new file is created with `O_EXCL`,
    so a symbolic link planted at the path (to another node's file, or to a file
    outside the directory, existing or not) is refused, not appended through or
    created at its target.

    A new file's directory entry is fsynced before this returns: fsyncing the file
    writes its data, not the entry that names it, so a machine crash could otherwise
    lose the whole file, every record fsynced into it included.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    while True:
        try:
            try:
                return os.open(path, flags)
            except FileNotFoundError:
                pass
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # made meanwhile (a file, or a link): opened, or refused, as it is
            try:
                sync_dir(os.path.dirname(path) or ".")
            except BaseException:
                os.close(fd)
                raise
            return fd
        except OSError as exc:
            if exc.errno == errno.ELOOP and os.path.islink(path):
                raise NotARegularFile(
                    f"{path}: a symbolic link; the flight recorder never writes through a "
                    "link (a planted one could point at another node's file): give the "
                    "file's own path"
                ) from None
            raise


def sync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so the entries made in it survive a machine crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise  # a file system that cannot sync a directory has nothing to sync
    finally:
        os.close(fd)


class _HeldReader(io.RawIOBase):
    """Reads a file through a descriptor of its own with `pread`, from the start.

    The descriptor is a duplicate of the recorder's: it reads the file the recorder
    holds, whatever the path names by now, and never moves an offset the recorder's
    descriptor shares (the recorder uses none; this keeps it so).
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = os.dup(fd)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        n = os.preadv(self._fd, [view], self._pos)
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class MappedLog:
    """An append-only file written through memory maps; one owner thread appends."""

    def __init__(self, path: str | os.PathLike[str], segment: int | None = None) -> None:
        self.path = os.fspath(path)
        self.segment = SEGMENT if segment is None else segment
        self.reserve = min(RESERVE, self.segment // 4)
        fd = _open_own(self.path)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotARegularFile(
                    f"{self.path}: not a regular file; the flight recorder maps its file "
                    "into memory, so it cannot write to a device or a pipe"
                )
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RecorderLocked(
                    f"{self.path}: another flight recorder is appending to this file"
                ) from exc
            raise
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._grow = threading.Lock()
        self.map: mmap.mmap | None = None
        """The segment being appended to (the recorder writes into it directly)."""
        self.seg_end = 0
        self.limit = 0
        """`ready()` says no once the data reaches this offset: RESERVE bytes must stay free."""
        self.next: mmap.mmap | None = None
        """The segment after the current one, prepared ahead by the background thread."""
        self.retired: list[mmap.mmap] = []
        """Segments the appender has left; closed off the order path."""
        self._bases: dict[int, int] = {}  # segment offset -> its address in memory
        self._ahead_bases: dict[int, int] = {}  # the same for `preload`'s maps
        self._ahead_maps: dict[int, mmap.mmap] = {}
        self._prefault = _POPULATE

    # ------------------------------------------------------------------ opening

    def scan(self) -> Tail:
        """Read the file: data end, torn bytes, every seal, unsealed records.

        Raises ChainCorrupt if any seal does not match the batch before it or does
        not chain to the seal before it (`_check_chain`), naming its line.
        """
        size = os.fstat(self.fd).st_size
        data_end = self._data_end(size)
        complete = self._untorn(self._complete_end(data_end))
        torn = os.pread(self.fd, data_end - complete, complete)
        if any(b not in (e, 0) for b, e in zip(torn, _LINE_START, strict=False)) or (
            _CONTROL.search(torn, 0, len(torn) - torn.endswith(b"\n")) is not None
        ):
            # a crash cuts a record short, whose first bytes are stored or still zero, and
            # whose other bytes are a record's (JSON escapes control characters): anything
            # else (a file that is no recorder's, with no newline) was cut away, even one
            # that starts with zero bytes (a binary file was emptied and appended to)
            raise ChainCorrupt(
                f"{self.path}: the last {len(torn)} bytes are not a record a crash cut "
                "short (a line that does not start as a record, or holds control bytes "
                "no record holds, with no newline); "
                "run `knightwatch audit verify` before appending to this file"
            )
        seq, head, batch_start = self._check_chain(complete)
        keep, seq, unsealed = self._unsealed(batch_start, complete, seq)
        return Tail(keep, torn, seq, head, batch_start, unsealed)

    def _check_chain(self, end: int) -> tuple[int, bytes, int]:
        """Check every seal before `end`: (next seq, head, offset after the last seal).

        Checking only the last seal let a file changed in an earlier batch reopen,
        and a starting node then read its halts and flag changes back from records
        no seal proves any more. One forward pass hashes every byte once and finds
        the seal lines with `bytes.find` (nothing runs a line at a time in Python):
        1.20 s per GiB with the file in the page cache on the 2-core build machine
        (`bench/audit_bench.py`, its `reopen` line), where checking the last seal alone
        took about 15 ms whatever the size: a node's start pays it once.
        """
        h = sha256()
        head = GENESIS.encode()
        seq = after = pos = seals = 0
        buf = b""
        mid_line = False  # buf starts inside a line too long to be a seal, hashed already
        while True:
            want = end - pos - len(buf)
            if want > 0:
                more = os.pread(self.fd, min(_CHUNK, want), pos + len(buf))
                want = len(more)
                buf += more
            if mid_line:
                nl = buf.find(b"\n")
                cut = len(buf) if nl < 0 else nl + 1
                h.update(memoryview(buf)[:cut])
                pos, buf, mid_line = pos + cut, buf[cut:], nl < 0
            else:
                cut = buf.rfind(b"\n") + 1
                if not cut and len(buf) > _SEAL_MAX:
                    h.update(buf)
                    pos, buf, mid_line = pos + len(buf), b"", True
                elif cut:
                    view = memoryview(buf)
                    start = 0
                    i = buf.find(_SEAL_MARK, 0, cut)
                    while i >= 0:
                        m = _SEAL_LINE.match(buf, buf.rfind(b"\n", 0, i) + 1, cut)
                        if m is not None and m.start(1) == i:
                            s, e = m.span()
                            h.update(view[start:s])
                            head, seq = self._seal_of(h, head, buf[s : e - 1], pos + s)
                            h, start, after = sha256(), e, pos + e
                            seals += 1
                        i = buf.find(_SEAL_MARK, i + 1, cut)
                    h.update(view[start:cut])
                    view.release()
                    pos, buf = pos + cut, buf[cut:]
            if not want and (mid_line or b"\n" not in buf):
                break  # `end` follows a newline: what is left is nothing
        return (seq + 1 if seals else 0), head, after

    def _seal_of(self, h: _Hash, head: bytes, line: bytes, at: int) -> tuple[bytes, int]:
        """Check the seal line at byte `at` against its batch (fed into `h`) and `head`."""
        parts = split_line(line)
        try:
            seal = _decode_seal(line)
        except (*UNDECODABLE, UnicodeDecodeError):
            seal = None
        if seal is not None and parts is not None and seal.kind == SEAL:
            h.update(parts[0])
            if h.hexdigest().encode() == parts[1] and seal.prev.encode() == head:
                return parts[1], seal.seq
        raise ChainCorrupt(
            f"{self.path}: line {self._line_at(at)}: "
            "the seal does not match the records before it "
            "(or does not chain to the seal before it); "
            "run `knightwatch audit verify` before appending to this file"
        )

    def _line_at(self, at: int) -> int:
        """The number (from 1) of the line starting at byte `at`: for an error message."""
        lineno = 1
        for off in range(0, at, _CHUNK):
            lineno += os.pread(self.fd, min(_CHUNK, at - off), off).count(b"\n")
        return lineno

    def reader(self) -> BinaryIO:
        """The file this log holds, to read from its start (`_HeldReader`): not the path,
        which another file may have been renamed over since this opened it."""
        return io.BufferedReader(_HeldReader(self.fd))

    def _data_end(self, size: int) -> int:
        """The offset after the last non-zero byte (the rest is allocated, unused space)."""
        end = data_ends(self.fd, size)  # a sparse file's hole is never read
        while end > 0:
            start = max(0, end - _CHUNK)
            chunk = os.pread(self.fd, end - start, start).rstrip(b"\0")
            if chunk:
                return start + len(chunk)
            end = start
        return 0

    def _complete_end(self, data_end: int) -> int:
        """The offset after the last newline before `data_end`."""
        pos = data_end
        while pos > 0:
            start = max(0, pos - _CHUNK)
            nl = os.pread(self.fd, pos - start, start).rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0

    def _untorn(self, complete: int) -> int:
        """`complete`, or the start of the last line when a crash stopped its copy part-way.

        The copy into the map (memcpy) may store a line's last bytes, newline and all,
        before its middle: a crash then leaves a complete-looking line with zeros inside
        (about 1 kill -9 in 40 in `bench/audit_bench.py`, which then could not reopen the
        file). A record never holds a NUL byte (JSON escapes it), so such a last line is
        torn, cut and recorded as a torn tail is; a line without one is judged as before.
        One writer copies one line at a time, so only the last line can be torn."""
        if complete == 0:
            return 0
        start = self._complete_end(complete - 1)
        return start if b"\0" in os.pread(self.fd, complete - start, start) else complete

    def _unsealed(self, start: int, end: int, seq: int) -> tuple[int, int, int]:
        """Walk the complete lines after the last seal: each must be the next record.

        Returns (offset after them, next seq, records). A crash can only leave
        the last line half-written (cut by the caller); a complete line that is
        not the next record means the file was changed or is not a recorder's:
        refused (ChainCorrupt), never cut.
        """
        pos = start
        count = 0
        buf = b""
        while pos + len(buf) < end or buf:
            if b"\n" not in buf:
                more = os.pread(self.fd, min(_CHUNK, end - pos - len(buf)), pos + len(buf))
                if not more:
                    break
                buf += more
                continue
            nl = buf.index(b"\n")
            line = buf[:nl]
            try:
                link = _decode_link(line)
            except (*UNDECODABLE, UnicodeDecodeError):
                link = None
            if link is None or link.seq != seq or link.kind == SEAL:
                raise ChainCorrupt(
                    f"{self.path}: line {self._line_at(pos)} (byte {pos}) is not the record "
                    f"that should follow (seq {seq}); run `knightwatch audit verify` before "
                    "appending"
                )
            seq += 1
            count += 1
            pos += nl + 1
            buf = buf[nl + 1 :]
        return pos, seq, count

    # ------------------------------------------------------------------ writing

    def replace_torn(self, end: int, torn: int, line: bytes) -> None:
        """Write `line` over the `torn` bytes at `end` (zero bytes over what it leaves),
        and fdatasync, before `start` cuts the file.

        `line` is the recovery event that records the torn bytes: it takes their place
        in one write and is on disk before anything is cut, so a crash at any point of
        the open leaves the torn bytes or the event that describes them, never neither
        (before, the cut came first, and a crash before the event lost the evidence).
        """
        data = line + bytes(max(0, torn - len(line)))
        done = 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], end + done)
        os.fdatasync(self.fd)

    def start(self, end: int) -> None:
        """Cut the file at `end` (dropping torn bytes and unused space) and map it for appends."""
        os.ftruncate(self.fd, end)
        seg = end - end % self.segment
        m = self.map = self._segment(seg)
        m.seek(end - seg)
        self.seg_end = seg + self.segment
        self.limit = self.seg_end - self.reserve

    def _segment(self, offset: int) -> mmap.mmap:
        os.posix_fallocate(self.fd, offset, self.segment)
        m = mmap.mmap(self.fd, self.segment, offset=offset)
        if self._prefault:
            # The appends' map reads nothing ahead: a record copy that outruns `preload`
            # faults in one page, not the kernel's read-around (`read_ahead_kb`, 8 MiB
            # on the build machine), which took 35-98 ms of a blocked order's call.
            # `preload` reads ahead through a second map of the same pages, where the
            # read-around is kept: its large folios keep an fsync's write-protect pass
            # short (one TLB flush per folio, not one per page).
            m.madvise(mmap.MADV_RANDOM)
            ahead = mmap.mmap(self.fd, self.segment, offset=offset)
            self._bases[offset] = _address(m)
            self._ahead_bases[offset] = _address(ahead)
            self._ahead_maps[offset] = ahead
        return m

    def prefault(self, start: int, length: int = PREFAULT) -> None:
        """Make the pages of [start, start + length) writable now, so no record copy faults.

        A copy into a page of the map that is not yet mapped, or that the
        kernel write-protected when it wrote it back (every fsync does), costs
        a page fault on the order path (a few µs, one page in eight records).
        Called from the background threads; the call releases the interpreter
        lock, changes no byte, and is skipped where the kernel lacks it.
        """
        self._populate(start, length, _MADV_POPULATE_WRITE, self._bases)

    def preload(self, start: int, length: int) -> int:
        """Allocate the pages of [start, start + length) now without dirtying them
        (`PRELOAD_FACTOR`): the first touch of fresh memory happens here, not on the
        order path. Background thread only; skipped where the kernel lacks it.
        Returns the offset it reached (short of the end where no segment is mapped yet)."""
        reached = self._populate(start, length, _MADV_POPULATE_READ, self._ahead_bases)
        # the appends' map too, from the pages now in memory: a copy past the writable
        # window then takes a write-protect fault, not a fault that looks the page up
        self._populate(start, reached - start, _MADV_POPULATE_READ, self._bases)
        return reached

    def _populate(self, start: int, length: int, advice: int, bases: dict[int, int]) -> int:
        end = start + length
        if not self._prefault or _madvise is None:
            return end
        while start < end:
            seg = start - start % self.segment
            base = bases.get(seg)
            if base is None:
                return start  # not mapped (yet, or any more)
            page = start - start % mmap.PAGESIZE
            n = min(end, seg + self.segment) - page
            if _madvise(base + (page - seg), n, advice) != 0:
                if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS):
                    self._prefault = False  # an older kernel: the faults stay, nothing breaks
                return end
            start = page + n
        return end

    def needs_next(self, end: int) -> bool:
        """Half the current segment is used: time to prepare the next one."""
        return self.next is None and end > self.seg_end - self.segment // 2

    def prepare_next(self) -> None:
        """Allocate and map the segment after the current one (background thread)."""
        with self._grow:
            if self.next is None:
                self.next = self._segment(self.seg_end)
                self.limit = self.seg_end + self.segment - self.reserve

    def spill(self, line: bytes, end: int) -> mmap.mmap:
        """Append a line that does not fit the current segment; returns the new current map.

        The next segment is prepared first if the background thread has not yet,
        so a failure (OSError) leaves nothing written.
        """
        with self._grow:
            if self.next is None:
                self.next = self._segment(self.seg_end)
            m = self.map
            assert m is not None
            room = self.seg_end - end
            view = memoryview(line)
            if room > 0:
                m.write(view[:room])
            self.retired.append(m)
            m, self.next = self.next, None
            self.map = m
            self.seg_end += self.segment
            self.limit = self.seg_end - self.reserve
            rest = view[room:]
            while len(rest) > self.segment:  # a line longer than a segment (pathological)
                m.write(rest[: self.segment])
                rest = rest[self.segment :]
                self.retired.append(m)
                m = self.map = self._segment(self.seg_end)
                self.seg_end += self.segment
                self.limit = self.seg_end - self.reserve
            m.write(rest)
            return m

    def read(self, start: int, end: int) -> bytes:
        return os.pread(self.fd, end - start, start)

    def feed(self, h: _Hash, start: int, end: int, buf: bytearray) -> None:
        """Hash the file's bytes [start, end) into `h`, read through `buf`.

        `buf` belongs to the calling thread and serves every call: a new buffer
        per pass is memory touched for the first time (see `PRELOAD_FACTOR`),
        which cost more than the hash itself, 4-12 ms of a Guard call that hashed
        the last few MiB of a batch the sealer handed over.
        """
        view = memoryview(buf)
        size = len(view)
        try:
            while start < end:
                n = os.preadv(self.fd, [view[: min(size, end - start)]], start)
                if n <= 0:
                    raise OSError(errno.EIO, f"{self.path}: the file ends before byte {end}")
                h.update(view[:n])
                start += n
        finally:
            view.release()

    def sync(self) -> None:
        # fdatasync writes back pages dirtied through the maps too
        os.fdatasync(self.fd)

    def close_retired(self) -> None:
        """Unmap segments the appender has left (background thread: munmap takes a while)."""
        with self._grow:
            retired, self.retired = self.retired, []
            live = {self.seg_end - self.segment, self.seg_end}
            for seg in [s for s in self._bases if s not in live]:
                del self._bases[seg]
                del self._ahead_bases[seg]
                retired.append(self._ahead_maps.pop(seg))
        for m in retired:
            m.close()

    def close(self, end: int | None = None) -> None:
        """Unmap, cut the unused allocated space at `end`, release the lock and the file."""
        if self.fd < 0:
            return
        self._bases.clear()
        self._ahead_bases.clear()
        ahead, self._ahead_maps = list(self._ahead_maps.values()), {}
        for m in (self.map, self.next, *self.retired, *ahead):
            if m is not None:
                m.close()
        self.map = self.next = None
        self.retired = []
        try:
            if end is not None:
                os.ftruncate(self.fd, end)
        finally:
            os.close(self.fd)
            self.fd = -1
