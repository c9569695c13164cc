"""Signed checkpoints of a flight recorder: the node vouches for its chain head.

A hash chain proves a file was not edited in the middle, but anyone who can
write the file can rewrite it from some record on, or append records, with
freshly computed hashes: the chain alone cannot tell. So each node signs its
chain head (seq and hash of its last record) with its enrolled Ed25519 key, at
a regular interval and when it closes, as a DSSE envelope of its own payload
type (a checkpoint can never be replayed as a release or an attestation). The
envelopes go to a file next to the recorder and to the control plane.

`check_checkpoints` then proves, without any anchor kept by the operator:

* every record up to a checkpoint is the one the node signed (a rewrite
  changes the record at the checkpoint's seq, or cuts the file before it);
* nothing follows the node's final checkpoint (it closed the file there: a
  record after it was appended by someone else);
* records after the newest checkpoint of a node still running are reported as
  not yet covered.

Signing goes through `Signer` (the node key today; a roster identity later).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Protocol

import msgspec

from knightwatch.audit.read import read_lines
from knightwatch.audit.verify import Problem, ProblemKind, VerifyReport
from knightwatch.errors import quoted
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, Signature, check_signatures, new_envelope, pae
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import VerifyKey

PAYLOAD_TYPE = "application/vnd.knightwatch.audit-checkpoint+json"
SIDECAR_SUFFIX = ".checkpoints"
"""Checkpoints of `n1.jsonl` are appended to `n1.jsonl.checkpoints`, one envelope a line."""


class Signer(Protocol):
    """What signs a checkpoint: `SigningKey` satisfies it."""

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class Checkpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The node's statement: in `file`, the record at `seq` has hash `head`."""

    node: str
    file: str
    """The recorder file's name (not its directory: files are copied for checking)."""
    seq: int
    head: str
    at_ns: int
    final: bool = False
    """The node closed the file here: any record after `seq` was not written by it."""


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder(Checkpoint)
_ENVELOPE = msgspec.json.Decoder(Envelope)


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> Envelope:
    envelope = new_envelope(PAYLOAD_TYPE, _ENCODER.encode(checkpoint))
    raw = signer.sign(pae(envelope.payload_type, envelope.payload_bytes()))
    sig = Signature(signer.key_id, base64.b64encode(raw).decode("ascii"))
    return msgspec.structs.replace(envelope, signatures=(sig,))


def encode_line(envelope: Envelope) -> bytes:
    """One envelope as one compact JSON line (the sidecar file's format)."""
    return msgspec.json.encode(envelope) + b"\n"


class Opened(msgspec.Struct, frozen=True):
    """One envelope as checked: the checkpoint if its signature verified, else why not."""

    checkpoint: Checkpoint | None
    problem: str = ""


def open_checkpoint(envelope: Envelope, key: VerifyKey) -> Opened:
    """The checkpoint inside `envelope` if `key` signed it; otherwise the reason."""
    if envelope.payload_type != PAYLOAD_TYPE:
        return Opened(None, f"payloadType {quoted(envelope.payload_type)} is not {PAYLOAD_TYPE}")
    try:
        check = check_signatures(envelope, {key.key_id: key})
        if key.key_id not in check.valid:
            return Opened(None, f"not signed by the node's key {key.key_id[:16]}")
        return Opened(_DECODER.decode(envelope.payload_bytes()))
    except (ReleaseInputError, *UNDECODABLE, binascii.Error) as exc:
        return Opened(None, f"unreadable checkpoint: {exc}")


def read_sidecar(path: str | os.PathLike[str]) -> list[Envelope | str]:
    """Envelopes from a checkpoints file; a line that is not one becomes its error text.

    Raises OSError when the file cannot be read (or is not a regular file).
    """
    if not stat.S_ISREG(os.stat(path).st_mode) and os.fspath(path) != os.devnull:
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    out: list[Envelope | str] = []
    with open(path, "rb") as f:
        for n, line in enumerate(read_lines(f), start=1):
            if not line.strip():
                continue
            try:
                out.append(_ENVELOPE.decode(line))
            except UNDECODABLE as exc:
                out.append(f"line {n}: not an envelope: {str(exc)[:120]}")
    return out


def wanted_seqs(envelopes: Iterable[Envelope | str]) -> set[int]:
    """The seqs whose hashes the chain check must note (read without trusting them)."""
    seqs: set[int] = set()
    for env in envelopes:
        if isinstance(env, Envelope):
            try:
                seqs.add(_DECODER.decode(env.payload_bytes()).seq)
            except (ReleaseInputError, *UNDECODABLE):
                continue
    return seqs


def check_checkpoints(
    report: VerifyReport,
    hashes: Mapping[int, str],
    envelopes: Iterable[Envelope | str],
    key: VerifyKey,
    file_name: str,
) -> tuple[list[Problem], Checkpoint | None]:
    """Hold the verified chain against the node's signed checkpoints.

    `hashes` maps seq -> the hash the file holds at that seq (the chain check's
    `noted`). Returns the problems and the newest valid checkpoint for this file.
    """
    problems: list[Problem] = []
    newest: Checkpoint | None = None
    last_line = report.lines
    for env in envelopes:
        if isinstance(env, str):
            problems.append(Problem(ProblemKind.CHECKPOINT_INVALID, last_line, None, env))
            continue
        opened = open_checkpoint(env, key)
        cp = opened.checkpoint
        if cp is None:
            problems.append(
                Problem(ProblemKind.CHECKPOINT_INVALID, last_line, None, opened.problem)
            )
            continue
        if cp.file != file_name:
            continue  # another file of this node
        if newest is None or (cp.seq, cp.at_ns) > (newest.seq, newest.at_ns):
            # seqs only grow within a file, whatever the wall clock did; the signed time
            # orders only checkpoints of one seq (a restart's first reopens what a final
            # one closed). Ranked by time first, a checkpoint signed before the node's
            # clock stepped back outranked its final one, and records appended after the
            # close passed as "not covered yet"
            newest = cp
        found = hashes.get(cp.seq)
        if found is None:
            problems.append(
                Problem(
                    ProblemKind.CHECKPOINT_MISSING,
                    last_line,
                    cp.seq,
                    f"node {cp.node} signed seq {cp.seq} (head {cp.head[:16]}...) but the file "
                    f"holds no record with that seq: records were cut or rewritten",
                )
            )
        elif found != cp.head:
            problems.append(
                Problem(
                    ProblemKind.CHECKPOINT_MISMATCH,
                    last_line,
                    cp.seq,
                    f"node {cp.node} signed head {cp.head[:16]}... for seq {cp.seq}; the file "
                    f"has {found[:16]}...: the records up to it were rewritten",
                )
            )
    if newest is not None and newest.final and report.last_seq > newest.seq:
        problems.append(
            Problem(
                ProblemKind.APPENDED,
                last_line,
                newest.seq + 1,
                f"node {newest.node} closed the file at seq {newest.seq} (signed final "
                f"checkpoint); records up to seq {report.last_seq} after it were appended "
                "by someone else",
            )
        )
    return problems, newest
