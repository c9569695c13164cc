"""Two people to resume: pending requests in the control plane, approved by someone else.

`knightwatch resume` runs the preflight and, if it passes, stores a request:
the resume entry signed by its requester, bound to the halt it lifts and the
store revision it was decided on, with an expiry and the preflight's verdict.
`knightwatch approve ID`, run by a different person with the approver role,
adds their signature, runs the preflight again and applies the resume through
a ramp (`incident.ramp.RampController.apply`) and the kill switch, which
re-check everything; the nodes check the signatures again
before they resume (the rule holds where the state is applied, so writing the
kill state directly gains nothing). A request whose halt changed meanwhile is
stale, one past its expiry is expired; neither can be applied.

An approval is bound to what the approver was shown, not to whatever the
approvals bucket holds under the id when they click: operators can write that
bucket, so a requester could replace request X (a resume of A) with a resume of
B signed by themselves under the same id. A record must carry its own id (its
entry's command id, shortened) under the key it is stored at, and an approver
names the request pinned to the digest of the command they co-sign
(`pinned`); every read of a pinned request refuses a record that differs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import msgspec

from knightwatch.control.fleet.killswitch import CommandResult, KillSwitch, KillSwitchError
from knightwatch.control.plane.protocol import ABSENT, Bucket, ControlPlane, RevisionConflict
from knightwatch.control.plane.wire import StateEntry, StateKeyError
from knightwatch.inputs import UNDECODABLE
from knightwatch.state import Scope
from knightwatch.trust.command import Refused, check_state
from knightwatch.trust.roster import Role


class RequestMoved(KillSwitchError):
    """The halt a resume request was asked for is no longer the one stored (`create`)."""

    def __init__(self, shown: int, now: int) -> None:
        super().__init__(f"the halt is at revision {now}, not {shown} as shown")
        self.shown = shown
        self.now = now


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    STALE = "stale"
    EXPIRED = "expired"


class Request(msgspec.Struct, frozen=True):
    """One resume waiting for (or past) its second person."""

    id: str
    entry: StateEntry
    status: RequestStatus = RequestStatus.PENDING
    approvers: tuple[str, ...] = ()
    detail: str = ""
    preflight: str = ""
    """The preflight's verdict when the request was made (what the requester saw)."""

    @property
    def requester(self) -> str:
        return self.entry.actor


def judge(request: Request, stored: StateEntry | None, revision: int, now_ns: int) -> Request:
    """A pending request as it stands against the slot's stored entry and revision: expired
    past its expiry, applied if its resume is the stored entry (its ramp closes the record
    when it ends), stale if the slot moved from the revision it was decided on."""
    if request.status is not RequestStatus.PENDING:
        return request
    if stored is not None and stored.command_id == request.entry.command_id:
        return msgspec.structs.replace(
            request, status=RequestStatus.APPLIED, detail="approved; ramping back"
        )
    if now_ns > request.entry.expires_ns:
        return msgspec.structs.replace(
            request, status=RequestStatus.EXPIRED, detail="not approved in time"
        )
    if revision != request.entry.decided_on:
        return msgspec.structs.replace(
            request,
            status=RequestStatus.STALE,
            detail=f"decided on revision {request.entry.decided_on}, the slot is now at "
            f"{revision}: the state it was decided on changed",
        )
    return request


_DECODER = msgspec.json.Decoder(Request)
_ENCODER = msgspec.json.Encoder()
T = TypeVar("T")
PIN = "@"
"""Separates a request id from the digest it is pinned to (`pinned`)."""


def digest(entry: StateEntry) -> str:
    """What an approver co-signs, in 32 hex digits: the resume's signed command (scope,
    key, state, reason, requester, command id, times, ramp); any change changes it."""
    return hashlib.sha256(_ENCODER.encode(entry.command())).hexdigest()[:32]


def pinned(request_id: str, entry_digest: str) -> str:
    """Request `request_id` as the approver saw it: refused if its record now carries a
    resume whose `digest` differs."""
    return f"{request_id}{PIN}{entry_digest}"


async def read_request(plane: ControlPlane, request_id: str) -> tuple[Request, int]:
    """The request stored under `request_id` (optionally `pinned`) and its record revision;
    KillSwitchError if there is none, if the record is not the request of that id, or if it
    no longer carries the pinned resume."""
    request_id, _, pin = request_id.partition(PIN)
    value, revision = await plane.get_record(Bucket.APPROVALS, request_id)
    if value is None:
        raise KillSwitchError(f"request {request_id!r}: no such request")
    try:
        request = _DECODER.decode(value)
    except UNDECODABLE as exc:
        raise KillSwitchError(f"request {request_id}: undecodable record ({exc})") from None
    if request.id != request_id or request.entry.command_id[:12] != request_id:
        raise KillSwitchError(
            f"request {request_id}: the record stored under it is request {request.id} "
            f"carrying resume {request.entry.command_id[:12]}: it is not this request"
        )
    if pin and digest(request.entry) != pin:
        raise KillSwitchError(
            f"digest: request {request_id} no longer carries the resume that was shown "
            f"({request.entry.scope.value} {request.entry.key} by {request.requester} "
            "now): look again before approving"
        )
    return request, revision


