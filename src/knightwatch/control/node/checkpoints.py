"""The node signs its flight recorder's head: at an interval, and when it closes.

Each checkpoint (`knightwatch.release.checkpoint`) is made only after the
recorder has synced, so the node never vouches for a record that is not on
disk. It is appended to the file next to the recorder (`<file>.checkpoints`,
fsynced) and shipped to the control plane (`Bucket.CHECKPOINTS`, the node's
latest), where a rewrite of the node's disk cannot reach it. `knightwatch
audit verify` holds the file against them.

The recorder has one writer at a time: the Guard's caller. A process that calls its
Guard from several threads (a gateway's `LockedGuard`, FIX engine threads) hands its lock
in (`lock`), and each checkpoint seals under it, then waits for the disk outside it:
before, a seal cut from the event loop while an engine thread wrote a record did not match
its batch, and `audit verify` reported the node's lines as altered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import msgspec

from knightwatch.audit.recorder import FlightRecorder
from knightwatch.clock import Clock
from knightwatch.control.plane.protocol import Bucket, ControlPlane, ControlPlaneUnavailable
from knightwatch.release.checkpoint import (
    SIDECAR_SUFFIX,
    Checkpoint,
    Signer,
    encode_line,
    sign_checkpoint,
)
from knightwatch.release.dsse import Envelope

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_S = 5.0


def sidecar_path(recorder_path: Path) -> Path:
    return recorder_path.with_name(recorder_path.name + SIDECAR_SUFFIX)


class Checkpointer:
    """Signs `recorder`'s head with `signer`; keeps the signed envelopes and ships the latest."""

    def __init__(
        self,
        recorder: FlightRecorder,
        recorder_path: Path,
        node_id: str,
        signer: Signer,
        clock: Clock,
        plane: ControlPlane | None = None,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.recorder = recorder
        self.lock: AbstractContextManager[Any] = lock or contextlib.nullcontext()
        """Held while sealing: the Guard's, when threads other than this one's
        write the recorder through it (`LockedGuard.lock`)."""
        self.file = recorder_path.name
        self.sidecar = sidecar_path(recorder_path)
        self.node_id = node_id
        self.signer = signer
        self.clock = clock
        self.plane = plane
        self.latest: Envelope | None = None
        self._shipped: Envelope | None = None
        """The latest checkpoint the control plane took (`ship`)."""
        self._signed_seq = -1
        self._keeping = threading.Lock()

    def sign_now(self, *, final: bool = False) -> Envelope | None:
        """Sync the recorder, then sign and keep its head; None if there is nothing new
        or the recorder cannot sync (a node never vouches for what is not on disk)."""
        return self._keep(*self._seal(), final=final)

    def _seal(self) -> tuple[bool, int, str]:
        """Seal the recorder and read its head, under `lock` (another thread's record would
        cut in): by the recorder's writer, so on the event loop of a node driven from it."""
        with self.lock:
            sealed = self.recorder.flush()
            return sealed, self.recorder.seq - 1, self.recorder.head

    def _keep(self, sealed: bool, seq: int, head: str, *, final: bool) -> Envelope | None:
        """Wait for the disk, then sign and keep the head `_seal` read: outside `lock`, and
        safe on another thread (`run` waits there, so a slow disk never holds up the event
        loop's kills and lease, nor the threads writing through the Guard). One at a time
        (`_keeping`): the final checkpoint of `close` comes after one still on its thread
        when `run` was cancelled."""
        with self._keeping:
            return self._keep_now(sealed, seq, head, final=final)

    def _keep_now(self, sealed: bool, seq: int, head: str, *, final: bool) -> Envelope | None:
        if not (sealed and self.recorder.sync_written()):
            log.error("CHECKPOINT_SKIPPED node=%s: the flight recorder cannot sync", self.node_id)
            return None
        if seq < 0 or (seq == self._signed_seq and not final):
            return None
        checkpoint = Checkpoint(
            node=self.node_id,
            file=self.file,
            seq=seq,
            head=head,
            at_ns=self.clock.time_ns(),
            final=final,
        )
        envelope = sign_checkpoint(checkpoint, self.signer)
        try:
            # never through a link planted at the path (it could point at another node's
            # file); a new file is the node's alone, as its flight recorder is. Never into
            # anything but a regular file either: a FIFO planted there blocked the open
            # (and with it the node's event loop: its lease, its kills) until something
            # read it, and then took the checkpoint; O_NONBLOCK makes that open fail or
            # return at once, and the check below refuses it
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.sidecar, flags | os.O_NONBLOCK, 0o600)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"{self.sidecar}: not a regular file")
                os.write(fd, encode_line(envelope))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("CHECKPOINT_NOT_KEPT node=%s %s: %s", self.node_id, self.sidecar, exc)
        self._signed_seq = seq
        self.latest = envelope
        return envelope

    async def ship(self) -> None:
        """Store the latest checkpoint in the control plane (retried by the next round)."""
        latest = self.latest
        if self.plane is None or latest is None:
            return
        with contextlib.suppress(ControlPlaneUnavailable):
            await self.plane.put_record(
                Bucket.CHECKPOINTS, self.node_id, msgspec.json.encode(latest)
            )
            self._shipped = latest

    async def run(self, interval_s: float = DEFAULT_CHECKPOINT_S) -> None:
        """Sign and ship every `interval_s` until cancelled; a checkpoint the control plane
        did not take is shipped again at the next round, whether or not anything new was
        signed (before, an idle node kept it to itself after an outage)."""
        while True:
            sealed, seq, head = self._seal()
            signed = await asyncio.to_thread(self._keep, sealed, seq, head, final=False)
            if signed is not None or self.latest is not self._shipped:
                await self.ship()
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        """The final checkpoint: the node writes nothing more to this file in this run."""
        if self.sign_now(final=True) is not None:
            await self.ship()
