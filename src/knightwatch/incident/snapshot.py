"""The evidence snapshot: what the fleet looked like at the kill, sealed before anything restarts.

Restarting a node destroys what it knew; restoring a release overwrites what
ran. So before either, one command collects the kill entries (every write the
store keeps of each slot, not only its last) and their confirmations, each
node's membership, admission verdict and applied flag revisions, the flag
state and its history, the supervisor's actions, each node's flight-recorder
chain head and last records, clock offsets, the latest metrics and the release
manifest in force, into one tar archive with a manifest of SHA-256 hashes
signed (DSSE, Ed25519) by the operator who took it.
Evidence it could not collect (a member that sent no heartbeat, metrics or
flight-recorder records, a store that could not be read, the audit messages
before the stream's last `_AUDIT_CAP`: the tails are the records nearest the kill;
audit messages the stream no longer held when read, discarded by its size limit
or deleted) is named in `incomplete.json`, never silently left out.
`verify_snapshot` checks the signature and every hash, so one edited byte is
found. An archive is never sealed bigger than `SNAPSHOT_MAX_BYTES`, what `incident
verify` reads: the flight-recorder tails (what grows with `--last`) are cut to their
newest records that fit, each cut named in `incomplete.json` (the chain heads are read
from the whole tails first), and evidence too big even without them is refused in one
line. Before, an archive past the bound was written that no one could then verify.
Taking a snapshot only reads the control plane: it never blocks or slows a kill.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import tarfile
from collections import deque
from collections.abc import Mapping

import msgspec

from knightwatch.clock import Clock
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.control.plane.wire import NodeMetrics, NodeStatus, StateEntry, parse_slot
from knightwatch.errors import KnightwatchError
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import (
    add_signature,
    check_signatures,
    decode_envelope,
    encode_envelope,
    new_envelope,
)
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, VerifyKey

PAYLOAD_TYPE = "application/vnd.knightwatch.incident-snapshot+json"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.dsse.json"
SIGNER = "signer.pub"
INCOMPLETE = "incomplete.json"
"""What evidence the snapshot could not collect, one line each (empty: nothing missing)."""
_SEALED = frozenset({MANIFEST, SIGNATURE, SIGNER})
SNAPSHOT_MAX_BYTES = 256 * 1024 * 1024
"""The biggest archive a snapshot seals, and `incident verify` reads."""
_TAR_BLOCK = 512
_AUDIT_PAGE = 1000
_AUDIT_CAP = 500_000
_PRETTY = msgspec.json.Encoder(order="sorted")


class SnapshotError(KnightwatchError, ValueError):
    """A snapshot that cannot be taken or read; the message names the file or member."""


class SnapshotManifest(msgspec.Struct, frozen=True):
    actor: str
    reason: str
    taken_ns: int
    files: dict[str, str]
    """archive member -> sha256 hex of its bytes."""


class SnapshotCheck(msgspec.Struct, frozen=True):
    ok: bool
    signer: str
    actor: str
    taken_ns: int
    files: int
    problems: tuple[str, ...]
    incomplete: tuple[str, ...] = ()
    """What the snapshot itself says it could not collect (`incomplete.json`)."""


def _json(value: object) -> bytes:
    return msgspec.json.format(_PRETTY.encode(value), indent=2) + b"\n"


def _records(raw: Mapping[str, tuple[bytes, int]]) -> dict[str, object]:
    """A bucket's records as JSON values where they decode, raw text where they do not,
    and their bytes in base64 (`value_base64`) where they are not even UTF-8: a record
    that does not decode is evidence too, and decoding it with replacement characters
    lost the very bytes that show what was stored."""
    out: dict[str, object] = {}
    for key, (value, revision) in sorted(raw.items()):
        try:
            decoded: object = msgspec.json.decode(value)
        except UNDECODABLE:
            try:
                decoded = value.decode("utf-8")
            except UnicodeDecodeError:
                out[key] = {"revision": revision, "value_base64": base64.b64encode(value).decode()}
                continue
        out[key] = {"revision": revision, "value": decoded}
    return out


async def collect(
    plane: ControlPlane, clock: Clock, *, last_records: int = 200, listen_s: float = 1.0
) -> dict[str, bytes]:
    """Every evidence file by archive name (reads only).

    It hears heartbeats and metrics while it reads, and drops both subscriptions when
    done, however it ends: the plane may be a console session's link, where each
    snapshot left two live handlers for good, every heartbeat then calling them all."""
    offsets: dict[str, float] = {}
    metrics: dict[str, NodeMetrics] = {}

    async def on_heartbeat(s: NodeStatus) -> None:
        offsets[s.node_id] = (s.seen_ns - clock.time_ns()) / 1e6

    async def on_metrics(m: NodeMetrics) -> None:
        metrics[m.node_id] = m

    drop_heartbeats = await plane.subscribe_heartbeats(on_heartbeat)
    try:
        drop_metrics = await plane.subscribe_metrics(on_metrics)
        try:
            return await _collect(plane, offsets, metrics, last_records, listen_s)
        finally:
            await drop_metrics()
    finally:
        await drop_heartbeats()


async def _collect(
    plane: ControlPlane,
    offsets: dict[str, float],
    metrics: dict[str, NodeMetrics],
    last_records: int,
    listen_s: float,
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    gaps: list[str] = []
    # the kill-state and membership stores are stores too: one that cannot be read is
    # named, not the whole snapshot lost with the audit tails and every other store
    try:
        states = await plane.states()
    except ControlPlaneUnavailable as exc:
        files["kill/entries.json"] = _json({"unavailable": str(exc)})
        gaps.append(f"kill/entries.json: the kill-state store could not be read ({exc})")
    else:
        files["kill/entries.json"] = _json(
            {slot: {"revision": rev, "entry": e} for slot, (e, rev) in sorted(states.items())}
        )
        files["kill/history.json"] = _json(await _kill_history(plane, states, gaps))
    members: list[NodeStatus] = []
    try:
        members = await plane.members()
    except ControlPlaneUnavailable as exc:
        for name in ("nodes/members.json", "kill/confirmations.json"):
            files[name] = _json({"unavailable": str(exc)})
        gaps.append(
            f"nodes/members.json: the membership store could not be read ({exc}); kill "
            "confirmations, and members that sent no evidence, cannot be named"
        )
    else:
        files["nodes/members.json"] = _json(sorted(members, key=lambda m: m.node_id))
        files["kill/confirmations.json"] = _json(
            {
                m.node_id: {
                    "last_command_id": m.last_command_id,
                    "confirmed_ns": m.last_confirmed_ns,
                }
                for m in members
            }
        )
    for bucket, name in (
        (Bucket.ADMISSION, "nodes/admission.json"),
        (Bucket.FLAGS, "flags/state_and_history.json"),
        (Bucket.ROLLOUTS, "flags/rollouts.json"),
        (Bucket.RELEASE, "release/target.json"),
        (Bucket.ROSTER, "release/roster.json"),
        (Bucket.RAMP, "incident/ramps.json"),
        (Bucket.INCIDENT, "incident/records.json"),
    ):
        try:
            files[name] = _json(_records(await plane.records(bucket)))
        except ControlPlaneUnavailable as exc:
            # one store that cannot be read: the rest is still evidence, this is named
            files[name] = _json({"unavailable": str(exc)})
            gaps.append(f"{name}: the {bucket.value} store could not be read ({exc})")
    tails: dict[str, deque[bytes]] = {}
    # The last `_AUDIT_CAP` messages, not the first: the tails are the records nearest
    # the kill. Before, a stream longer than the cap (a day of a busy fleet) was read
    # from its oldest message, and every tail and chain head was hours before the kill.
    seq = 1
    read = 0
    holes: list[tuple[int, int]] = []
    with contextlib.suppress(ControlPlaneUnavailable):  # then the read below names it
        seq = max(1, await _audit_end(plane) - _AUDIT_CAP + 1)
    if seq > 1:
        gaps.append(
            f"recorder/: the audit stream's first {seq - 1} message(s) were not read (its last "
            f"{_AUDIT_CAP} were): records and supervisor actions only there are not in this "
            "snapshot"
        )
    # messages that arrive while it is read are read too, up to another cap's worth
    while read < 2 * _AUDIT_CAP:
        try:
            page = await plane.audit(seq, _AUDIT_PAGE)
        except ControlPlaneUnavailable as exc:
            # the stores already read are still evidence (this failure lost them all)
            gaps.append(
                f"recorder/: the audit stream could not be read after {read} messages ({exc}); "
                "flight-recorder records from there on are not in this snapshot"
            )
            break
        if not page:
            break
        for stream_seq, env in page:
            if stream_seq > seq:
                # the stream no longer held these: its size limit discards the oldest
                # messages (while a long read goes on, too), or they were deleted. Skipped
                # without a word before: a tail read 8 then 10 and incomplete.json was empty
                holes.append((seq, stream_seq - 1))
            tails.setdefault(env.node_id, deque(maxlen=last_records)).extend(env.lines())
            seq = stream_seq + 1
        read += len(page)
    if holes:
        gaps.append(_holes_line(holes))
    if read >= 2 * _AUDIT_CAP:
        gaps.append(
            f"recorder/: stopped reading the audit stream after {read} messages; "
            "later records are not in this snapshot"
        )
    heads: dict[str, dict[str, object]] = {}
    for node, lines in sorted(tails.items()):
        files[f"recorder/{node}.jsonl"] = b"".join(line + b"\n" for line in lines)
        heads[node] = _head(lines)
    # the supervisor ships its actions to the same stream: they are its alerts, not a chain
    files["supervisor/actions.jsonl"] = files.pop("recorder/supervisor.jsonl", b"")
    heads.pop("supervisor", None)
    # a tail whose chain head cannot be read (a record cut off while it was being written,
    # a refused message) is stated, not left for a reader to find in heads.json
    for node, head in sorted(heads.items()):
        if "problem" in head:
            gaps.append(f"recorder/{node}.jsonl: no chain head: {head['problem']}")
    await asyncio.sleep(listen_s)
    # a member that sent nothing is stated, never silently left out of the evidence
    for m in sorted(members, key=lambda m: m.node_id):
        if m.left or m.node_id == "supervisor":
            continue
        if m.node_id not in tails:
            heads[m.node_id] = _head(deque())
            gaps.append(f"recorder/{m.node_id}.jsonl: no flight-recorder records from {m.node_id}")
        if m.node_id not in offsets:
            gaps.append(
                f"nodes/clock_offsets_ms.json: no heartbeat from {m.node_id} in {listen_s:g}s "
                "(unreachable, frozen or dead)"
            )
        if m.node_id not in metrics:
            gaps.append(f"nodes/metrics.json: no metrics from {m.node_id} in {listen_s:g}s")
    files["recorder/heads.json"] = _json(dict(sorted(heads.items())))
    files["nodes/clock_offsets_ms.json"] = _json(dict(sorted(offsets.items())))
    files["nodes/metrics.json"] = _json(dict(sorted(metrics.items())))
    files[INCOMPLETE] = _json(gaps)
    return files


async def _kill_history(
    plane: ControlPlane, states: Mapping[str, tuple[StateEntry | None, int]], gaps: list[str]
) -> dict[str, object]:
    """Every write the store keeps of each slot before its latest, oldest first (None: a
    delete marker or a value that is no entry). A halt stored over another hides it: the
    supervisor's halt of n1, then an operator's kill of n1, left only the operator's in
    the evidence, who first stopped n1 and why lost with it. Slots whose earlier writes
    cannot be read are named in `gaps` (once the store does not answer, the slots after
    are not asked: each would wait out its own timeout)."""
    out: dict[str, object] = {}
    slots = sorted(states.items())
    for i, (slot, (_, revision)) in enumerate(slots):
        try:
            scope, key = parse_slot(slot)
        except ValueError as exc:
            out[slot] = {"unavailable": str(exc)}
            gaps.append(f"kill/history.json: the earlier writes of {slot} were not read ({exc})")
            continue
        try:
            kept = await plane.state_history(scope, key, revision)
        except ControlPlaneUnavailable as exc:
            rest = [s for s, _ in slots[i:]]
            for unread in rest:
                out[unread] = {"unavailable": str(exc)}
            more = f" and {len(rest) - 1} more slot(s)" if len(rest) > 1 else ""
            gaps.append(
                f"kill/history.json: the earlier writes of {slot}{more} could not be read ({exc})"
            )
            break
        out[slot] = [{"revision": rev, "entry": e} for e, rev in kept]
    return out


def _holes_line(holes: list[tuple[int, int]]) -> str:
    """One line naming the audit messages the stream no longer held when they were read."""
    missing = sum(last - first + 1 for first, last in holes)
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in holes[:5])
    more = f" and {len(holes) - 5} more range(s)" if len(holes) > 5 else ""
    return (
        f"recorder/: {missing} audit message(s) were no longer in the stream when read "
        f"(seq {shown}{more}): discarded by its size limit or deleted; records and "
        "supervisor actions only there are not in this snapshot"
    )


async def _audit_end(plane: ControlPlane) -> int:
    """The audit stream's last sequence number (0: empty), by reading pages of one
    message: one exists from `seq` on exactly while `seq` is at most the last."""
    low, high = 0, 1
    while page := await plane.audit(high, 1):
        low, high = page[0][0], 2 * page[0][0] + 1
    while high - low > 1:  # a message at `low` or after it, none from `high` on
        mid = (low + high) // 2
        page = await plane.audit(mid, 1)
        if page:
            low = page[0][0]
        else:
            high = mid
    return low


def _head(lines: deque[bytes]) -> dict[str, object]:
    """The chain head a node's tail ends on, or why none can be read from it."""
    if not lines:
        return {"seq": None, "hash": None, "problem": "no records"}
    try:
        last = msgspec.json.decode(lines[-1])
    except UNDECODABLE:
        return {"seq": None, "hash": None, "problem": "last record undecodable"}
    if not isinstance(last, dict):
        return {"seq": None, "hash": None, "problem": "last record is not an object"}
    if last.get("event") == "audit_refused":
        return {"seq": None, "hash": None, "problem": f"last message refused: {last.get('reason')}"}
    return {"seq": last.get("seq"), "hash": last.get("hash")}