class Requests:
    """Pending resumes on a plane, acted on with the kill switch's signer."""

    def __init__(self, killswitch: KillSwitch) -> None:
        self.killswitch = killswitch
        self.plane = killswitch.plane

    async def create(
        self,
        scope: Scope,
        key: str,
        reason: str,
        preflight: str = "",
        ramp: tuple[tuple[float, float], ...] = (),
        shown: int = 0,
    ) -> Request:
        """A pending request for a resume that ramps through `ramp` (signed with it).

        `shown`: the revision of the halt its requester was shown (0: whatever is stored).
        The request is written only if it was decided on that revision (`RequestMoved`
        else): its resume names the revision it was decided on (`decided_on`, signed and
        co-signed) and is stored only over it, so the check and the write are one. Checked
        apart from it, a kill stored in between (another person's "runaway again") passed:
        the request stood, decided on that kill, and its approver lifted a halt its
        requester never saw."""
        entry = await self.killswitch.request_resume(scope, key, reason, ramp=ramp)
        if shown and entry.decided_on != shown:
            raise RequestMoved(shown, entry.decided_on)
        request = Request(entry.command_id[:12], entry, preflight=preflight)
        await self.plane.put_record(
            Bucket.APPROVALS, request.id, _ENCODER.encode(request), expected_revision=ABSENT
        )
        return request

    async def get(self, request_id: str) -> tuple[Request, int]:
        return await read_request(self.plane, request_id)

    async def list(self) -> list[Request]:
        """Every request, pending ones with their current status (expired, stale) as of now."""
        out: list[Request] = []
        for _, (value, _) in sorted((await self.plane.records(Bucket.APPROVALS)).items()):
            try:
                request = _DECODER.decode(value)
            except UNDECODABLE:
                continue
            out.append(await self._judged(request))
        return sorted(out, key=lambda r: r.entry.issued_ns)

    async def _judged(self, request: Request) -> Request:
        if request.status is not RequestStatus.PENDING:
            return request
        try:
            stored, revision = await self.plane.get_state(request.entry.scope, request.entry.key)
        except StateKeyError as exc:
            # a record written by hand (operators can write the bucket) whose resume names
            # no slot: nothing can apply it, and it must not hide the other requests
            return msgspec.structs.replace(
                request,
                status=RequestStatus.STALE,
                detail=f"its resume names no slot that can be stored ({exc})",
            )
        return judge(request, stored, revision, self.killswitch.clock.time_ns())

    async def _close(self, request: Request, revision: int) -> None:
        with contextlib.suppress(RevisionConflict):  # closed by somebody else: theirs stands
            await self.plane.put_record(
                Bucket.APPROVALS, request.id, _ENCODER.encode(request), expected_revision=revision
            )

    async def approve(self, request_id: str, timeout_s: float = 2.0) -> CommandResult:
        """Add this signer's approval and apply the resume; KillSwitchError says why not."""

        async def apply(entry: StateEntry) -> CommandResult:
            return await self.killswitch.apply_resume(entry, timeout_s=timeout_s)

        return await self.approve_with(request_id, apply)

    async def eligible(self, request_id: str) -> tuple[Request, int]:
        """The pending request and its record revision, if this signer may approve it (a
        different person with the approver role); KillSwitchError says why not. Checked
        before anything else runs for the approval (a preflight, a ramp). `request_id` may
        be `pinned`: then only the resume of that digest is eligible."""
        signer = self.killswitch.signer
        roster = self.killswitch.trust.roster
        request, revision = await self.get(request_id)
        request_id = request.id
        if request.status is not RequestStatus.PENDING:
            raise KillSwitchError(f"request {request_id}: already {request.status}")
        judged = await self._judged(request)
        if judged.status is not RequestStatus.PENDING:
            if judged.status is not RequestStatus.APPLIED:  # its ramp closes it as applied
                await self._close(judged, revision)
            raise KillSwitchError(f"request {request_id} is {judged.status}: {judged.detail}")
        if signer.name == request.requester:
            raise KillSwitchError(
                f"request {request_id}: {signer.name} requested it; the requester never counts "
                "as the second person (any key of theirs)"
            )
        if roster is None or not roster.has_role(signer.name, Role.APPROVER):
            raise KillSwitchError(
                f"request {request_id}: {signer.name} does not hold the approver role"
            )
        return request, revision

    async def approve_with(self, request_id: str, apply: Callable[[StateEntry], Awaitable[T]]) -> T:
        """Add this signer's approval and hand the co-signed resume to `apply` (a ramp);
        the request is closed as applied, or stale if `apply` finds it so. What is co-signed
        is the entry of the record `eligible` read (and checked against a pin) itself."""
        request, revision = await self.eligible(request_id)
        request_id = request.id
        roster = self.killswitch.trust.roster
        signer = self.killswitch.signer
        try:
            check_state(
                request.entry.command(),
                request.entry.proof,
                roster,
                now_ns=self.killswitch.clock.time_ns(),
                live=False,
            )
        except Refused as exc:
            if exc.reason.value != "approval_missing":
                raise KillSwitchError(f"request {request_id}: refused: {exc}") from None
        judged = await self._judged(request)
        if judged.status is not RequestStatus.PENDING:
            if judged.status is not RequestStatus.APPLIED:  # its ramp closes it as applied
                await self._close(judged, revision)
            raise KillSwitchError(f"request {request_id} is {judged.status}: {judged.detail}")
        entry = request.entry.cosigned(signer.key)
        try:
            result = await apply(entry)
        except KillSwitchError as exc:
            if "stale" in str(exc):
                stale = msgspec.structs.replace(
                    request, status=RequestStatus.STALE, detail=str(exc)
                )
                await self._close(stale, revision)
            raise
        approvers = tuple(sorted({*request.approvers, signer.name}))
        done = msgspec.structs.replace(
            request, entry=entry, status=RequestStatus.APPLIED, approvers=approvers
        )
        await self._close(done, revision)
        return result
