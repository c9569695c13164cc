"""Reopening a file continues its chain; what a crash left is cut or sealed and noted."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from hashlib import sha256
from pathlib import Path

import msgspec
import pytest

from knightwatch.audit import (
    GENESIS,
    RECOVERY,
    ChainCorrupt,
    EventRecord,
    FlightRecorder,
    FsyncPolicy,
    NotARegularFile,
    RecorderLocked,
    Seal,
    decode_record,
    verify_file,
)
from knightwatch.audit.chain import seal_batch
from knightwatch.audit.log import is_seal
from knightwatch.clock import SimClock
from knightwatch.decision import ACCEPTED

from .conftest import WriteFile
from .helpers import CTX, RULES, order


def records(path: Path) -> list[object]:
    return [decode_record(line) for line in path.read_bytes().splitlines()]


def test_reopen_appends_to_the_same_chain(write_file: WriteFile, audit_path: Path) -> None:
    first = write_file(10)
    head = msgspec.json.decode(first[-1], type=Seal)
    with FlightRecorder(audit_path, clock=SimClock(5)) as rec:
        assert rec.seq == head.seq + 1 and rec.head == head.hash
        rec.record_decision(order(99), ACCEPTED, CTX, RULES)
    lines = audit_path.read_bytes().splitlines()
    assert len(lines) == len(first) + 2  # the record and its seal
    new, seal = decode_record(lines[-2]), msgspec.json.decode(lines[-1], type=Seal)
    assert new.seq == head.seq + 1 and seal.prev == head.hash
    report = verify_file(audit_path)
    assert report.intact and report.lines == len(first) + 2


def test_three_restarts_make_one_chain(audit_path: Path, clock: SimClock) -> None:
    for run in range(3):
        with FlightRecorder(audit_path, clock=clock) as rec:
            for i in range(5):
                rec.record_decision(order(run * 10 + i), ACCEPTED, CTX, RULES)
    report = verify_file(audit_path)
    assert report.intact and report.records == 15 and report.seals == 3


def test_torn_tail_is_cut_and_recorded(write_file: WriteFile, audit_path: Path) -> None:
    write_file(6)
    torn = b'{"seq":99,"ts":1,"kind":"decision","node":"n1","ord'
    with audit_path.open("ab") as f:
        f.write(torn + b"\0" * 4096)  # a crashed recorder's file is allocated past its data
    assert verify_file(audit_path).problems[0].kind == "truncated"
    with FlightRecorder(audit_path, clock=SimClock(7)) as rec:
        rec.record_decision(order(50), ACCEPTED, CTX, RULES)
    assert verify_file(audit_path).intact
    recovery = next(r for r in records(audit_path) if getattr(r, "kind", "") == RECOVERY)
    assert isinstance(recovery, EventRecord)
    assert recovery.data == {
        "unsealed_records": 0,
        "truncated_bytes": len(torn),
        "truncated_sha256": sha256(torn).hexdigest(),
    }


@pytest.mark.parametrize("point", ["scan", "start"])
def test_a_crash_while_opening_never_loses_the_torn_bytes_evidence(
    write_file: WriteFile, audit_path: Path, point: str
) -> None:
    """The torn last line was cut (`MappedLog.start`) before the `recovery` event that
    records it was written: a kill -9 in between left a clean-looking file, and the next
    open recorded no cut at all. The event now replaces the torn bytes on disk first."""
    lines = write_file(20)
    torn = b'{"seq":99,"ts":1,"kind":"decision","node":"n1","ord'
    audit_path.write_bytes(b"".join(lines[:-1]) + torn + b"\0" * 4096)
    script = textwrap.dedent(
        f"""
        import os, signal
        from knightwatch.audit import FlightRecorder
        from knightwatch.audit.log import MappedLog
        from knightwatch.clock import SimClock
        real = MappedLog.{point}
        def crash(self, *args):
            out = real(self, *args)
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies right after this step
            return out
        MappedLog.{point} = crash
        FlightRecorder({str(audit_path)!r}, clock=SimClock(7))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with FlightRecorder(audit_path, clock=SimClock(9)) as rec:
        rec.record_decision(order(50), ACCEPTED, CTX, RULES)
    assert verify_file(audit_path).intact
    cuts = [
        r.data
        for r in records(audit_path)
        if isinstance(r, EventRecord) and r.kind == RECOVERY and r.data["truncated_bytes"]
    ]
    assert cuts == [
        {
            "unsealed_records": 7,
            "truncated_bytes": len(torn),
            "truncated_sha256": sha256(torn).hexdigest(),
        }
    ]