def seal(
    files: Mapping[str, bytes], key: SigningKey, *, actor: str, reason: str, taken_ns: int
) -> bytes:
    """One tar archive: the files, the manifest of their hashes, its DSSE signature, the key."""
    for name in files:
        if name in (MANIFEST, SIGNATURE, SIGNER) or name.startswith("/") or ".." in name:
            raise SnapshotError(f"snapshot member {name!r}: reserved or not a relative path")
    manifest = SnapshotManifest(
        actor,
        reason,
        taken_ns,
        {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    )
    manifest_bytes = _json(manifest)
    envelope = add_signature(new_envelope(PAYLOAD_TYPE, manifest_bytes), key)
    members = {
        **files,
        MANIFEST: manifest_bytes,
        SIGNATURE: encode_envelope(envelope),
        SIGNER: key.public.to_base64().encode() + b"\n",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = taken_ns // 1_000_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _is_tail(name: str) -> bool:
    """A flight-recorder tail (a node's, or the supervisor's actions): what grows with `--last`."""
    return name == "supervisor/actions.jsonl" or (
        name.startswith("recorder/") and name.endswith(".jsonl")
    )


def _cut(
    files: Mapping[str, bytes],
    tails: Mapping[str, list[bytes]],
    keep: int,
    max_bytes: int,
    *,
    widest: bool = False,
) -> dict[str, bytes]:
    """`files` with each tail longer than `keep` records cut to its newest `keep`, each cut
    named in `incomplete.json` (`widest`: each line as long as it can be, the count kept
    written as the tail's whole count, to size the archive by)."""
    out = dict(files)
    gaps = list(msgspec.json.decode(files[INCOMPLETE], type=list[str]))
    for name, lines in tails.items():
        if len(lines) > keep:
            kept = lines[len(lines) - keep :]
            out[name] = b"".join(line + b"\n" for line in kept)
            count = len(lines) if widest else len(kept)
            gaps.append(
                f"{name}: kept its last {count} of {len(lines)} records (the snapshot is "
                f"bounded at {max_bytes} bytes, what `incident verify` reads); the older ones "
                "are in the audit stream only"
            )
    out[INCOMPLETE] = _json(gaps)
    return out


def _bounded_seal(
    files: Mapping[str, bytes], key: SigningKey, *, actor: str, reason: str, taken_ns: int
) -> bytes:
    """The sealed archive, at most `SNAPSHOT_MAX_BYTES`: over it, each tail keeps its newest
    records that fit (the same count for every tail), every cut named in `incomplete.json`.
    `SnapshotError` (one line) if the rest does not fit even with no tail at all."""
    max_bytes = SNAPSHOT_MAX_BYTES
    data = seal(files, key, actor=actor, reason=reason, taken_ns=taken_ns)
    if len(data) <= max_bytes:
        return data
    tails = {n: files[n].split(b"\n")[:-1] for n in sorted(files) if _is_tail(n)}
    # the archive with no tail records at all, its incomplete.json naming every cut (the
    # longest each line can be): what the tails' records must fit beside
    bare = seal(
        _cut(files, tails, 0, max_bytes, widest=True),
        key,
        actor=actor,
        reason=reason,
        taken_ns=taken_ns,
    )
    if len(bare) > max_bytes:
        biggest = max((n for n in files if n not in tails), key=lambda n: len(files[n]))
        raise SnapshotError(
            f"snapshot: the evidence is {len(bare)} bytes without any flight-recorder record, "
            f"over the {max_bytes} byte bound `incident verify` reads (biggest: {biggest}, "
            f"{len(files[biggest])} bytes); not taken"
        )
    # each tail's data rounds up to a tar block; the archive to a tar record
    budget = max_bytes - len(bare) - len(tails) * (_TAR_BLOCK - 1) - tarfile.RECORDSIZE

    def size(keep: int) -> int:  # the tails' bytes when each keeps its newest `keep` records
        return sum(len(line) + 1 for lines in tails.values() for line in lines[len(lines) - keep :])

    low, high = 0, max(len(lines) for lines in tails.values())  # size(high) does not fit
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) <= budget else (low, mid)
    data = seal(
        _cut(files, tails, low, max_bytes), key, actor=actor, reason=reason, taken_ns=taken_ns
    )
    if len(data) > max_bytes:  # the budget above is a bound: never met
        raise SnapshotError(
            f"snapshot: the archive is {len(data)} bytes, over the {max_bytes} byte bound "
            "`incident verify` reads; not taken"
        )
    return data


async def take_snapshot(
    plane: ControlPlane,
    clock: Clock,
    key: SigningKey,
    *,
    actor: str,
    reason: str,
    last_records: int = 200,
    listen_s: float = 1.0,
) -> bytes:
    """The evidence, sealed in an archive of at most `SNAPSHOT_MAX_BYTES` (`_bounded_seal`)."""
    files = await collect(plane, clock, last_records=last_records, listen_s=listen_s)
    return _bounded_seal(files, key, actor=actor, reason=reason, taken_ns=clock.time_ns())


def verify_snapshot(
    data: bytes, *, source: str, trusted: Mapping[str, VerifyKey] | None = None
) -> SnapshotCheck:
    """Check the signature over the manifest and every member's hash.

    Without `trusted`, the embedded signer key is used and reported (compare
    its id with the operator's); with it, the signer must be one of them.
    """
    problems: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members: dict[str, bytes] = {}
            order: list[str] = []
            for info in tar.getmembers():
                order.append(info.name)
                if info.issparse():
                    # `seal` never writes one, and its size is declared, not stored: a few
                    # bytes of header can declare gigabytes of zeros that reading would
                    # allocate (the verify of a 10 KB archive died asking for 5 GB)
                    problems.append(
                        f"{source}: member {info.name!r} is a sparse file "
                        f"(declares {info.size} bytes; not read)"
                    )
                    continue
                if not info.isfile():
                    problems.append(f"{source}: member {info.name!r} is not a regular file")
                    continue
                if info.name in members:
                    # only one copy can be the one hashed; a reader may be shown the other
                    problems.append(f"{info.name}: in the archive more than once")
                handle = tar.extractfile(info)
                members[info.name] = handle.read() if handle is not None else b""
            end = tar.offset  # where the end-of-archive zero blocks start
    except (tarfile.TarError, EOFError) as exc:
        raise SnapshotError(f"{source}: not a snapshot archive ({exc})") from None
    # tar stops reading at its end-of-archive marker; anything after it (bytes that
    # are not the zero padding) would ride along unverified under an OK, so it is refused.
    appended = len(data[end:].lstrip(b"\0"))
    if appended:
        problems.append(
            f"{source}: {appended} byte(s) of data after the archive's end-of-archive marker "
            "(appended to the archive, never covered by the manifest)"
        )
    for needed in (MANIFEST, SIGNATURE, SIGNER):
        if needed not in members:
            raise SnapshotError(f"{source}: member {needed} missing")
    try:
        signer = VerifyKey.from_base64(members[SIGNER].decode().strip(), field=SIGNER)
        envelope = decode_envelope(members[SIGNATURE], source=f"{source}:{SIGNATURE}")
        payload = envelope.payload_bytes()
        manifest = msgspec.json.decode(payload, type=SnapshotManifest)
    except (ReleaseInputError, UnicodeDecodeError, *UNDECODABLE) as exc:
        raise SnapshotError(f"{source}: {exc}") from None
    keys = dict(trusted) if trusted is not None else {signer.key_id: signer}
    if trusted is not None and signer.key_id not in trusted:
        problems.append(f"{SIGNER}: signer {signer.key_id[:16]} is not a trusted key")
    if envelope.payload_type != PAYLOAD_TYPE:
        problems.append(f"{SIGNATURE}: payloadType {envelope.payload_type!r} is not a snapshot")
    check = check_signatures(envelope, keys)
    if not check.valid:
        problems.append(f"{SIGNATURE}: no valid signature by {', '.join(k[:16] for k in keys)}")
    if payload != members[MANIFEST]:
        problems.append(f"{MANIFEST}: differs from the signed manifest")
    for name, digest in sorted(manifest.files.items()):
        body = members.get(name)
        if body is None:
            problems.append(f"{name}: listed in the manifest, missing from the archive")
        elif hashlib.sha256(body).hexdigest() != digest:
            problems.append(f"{name}: sha256 does not match the manifest")
    for name in sorted(set(members) - set(manifest.files) - {MANIFEST, SIGNATURE, SIGNER}):
        problems.append(f"{name}: in the archive, not in the manifest")
    # `seal` writes the members in name order: the sealed ones in any other order are a
    # rewritten archive (an added member is named above, wherever it is)
    sealed = [n for n in dict.fromkeys(order) if n in manifest.files or n in _SEALED]
    moved = next((a for a, b in zip(sealed, sorted(sealed), strict=True) if a != b), None)
    if moved is not None:
        problems.append(
            f"{moved}: out of the order the snapshot was sealed in (the archive was rewritten)"
        )
    gaps: tuple[str, ...] = ()
    if INCOMPLETE in members:
        try:
            gaps = msgspec.json.decode(members[INCOMPLETE], type=tuple[str, ...])
        except UNDECODABLE:
            problems.append(f"{INCOMPLETE}: not a list of lines")
    return SnapshotCheck(
        not problems,
        signer.key_id,
        manifest.actor,
        manifest.taken_ns,
        len(manifest.files),
        tuple(problems),
        gaps,
    )
