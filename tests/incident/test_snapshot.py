"""The evidence snapshot: what it holds, its signature, and every kind of tampering found."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.incident import snapshot_after_kill
from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import AUDIT_STREAM
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, AuditEnvelope, AuditRefusal, NodeStatus
from knightwatch.control.site import Site
from knightwatch.incident.snapshot import (
    MANIFEST,
    SIGNATURE,
    SnapshotError,
    seal,
    take_snapshot,
    verify_snapshot,
)
from knightwatch.release.keys import SigningKey, write_key_pair
from knightwatch.state import Scope, TradingState

from .fixtures import fleet, site_and_admin

FILES = {"kill/entries.json": b'{"a": 1}\n', "recorder/n1.jsonl": b'{"seq": 1}\n'}


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            out[info.name] = handle.read()
        return out


def rebuild(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_a_snapshot_of_a_killed_fleet_holds_the_evidence_and_verifies() -> None:
    f = await fleet("n1", "n2")
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    key = SigningKey.generate()
    data = await take_snapshot(
        await f.plane(), f.clock, key, actor="alice", reason="evidence", listen_s=0.2
    )
    check = verify_snapshot(data, source="s.tar")
    assert check.ok and check.signer == key.key_id and check.actor == "alice"
    files = members(data)
    assert b'"reason": "runaway"' in files["kill/entries.json"]
    assert b'"n1"' in files["nodes/members.json"] and b'"n2"' in files["nodes/members.json"]
    assert set(files) >= {
        "nodes/clock_offsets_ms.json",
        "nodes/metrics.json",
        "recorder/heads.json",
    }
    await f.stop()


async def test_a_record_that_is_not_even_text_is_kept_byte_for_byte() -> None:
    """A stored record that is not JSON is evidence of what was written there: one that is
    not UTF-8 was decoded with replacement characters, its bytes lost for good. Now they
    are kept in base64; a text record stays text, a JSON one a JSON value."""
    f = await fleet("n1")
    plane = await f.plane()
    junk = b"\xff\xfe verdict \x00\x9c"
    await plane.put_record(Bucket.ADMISSION, "n2", junk)
    await plane.put_record(Bucket.ADMISSION, "n3", b"{not json")
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="a", reason="r",
                               listen_s=0.1)  # fmt: skip
    assert verify_snapshot(data, source="s.tar").ok
    admission = json.loads(members(data)["nodes/admission.json"])
    assert base64.b64decode(admission["n2"]["value_base64"]) == junk
    assert admission["n3"]["value"] == "{not json"
    await f.stop()


async def test_evidence_a_node_did_not_send_is_stated_not_left_out() -> None:
    """A member that sent no flight-recorder records, heartbeat or metrics (here n3: its
    membership record is there, the process is not) is named in `incomplete.json` and
    gets a head saying "no records"; before, it was simply absent from the evidence."""
    f = await fleet("n1")
    plane = await f.plane()
    now = f.clock.time_ns()
    await plane.put_member(
        NodeStatus("n3", "h", 1, now, now, now + 10**12, True, True, TradingState.ACTIVE)
    )
    await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="a", reason="r",
                               listen_s=0.3)  # fmt: skip
    check = verify_snapshot(data, source="s.tar")
    files = members(data)
    gaps = json.loads(files.get("incomplete.json", b"[]"))
    assert check.ok and list(check.incomplete) == gaps  # `verify` prints them too
    assert "recorder/n3.jsonl: no flight-recorder records from n3" in gaps, gaps
    assert any(g.startswith("nodes/clock_offsets_ms.json: no heartbeat from n3") for g in gaps)
    assert any(g.startswith("nodes/metrics.json: no metrics from n3") for g in gaps)
    assert not any("from n1 in" in g for g in gaps), gaps  # n1 is alive: heard
    assert json.loads(files["recorder/heads.json"])["n3"]["problem"] == "no records"
    await f.stop()


async def test_a_tail_whose_chain_head_cannot_be_read_is_stated() -> None:
    """A node's last record cut off mid-write (or a message of its refused) leaves no chain
    head: `incomplete.json` says so, naming the node. Before, it was only a "problem" field
    inside heads.json, and `snapshot` and `verify` printed no `incomplete:` line for it."""
    f = await fleet("n1")
    plane = await f.plane()
    now = f.clock.time_ns()
    await plane.put_member(
        NodeStatus("n3", "h", 1, now, now, now + 10**12, True, True, TradingState.ACTIVE)
    )
    await plane.append_audit(AuditEnvelope("n3", "i-n3", 1, b'{"seq":1,"hash":"h1"}\n{"seq":2,"ha'))
    data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="a", reason="r",
                               listen_s=0.2)  # fmt: skip
    check = verify_snapshot(data, source="s.tar")
    assert check.ok
    assert "recorder/n3.jsonl: no chain head: last record undecodable" in check.incomplete, (
        check.incomplete
    )
    assert not any(g.startswith("recorder/n1.jsonl: no chain head") for g in check.incomplete)
    await f.stop()


async def test_an_automatic_snapshot_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    """The snapshot `kill` takes by itself has a predictable name (time and command id):
    a link planted there must not make it overwrite the file it points to."""
    f = await fleet("n1")
    result = await (await f.killswitch()).kill(Scope.FLEET, "", "runaway", timeout_s=0.5)
    _, key_path, _ = write_key_pair(tmp_path, "alice")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"earlier evidence")
    out = tmp_path / "snapshots"
    out.mkdir()
    start = datetime.now(tz=UTC)
    for s in range(-2, 300):  # every name the next five minutes could give it
        stamp = (start + timedelta(seconds=s)).strftime("%Y%m%dT%H%M%SZ")
        (out / f"snapshot-{stamp}-{result.entry.command_id[:8]}.tar").symlink_to(victim)
    with pytest.raises(SnapshotError, match="already exists"):
        await snapshot_after_kill(await f.plane(), result, key_path, out)
    assert victim.read_bytes() == b"earlier evidence"
    await f.stop()


def test_a_member_stored_twice_is_named() -> None:
    """tar keeps both copies of a name; only one was hashed, and a reader may be shown the
    other (`tar -xO` prints both), so a second copy fails verify."""
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = list(members(data).items())
    forged = ("recorder/n1.jsonl", b'{"seq": 99}\n')
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in [forged, *files]:  # the forged copy first, the signed one last
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    check = verify_snapshot(out.getvalue(), source="s.tar")
    assert not check.ok
    assert "recorder/n1.jsonl: in the archive more than once" in check.problems


def test_one_edited_byte_in_any_file_is_named() -> None:
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    files["recorder/n1.jsonl"] = b'{"seq": 2}\n'
    check = verify_snapshot(rebuild(files), source="s.tar")
    assert not check.ok
    assert check.problems == ("recorder/n1.jsonl: sha256 does not match the manifest",)


def test_reordered_files_are_named() -> None:
    """`seal` writes the members in name order; the same files in another order are a
    rewritten archive. Before, a reordered archive verified OK."""
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    check = verify_snapshot(rebuild(dict(reversed(files.items()))), source="s.tar")
    assert not check.ok
    assert check.problems == (
        "signer.pub: out of the order the snapshot was sealed in (the archive was rewritten)",
    )
    assert verify_snapshot(rebuild(files), source="s.tar").ok  # the sealed order: fine


def test_a_rewritten_manifest_breaks_the_signature() -> None:
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    files[MANIFEST] = files[MANIFEST].replace(b'"a"', b'"b"', 1)
    check = verify_snapshot(rebuild(files), source="s.tar")
    assert f"{MANIFEST}: differs from the signed manifest" in check.problems


def test_added_and_removed_files_are_named() -> None:
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    del files["kill/entries.json"]
    files["extra.txt"] = b"x"
    check = verify_snapshot(rebuild(files), source="s.tar")
    assert check.problems == (
        "kill/entries.json: listed in the manifest, missing from the archive",
        "extra.txt: in the archive, not in the manifest",
    )


def test_a_signer_outside_the_trusted_keys_is_refused() -> None:
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    other = SigningKey.generate()
    check = verify_snapshot(data, source="s.tar", trusted={other.key_id: other.public})
    assert not check.ok and any("is not a trusted key" in p for p in check.problems)


def test_a_forged_signature_fails() -> None:
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    forged = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files[SIGNATURE] = members(forged)[SIGNATURE]  # signed by a key other than signer.pub
    check = verify_snapshot(rebuild(files), source="s.tar")
    assert any(p.startswith(f"{SIGNATURE}: no valid signature") for p in check.problems)


def test_not_an_archive_is_one_clear_error() -> None:
    with pytest.raises(SnapshotError, match=r"s\.tar: not a snapshot archive"):
        verify_snapshot(b"hello", source="s.tar")
    with pytest.raises(SnapshotError, match=r"member manifest\.json missing"):
        verify_snapshot(rebuild({"a": b"b"}), source="s.tar")
    with pytest.raises(SnapshotError, match="reserved or not a relative path"):
        seal({"../x": b""}, SigningKey.generate(), actor="a", reason="r", taken_ns=1)


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    key, _, public = write_key_pair(tmp_path, "alice")
    good = tmp_path / "good.tar"
    good.write_bytes(seal(FILES, key, actor="alice", reason="r", taken_ns=1))
    runner = CliRunner()
    ok = runner.invoke(app, ["incident", "verify", str(good), "--trusted", str(public)])
    assert ok.exit_code == 0 and "2 files intact" in " ".join(ok.output.split()), ok.output
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk")
    bad = runner.invoke(app, ["incident", "verify", str(junk)])
    assert bad.exit_code == 2 and "not a snapshot archive" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output
    missing = runner.invoke(app, ["incident", "verify", str(tmp_path / "none.tar")])
    assert missing.exit_code == 2 and "none.tar: no such file" in " ".join(missing.output.split())


def test_bytes_appended_after_the_end_of_the_archive_fail() -> None:
    """tar stops at its end-of-archive marker, so appended bytes were never checked."""
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    assert verify_snapshot(data + b"\0" * 1024, source="s.tar").ok  # more zero padding: fine
    check = verify_snapshot(data + b"garbage" * 100, source="s.tar")
    assert not check.ok
    assert any("700 byte(s) of data after the archive's end-of-archive marker" in p
               for p in check.problems)  # fmt: skip


def test_verify_without_trusted_says_the_signer_was_not_checked(tmp_path: Path) -> None:
    """Without --trusted the actor is only the archive's claim: the output must say so."""
    key, _, public = write_key_pair(tmp_path, "mallory")
    archive = tmp_path / "s.tar"
    archive.write_bytes(seal(FILES, key, actor="alice", reason="r", taken_ns=1))
    runner = CliRunner()
    out = runner.invoke(app, ["incident", "verify", str(archive)], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert (
        f"signature valid for key {key.key_id[:16]}; signer not checked: pass --trusted FILE"
        in (out.output)
    )
    assert "actor as claimed in the archive: 'alice'" in out.output
    assert "(alice)" not in out.output
    trusted = runner.invoke(
        app, ["incident", "verify", str(archive), "--trusted", str(public)], env={"COLUMNS": "300"}
    )
    assert trusted.exit_code == 0 and f"signed by trusted key {key.key_id[:16]}" in trusted.output


async def test_a_node_cannot_plant_or_break_another_nodes_evidence(tmp_path: Path) -> None:
    """On a real server with authorization: n1 may publish only on its own audit subject,
    and there it sends an envelope naming n2, one naming the supervisor, bytes that are no
    envelope and an envelope with no records. The snapshot is still taken; n2's tail and the
    supervisor's actions hold none of it; n1's tail names each refusal with its reason."""
    site = Site(tmp_path / "site", ("n1", "n2"))
    await site.astart()
    planes = []
    try:
        planes = [await site.connect(name) for name in ("n1", "n2", "alice")]
        n1, n2, alice = planes
        real = b'{"seq":1,"hash":"real-n2","event":"order"}\n'
        await n2.append_audit(AuditEnvelope("n2", "i-n2", 1, real))
        js = n1._require_js()
        for payload in (
            ENCODER.encode(AuditEnvelope("n2", "x", 1, b'{"seq":2,"hash":"FORGED"}\n')),
            ENCODER.encode(AuditEnvelope("supervisor", "x", 2, b'{"action":"FORGED"}\n')),
            b"not json",
            ENCODER.encode(AuditEnvelope("n1", "x", 3, b"")),
        ):
            await js.publish("kw.audit.n1", payload)
        key = SigningKey.generate()
        data = await take_snapshot(
            alice, SystemClock(), key, actor="alice", reason="t", listen_s=0.1
        )
        assert verify_snapshot(data, source="s.tar").ok
        files = members(data)
        assert files["recorder/n2.jsonl"] == real
        assert files["supervisor/actions.jsonl"] == b""
        refused = [json.loads(line) for line in files["recorder/n1.jsonl"].splitlines()]
        assert [r["reason"] for r in refused] == [
            AuditRefusal.FORGED,
            AuditRefusal.FORGED,
            AuditRefusal.UNDECODABLE,
            AuditRefusal.EMPTY,
        ]
        assert all(r["event"] == "audit_refused" and r["sender"] == "n1" for r in refused)
        assert "'n2'" in refused[0]["detail"] and "'supervisor'" in refused[1]["detail"]
        heads = json.loads(files["recorder/heads.json"])
        assert heads["n2"] == {"seq": 1, "hash": "real-n2"}
        assert heads["n1"]["seq"] is None and "audit_empty" in heads["n1"]["problem"]
    finally:
        for plane in planes:
            await plane.close()
        site.stop()


async def test_an_audit_stream_that_cannot_be_read_is_named_not_the_whole_snapshot_lost(
    tmp_path: Path,
) -> None:
    """On a real server whose audit stream is gone (deleted, or lost with its replicas): the
    snapshot failed as a whole, every store it had already read lost with it. Now the kill
    entries and the stores are sealed, and `incomplete.json` names the audit stream."""
    async with site_and_admin(tmp_path) as (site, admin, alice):
        await site.killswitch(alice, "alice").kill(Scope.FLEET, "", "runaway", timeout_s=0.2)
        await admin._require_js().delete_stream(AUDIT_STREAM)
        data = await take_snapshot(
            alice, SystemClock(), SigningKey.generate(), actor="alice", reason="t", listen_s=0.1
        )
        check = verify_snapshot(data, source="s.tar")
        assert check.ok, check.problems
        assert any(
            g.startswith("recorder/: the audit stream could not be read after 0 messages")
            and AUDIT_STREAM in g
            for g in check.incomplete
        ), check.incomplete
        entries = json.loads(members(data)["kill/entries.json"])
        assert entries["fleet.fleet"]["entry"]["reason"] == "runaway"


def test_a_sparse_member_is_named_not_expanded() -> None:
    """A GNU sparse member's size is declared in its header, not stored: a 10 KB archive
    can declare gigabytes of zeros, and verify read every one into memory (here 64 MiB:
    enough to tell, small enough for the test). `seal` never writes a sparse member."""
    data = seal(FILES, SigningKey.generate(), actor="a", reason="r", taken_ns=1)
    files = members(data)
    declared = 64 * 1024 * 1024
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        bomb = tarfile.TarInfo("zz.bin")
        bomb.size = 1
        bomb.pax_headers = {
            "GNU.sparse.map": "0,1",
            "GNU.sparse.size": str(declared),
            "GNU.sparse.name": "zz.bin",
        }
        tar.addfile(bomb, io.BytesIO(b"a"))
    assert len(out.getvalue()) < 64 * 1024
    check = verify_snapshot(out.getvalue(), source="s.tar")
    assert not check.ok
    assert check.problems == (
        f"s.tar: member 'zz.bin' is a sparse file (declares {declared} bytes; not read)",
    )


_CUT_SHORT = """
import asyncio, resource, signal, sys
from pathlib import Path
from knightwatch.cli.incident import snapshot_after_kill
from knightwatch.control.fleet.killswitch import CommandResult
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.control.plane.wire import StateEntry
from knightwatch.incident.snapshot import SnapshotError
from knightwatch.state import Scope, TradingState

async def main() -> None:
    plane = MemoryControlPlane(MemoryFabric())
    await plane.connect()
    entry = StateEntry(Scope.FLEET, "fleet", TradingState.HALTED, "runaway", "alice", "c" * 32, 1)
    result = CommandResult(entry, [], {}, [], 1, sent=True)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a disk that fills up midway
    try:
        await snapshot_after_kill(plane, result, Path(sys.argv[1]), Path(sys.argv[2]))
    except SnapshotError as exc:
        print(exc)

asyncio.run(main())
"""


def test_an_automatic_snapshot_cut_short_leaves_no_cut_archive(tmp_path: Path) -> None:
    """The archive was written in place: a write that failed partway (a full disk, here a
    file size limit) left a cut archive under the evidence's name, which `verify` cannot
    read and which made the next try refuse as "already exists". Now nothing is left."""
    _, key_path, _ = write_key_pair(tmp_path, "alice")
    out = tmp_path / "snapshots"
    done = subprocess.run(
        [sys.executable, "-c", _CUT_SHORT, str(key_path), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = " ".join(done.stdout.split())
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "evidence snapshot was NOT written" in said and "File too large" in said, said
    assert list(out.iterdir()) == [], "a cut archive (or its temporary file) was left behind"


def test_evidence_is_written_as_a_new_file_never_over_a_file_or_a_link(tmp_path: Path) -> None:
    from knightwatch.cli.incident import write_new

    archive = tmp_path / "evidence.tar"
    write_new(archive, b"sealed bytes")
    assert archive.read_bytes() == b"sealed bytes"
    with pytest.raises(FileExistsError):
        write_new(archive, b"other")
    (tmp_path / "planted.tar").symlink_to(tmp_path / "absent-target")
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "planted.tar", b"other")
    assert not (tmp_path / "absent-target").exists()
    assert archive.read_bytes() == b"sealed bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.tar", "planted.tar"]