def test_a_symlink_planted_at_the_path_is_refused_not_appended_through(
    write_file: WriteFile, audit_path: Path, tmp_path: Path
) -> None:
    """The recorder opened its path following links: a link planted there to another
    node's file made it append its records (and cut the other file's torn tail) there."""
    write_file(10)
    other = audit_path.read_bytes()
    link = tmp_path / "n2.jsonl"
    link.symlink_to(audit_path)
    with pytest.raises(NotARegularFile, match=r"n2\.jsonl: a symbolic link; .* never writes"):
        FlightRecorder(link, clock=SimClock(7))
    assert audit_path.read_bytes() == other
    assert verify_file(link).intact  # reading a file the operator names still follows it


def test_a_dangling_symlink_does_not_create_its_target(tmp_path: Path, clock: SimClock) -> None:
    """`O_CREAT` follows a dangling link: the recorder created a file wherever it pointed."""
    target = tmp_path / "elsewhere" / "planted.jsonl"
    target.parent.mkdir()
    link = tmp_path / "n1.jsonl"
    link.symlink_to(target)
    with pytest.raises(NotARegularFile, match="a symbolic link"):
        FlightRecorder(link, clock=clock)
    assert not target.exists()


def test_a_new_file_is_readable_by_its_owner_only(audit_path: Path, clock: SimClock) -> None:
    """A new audit file was created 0644: every local user could read the orders in it."""
    old = os.umask(0)
    try:
        with FlightRecorder(audit_path, clock=clock) as rec:
            rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    finally:
        os.umask(old)
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o600


