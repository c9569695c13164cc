"""The node's side of admission: measure what runs here, sign it, get a verdict.

The measurement is recomputed from the node's own bytes at every attestation
(artifact files, config, and the flag table compiled into this process), never
from a version string, so a server that missed a deploy, or whose files were
changed after admission, attests exactly that and is refused or fenced.

The challenge request is signed with the same enrolled key as the attestation,
over the node's name, a fresh random id and its issue time, so nobody else can
ask (and withdraw challenges) in this node's name; a refused request is a
verdict naming the service's reason, logged by the node like any refusal.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

from knightwatch.clock import Clock
from knightwatch.control.plane.protocol import ControlPlane
from knightwatch.control.plane.wire import (
    CHALLENGE_REPLY_DECODER,
    SUBJECT_ATTEST,
    SUBJECT_CHALLENGE,
    VERDICT_DECODER,
    Verdict,
    challenge_request,
)
from knightwatch.inputs import UNDECODABLE
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.contents import (
    ReleaseContents,
    contents_from_directory,
    hash_config,
    list_directory,
)
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.environment import EnvironmentMeasure
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagschema import FlagSchema
from knightwatch.release.keys import SigningKey
from knightwatch.release.reasons import AdmissionReason, Finding

Measure = Callable[[], ReleaseContents]


def directory_measure(
    artifacts: Path,
    config: Path,
    flag_table: FlagSchema,
    environment: Callable[[], dict[str, str]] | None = None,
) -> Measure:
    """Hash the artifact directory and config anew on every call; the flag table is fixed.
    `environment` (an `EnvironmentMeasure`): the process's Python environment is measured
    too, a file hashed again only once it changed.

    Whatever stops the measurement is a `ReleaseInputError`, which the node logs as
    RELEASE_UNMEASURABLE and treats as a refusal before attesting again: any other
    exception (an OSError from a deploy swapping files underneath) ended its attesting.
    """

    def measure() -> ReleaseContents:
        try:
            return contents_from_directory(artifacts, config, flag_table, environment=environment)
        except OSError as exc:
            raise ReleaseInputError(
                f"artifacts directory {artifacts}: cannot be measured: {exc}"
            ) from None

    return measure


def checked_measure(
    artifacts: Path, config: Path, flag_table: FlagSchema, *, environment: bool = False
) -> Measure:
    """`directory_measure`, its inputs checked now: a process that cannot measure what it
    runs stops at start, before it connects, with the file named (ReleaseInputError).
    `environment`: this interpreter's environment is measured too, the first time now."""
    hash_config(config)
    list_directory(artifacts)
    env = None
    if environment:
        env = EnvironmentMeasure()
        env()
    return directory_measure(artifacts, config, flag_table, env)


class Attestor:
    def __init__(self, node_id: str, key: SigningKey, measure: Measure, *, clock: Clock) -> None:
        self.node_id = node_id
        self.key = key
        self.measure = measure
        self.clock = clock

    async def attest(self, plane: ControlPlane, timeout_s: float) -> Verdict:
        """Measure (off the loop), challenge, sign, submit; ControlPlaneUnavailable if no
        answer. A refused challenge request is a refused verdict naming the service's reason.

        The measurement is taken before the challenge is asked (it does not depend on the
        nonce): measured after it, a tree whose hashing outlasted a challenge's life (30 s,
        a large install on a slow or loaded disk) answered an expired challenge at every
        attestation and was refused `challenge_unknown` for ever. What is signed is as
        fresh either way: the disk as it was while it was read, just before signing."""
        contents = await asyncio.to_thread(self.measure)
        now = self.clock.time_ns()
        request = challenge_request(
            self.node_id, self.key, request_id=secrets.token_hex(16), now_ns=now
        )
        reply = await plane.request(SUBJECT_CHALLENGE, encode_envelope(request), timeout_s)
        try:
            answer = CHALLENGE_REPLY_DECODER.decode(reply)
        except UNDECODABLE as exc:
            why = (
                f"challenge_reply_unreadable: the reply ({len(reply)} bytes) is not a challenge "
                f"reply (a service older than signed requests?): {exc}"
            )
            return self._refused(why, now)
        if answer.reason or not answer.nonce:
            why = (
                f"the challenge request was refused: {answer.reason or 'no nonce'}: {answer.detail}"
            )
            return self._refused(why, now)
        nonce = answer.nonce
        envelope = sign_attestation(
            attest(self.node_id, nonce, contents, clock=self.clock), self.key
        )
        reply = await plane.request(SUBJECT_ATTEST, encode_envelope(envelope), timeout_s)
        try:
            return VERDICT_DECODER.decode(reply)
        except UNDECODABLE as exc:
            why = f"the reply to the attestation ({len(reply)} bytes) is not a verdict: {exc}"
            return self._refused(why, self.clock.time_ns(), "verdict_unreadable")

    def _refused(self, why: str, now: int, subject: str = "challenge") -> Verdict:
        """No verdict from the service: one the node logs and acts on as a refusal (one
        line, unattributable), never a traceback that stops its attesting."""
        detail = f"admission service: {' '.join(why.split())}"
        finding = Finding(AdmissionReason.CHALLENGE_UNKNOWN, subject, detail[:400])
        return Verdict(self.node_id, False, "refused", "", "", (finding,), now)