def test_records_a_crash_left_unsealed_are_sealed_on_reopen(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file(20)
    crashed = b"".join(lines[:-1]) + b"\0" * 4096  # no last seal; allocated space after it
    audit_path.write_bytes(crashed)
    with FlightRecorder(audit_path, clock=SimClock(7)) as rec:
        assert rec.seq == len(lines) - 1 + 2  # the unsealed records, a recovery event, a seal
    report = verify_file(audit_path)
    assert report.intact and report.records == 23 + 1
    recovery = records(audit_path)[-2]
    assert isinstance(recovery, EventRecord) and recovery.kind == RECOVERY
    assert recovery.data["unsealed_records"] == 7 and recovery.data["truncated_bytes"] == 0
    assert b"\0" not in audit_path.read_bytes()


@pytest.mark.parametrize("victim", [-2, -1], ids=["record", "seal"])
def test_a_line_whose_copy_a_crash_stopped_midway_is_cut_as_torn(
    write_file: WriteFile, audit_path: Path, victim: int
) -> None:
    """memcpy may store a line's end (its newline too) before its middle: after kill -9 the
    last line looks complete but holds zeros. It is cut and recorded as a torn tail, not
    refused as a changed file (the recorder could not reopen it)."""
    lines = write_file(20)
    line = lines[victim]
    torn = line[:40] + b"\0" * (len(line) - 72) + line[-32:]
    assert torn.endswith(b"\n") and len(torn) == len(line)
    audit_path.write_bytes(b"".join(lines[:-1]) + torn + b"\0" * 4096)
    with FlightRecorder(audit_path, clock=SimClock(7)) as rec:
        rec.record_decision(order(50), ACCEPTED, CTX, RULES)
    assert verify_file(audit_path).intact
    recovery = next(r for r in records(audit_path) if getattr(r, "kind", "") == RECOVERY)
    assert isinstance(recovery, EventRecord)
    assert recovery.data["truncated_bytes"] == len(torn)
    assert recovery.data["truncated_sha256"] == sha256(torn).hexdigest()
    assert b"\0" not in audit_path.read_bytes()


def test_a_nul_in_a_line_before_the_last_is_still_a_changed_file(
    write_file: WriteFile, audit_path: Path
) -> None:
    lines = write_file(20)
    bad = lines[-3][:40] + b"\0" * (len(lines[-3]) - 72) + lines[-3][-32:]
    audit_path.write_bytes(b"".join(lines[:-3]) + bad + lines[-2])
    with pytest.raises(ChainCorrupt):
        FlightRecorder(audit_path, clock=SimClock(7))


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_torn_tail_recovery_under_every_policy(
    write_file: WriteFile, audit_path: Path, policy: FsyncPolicy
) -> None:
    write_file(3)
    with audit_path.open("ab") as f:
        f.write(b'{"seq":9')
    with FlightRecorder(audit_path, clock=SimClock(7), fsync=policy) as rec:
        rec.record_decision(order(50), ACCEPTED, CTX, RULES)
    assert verify_file(audit_path).intact


def test_file_with_only_a_torn_line_starts_at_genesis(audit_path: Path, clock: SimClock) -> None:
    audit_path.write_bytes(b'{"seq":0,"ts":')
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    report = verify_file(audit_path)
    assert report.intact and report.records == 2 and report.seals == 2


def test_corrupt_last_batch_refuses_to_open(write_file: WriteFile, audit_path: Path) -> None:
    lines = write_file(6)
    lines[-2] = lines[-2].replace(b'"qty":100', b'"qty":1')
    audit_path.write_bytes(b"".join(lines))
    with pytest.raises(ChainCorrupt, match="line 8: the seal does not match"):
        FlightRecorder(audit_path, clock=SimClock())
    assert audit_path.read_bytes() == b"".join(lines)  # nothing appended, nothing cut


def test_damage_in_an_earlier_batch_refuses_to_open(
    write_file: WriteFile, audit_path: Path
) -> None:
    """Reopening checked only the last seal: a record changed in the first batch was
    appended to (and a starting node read its halts back from it). Every seal is checked
    now, and the one whose batch changed is named."""
    lines = write_file(20)
    first, *rest = [i + 1 for i, line in enumerate(lines) if is_seal(line)]
    assert len(rest) >= 2  # two intact seals after it, the last among them
    lines[2] = lines[2].replace(b'"qty":100', b'"qty":999')
    audit_path.write_bytes(b"".join(lines))
    with pytest.raises(ChainCorrupt, match=f"line {first}: the seal does not match"):
        FlightRecorder(audit_path, clock=SimClock())
    assert audit_path.read_bytes() == b"".join(lines)  # nothing appended, nothing cut


def test_a_batch_cut_out_with_its_seal_refuses_to_open(
    write_file: WriteFile, audit_path: Path
) -> None:
    """Every seal is intact, but the second no longer chains to the one before it."""
    lines = write_file(20)
    first, second, third, *_ = [i + 1 for i, line in enumerate(lines) if is_seal(line)]
    kept = lines[:first] + lines[second:]
    audit_path.write_bytes(b"".join(kept))
    at = third - (second - first)  # where the third seal is now
    with pytest.raises(ChainCorrupt, match=f"line {at}: the seal does not match"):
        FlightRecorder(audit_path, clock=SimClock())
    assert not verify_file(audit_path).intact


def test_lines_longer_than_a_read_are_hashed_whole_at_reopen(
    audit_path: Path, clock: SimClock
) -> None:
    """A sealed line over a read chunk (1 MiB) is read through, not taken for a seal."""
    long = b'{"ts":1,"kind":"note","node":"n1","data":{"x":"' + b"y" * (3 << 20) + b'"}}'
    short = b'{"ts":1,"kind":"note","node":"n1","data":{}}'
    out, seq, head = seal_batch([short, long], 0, GENESIS.encode())
    more, seq, head = seal_batch([long, short, long], seq, head)
    audit_path.write_bytes(b"".join(out + more))
    with FlightRecorder(audit_path, clock=clock) as rec:
        assert (rec.seq, rec.head) == (seq, head.decode())
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.flush()
        head = rec.head.encode()
    with FlightRecorder(audit_path, clock=clock) as rec:
        assert (rec.seq, rec.head) == (seq + 2, head.decode())


@pytest.mark.parametrize(
    "content", [b'{"limits": {"max_order_qty": 100}}', b"#!/bin/sh\nexit 0", b"x" * 100_000]
)
def test_a_file_that_is_no_recorders_is_refused_not_cut(
    audit_path: Path, clock: SimClock, content: bytes
) -> None:
    """A last line without a newline was cut as a crash's torn record whatever it held:
    `--recorder` pointed at a file with no (final) newline emptied it and appended."""
    audit_path.write_bytes(content)
    with pytest.raises(ChainCorrupt, match="are not a record a crash cut short"):
        FlightRecorder(audit_path, clock=clock)
    assert audit_path.read_bytes() == content


@pytest.mark.parametrize(
    "content",
    [
        b"\0" * 16 + bytes(b for b in range(1, 256) if b != 0x0A) * 4,  # a binary header
        b"\0" * 7 + b"\x01\x02 a file that starts with zero bytes\n",
    ],
    ids=["no-newline", "one-line"],
)
def test_a_file_that_starts_with_zero_bytes_is_refused_not_cut(
    audit_path: Path, clock: SimClock, content: bytes
) -> None:
    """A last line may start with zero bytes a crash left unstored, and that was all that
    was checked: a binary file whose first 7 bytes are zero (and with no newline before
    its last line) was emptied and appended to. A record holds no control bytes."""
    audit_path.write_bytes(content)
    with pytest.raises(ChainCorrupt, match="are not a record a crash cut short"):
        FlightRecorder(audit_path, clock=clock)
    assert audit_path.read_bytes() == content


def test_a_changed_line_after_the_last_seal_is_named_by_its_line(
    write_file: WriteFile, audit_path: Path
) -> None:
    """The refusal named only a byte offset: an operator had to count bytes to find it."""
    lines = write_file(20)  # line 18 the second seal, lines 19-25 records, line 26 the seal
    lines[20] = lines[20].replace(b'"seq":20,', b'"seq":21,')
    audit_path.write_bytes(b"".join(lines[:-1]))  # a crash before the last seal
    with pytest.raises(ChainCorrupt, match=r"line 21 \(byte \d+\) is not the record that "):
        FlightRecorder(audit_path, clock=SimClock(7))


def test_second_writer_on_the_same_file_is_refused(audit_path: Path, clock: SimClock) -> None:
    with FlightRecorder(audit_path, clock=clock) as rec:
        with pytest.raises(RecorderLocked, match="another flight recorder"):
            FlightRecorder(audit_path, clock=clock)
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
    with FlightRecorder(audit_path, clock=clock):  # released on close
        pass
    assert verify_file(audit_path).records == 1


def test_long_last_line_is_found_across_read_chunks(audit_path: Path, clock: SimClock) -> None:
    with FlightRecorder(audit_path, clock=clock) as rec:
        rec.record_decision(order(1), ACCEPTED, CTX, RULES)
        rec.record_event("limits_reload", CTX, note="x" * 3_000_000)
    with FlightRecorder(audit_path, clock=clock) as rec:
        assert rec.seq == 3
        rec.record_decision(order(2), ACCEPTED, CTX, RULES)
    assert verify_file(audit_path).intact
