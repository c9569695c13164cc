"""Admission: the control plane's verdict on a node, and fencing when it drifts.

A node is admitted only when (1) its attestation is signed by its enrolled key
and answers a fresh challenge, (2) the target release is signed by enough
distinct trusted signers, is the fleet's target and agrees with the flag
registry, and (3) what the node computed from its own bytes equals the signed
manifest. Every refusal names the files and flags that differ.

A rollback is not special: it is a target release like any other, so a release
that still knows a retired or re-defined flag is refused before any node can
be admitted on it (the 2012 rollback that put Power Peg on all eight servers).

Drift: the control plane re-challenges admitted nodes; a node that was
admitted and now attests different contents (or the target moved away from
what it runs) is FENCED. Attestations that cannot be attributed or are not
fresh (bad signature, replayed or stale) are refused without changing the
node's state, because anyone can send them; liveness is the lease's job.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.flags.schema import RegistrySchema
from knightwatch.release.attestation import NodeRoster, open_attestation
from knightwatch.release.contents import PYTHON, ReleaseContents
from knightwatch.release.dsse import Envelope
from knightwatch.release.manifest import Manifest
from knightwatch.release.reasons import AdmissionReason, Finding
from knightwatch.release.signing import ReleaseVerification, TrustPolicy, verify_release


class NodeStatus(StrEnum):
    UNKNOWN = "unknown"
    ADMITTED = "admitted"
    REFUSED = "refused"
    FENCED = "fenced"


class ReleaseCheck(msgspec.Struct, frozen=True):
    """A target release judged on its own, before any node is compared with it."""

    verification: ReleaseVerification
    findings: tuple[Finding, ...]

    @property
    def manifest(self) -> Manifest | None:
        return self.verification.manifest if not self.findings else None


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    admitted: bool
    status: NodeStatus
    target_release: str
    manifest_digest: str
    findings: tuple[Finding, ...]
    at_ns: int

    @property
    def reasons(self) -> tuple[AdmissionReason, ...]:
        return tuple(dict.fromkeys(f.reason for f in self.findings))

    @property
    def detail(self) -> str:
        if self.admitted:
            return f"node {self.node} runs release {self.target_release} exactly"
        return "; ".join(str(f) for f in self.findings)


def registry_findings(manifest: Manifest, registry: RegistrySchema) -> tuple[Finding, ...]:
    findings: list[Finding] = []
    for flag_id, digest in sorted(manifest.contents.flag_schema.items()):
        known = registry.definitions.get(flag_id)
        if known is None:
            findings.append(
                Finding(
                    AdmissionReason.FLAG_UNKNOWN_TO_REGISTRY,
                    flag_id,
                    f"release {manifest.release_id} knows a flag the registry has never held",
                )
            )
        elif flag_id in registry.retired:
            findings.append(
                Finding(
                    AdmissionReason.FLAG_RETIRED_IN_REGISTRY,
                    flag_id,
                    f"release {manifest.release_id} still knows a retired flag",
                )
            )
        elif known != digest:
            findings.append(
                Finding(
                    AdmissionReason.FLAG_REDEFINED_IN_REGISTRY,
                    flag_id,
                    f"release {manifest.release_id} means {digest[:12]}, "
                    f"the registry means {known[:12]}",
                )
            )
    return tuple(findings)


def target_findings(manifest: Manifest, target_release: str) -> tuple[Finding, ...]:
    if manifest.release_id == target_release:
        return ()
    return (
        Finding(
            AdmissionReason.NOT_TARGET_RELEASE,
            manifest.release_id,
            f"the fleet's target release is {target_release}",
        ),
    )


def check_release(
    release: Envelope, trust: TrustPolicy, registry: RegistrySchema, *, target_release: str
) -> ReleaseCheck:
    verification = verify_release(release, trust)
    findings = list(verification.findings)
    manifest = verification.manifest
    if manifest is not None:
        findings.extend(target_findings(manifest, target_release))
        findings.extend(registry_findings(manifest, registry))
    return ReleaseCheck(verification, tuple(findings))


def _compare(
    expected: dict[str, str],
    actual: dict[str, str],
    *,
    differ: AdmissionReason,
    missing: AdmissionReason,
    extra: AdmissionReason,
    noun: str,
) -> list[Finding]:
    findings: list[Finding] = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if got is None:
            findings.append(Finding(missing, key, f"{noun} in the release is absent on the node"))
        elif want is None:
            findings.append(Finding(extra, key, f"{noun} on the node is not in the release"))
        else:
            findings.append(Finding(differ, key, f"node has {got[:12]}, release has {want[:12]}"))
    return findings


def diff_contents(expected: ReleaseContents, actual: ReleaseContents) -> tuple[Finding, ...]:
    """Every file (its bytes, and whether it is executable), the config and every flag where
    the node differs from the release."""
    findings = _compare(
        expected.artifacts,
        actual.artifacts,
        differ=AdmissionReason.FILE_MISMATCH,
        missing=AdmissionReason.FILE_MISSING,
        extra=AdmissionReason.FILE_UNEXPECTED,
        noun="file",
    )
    if expected.config_sha256 != actual.config_sha256:
        findings.append(
            Finding(
                AdmissionReason.CONFIG_MISMATCH,
                "config",
                f"node has {actual.config_sha256[:12]}, release has {expected.config_sha256[:12]}",
            )
        )
    findings += _executables(expected, actual)
    findings += _compare(
        expected.flag_schema,
        actual.flag_schema,
        differ=AdmissionReason.FLAG_SCHEMA_MISMATCH,
        missing=AdmissionReason.FLAG_MISSING,
        extra=AdmissionReason.FLAG_UNEXPECTED,
        noun="flag",
    )
    findings += _environment(expected, actual)
    return tuple(findings)


MAX_ENVIRONMENT_FINDINGS = 20
"""Environment entries named one by one, at most; the rest are counted in one more finding.
Another interpreter version differs in every standard-library entry (hundreds): a verdict
travels on the control plane and is read by a person."""


def _environment(expected: ReleaseContents, actual: ReleaseContents) -> list[Finding]:
    """Each entry of the Python environment where the node differs from a release that
    measured one; nothing for a release that did not."""
    if expected.environment is None:
        return []
    if actual.environment is None:
        return [
            Finding(
                AdmissionReason.ENVIRONMENT_UNMEASURED,
                "environment",
                f"the release names the Python environment ({len(expected.environment)} "
                "entries) and the node does not measure its own: start it with "
                "--measure-environment",
            )
        ]
    want, got = dict(expected.environment), dict(actual.environment)
    findings: list[Finding] = []
    ours, theirs = want.pop(PYTHON, None), got.pop(PYTHON, None)
    if ours != theirs:
        findings.append(
            Finding(
                AdmissionReason.ENVIRONMENT_MISMATCH,
                PYTHON,
                f"node runs {theirs or 'an unnamed interpreter'}, release has "
                f"{ours or 'none named'}",
            )
        )
    findings += _compare(
        want,
        got,
        differ=AdmissionReason.ENVIRONMENT_MISMATCH,
        missing=AdmissionReason.ENVIRONMENT_MISSING,
        extra=AdmissionReason.ENVIRONMENT_UNEXPECTED,
        noun="environment entry",
    )
    if len(findings) <= MAX_ENVIRONMENT_FINDINGS:
        return findings
    rest = len(findings) - MAX_ENVIRONMENT_FINDINGS
    return [
        *findings[:MAX_ENVIRONMENT_FINDINGS],
        Finding(
            AdmissionReason.ENVIRONMENT_MISMATCH,
            "environment",
            f"and {rest} more entries differ (another interpreter or a different install?)",
        ),
    ]


def _executables(expected: ReleaseContents, actual: ReleaseContents) -> list[Finding]:
    """Each file both hold that one may execute and the other may not; a file missing or
    unexpected is named once, by `_compare`. A release signed before the execute bit was
    measured compares none; a node that does not report it cannot match one that does."""
    if expected.executables is None:
        return []
    if actual.executables is None:
        return [
            Finding(
                AdmissionReason.FILE_MODE_MISMATCH,
                "executables",
                f"the node does not report which files are executable; the release names "
                f"{len(expected.executables)} (a node older than the release format?)",
            )
        ]
    want, got = set(expected.executables), set(actual.executables)
    both = expected.artifacts.keys() & actual.artifacts.keys()
    return [
        Finding(
            AdmissionReason.FILE_MODE_MISMATCH,
            path,
            "executable in the release, not on the node"
            if path in want
            else "executable on the node, not in the release",
        )
        for path in sorted((want ^ got) & both)
    ]


def random_nonce() -> str:
    return secrets.token_hex(16)


class Admitter:
    """Issues challenges, judges attestations and keeps each node's admission state.

    In-process and clock-injected: the control plane calls it on live nodes,
    the replay calls it with a SimClock and attestations computed from memory.
    """

    def __init__(
        self,
        trust: TrustPolicy,
        roster: NodeRoster,
        *,
        clock: Clock,
        max_age_ns: int = 30 * NS_PER_S,
        nonce_source: Callable[[], str] = random_nonce,
    ) -> None:
        if max_age_ns <= 0:
            raise ValueError(f"max_age_ns: must be > 0, got {max_age_ns}")
        self._trust = trust
        self._roster = roster
        self._clock = clock
        self._max_age_ns = max_age_ns
        self._nonce_source = nonce_source
        # oldest first, so expiry looks only at the front (`_prune`)
        self._outstanding: OrderedDict[str, tuple[str, int]] = OrderedDict()  # -> node, at
        self._used: OrderedDict[str, int] = OrderedDict()  # nonce -> used_ns
        self._status: dict[str, NodeStatus] = {}
        self.examined = 0
        """Entries looked at by expiry so far: the work it costs (at most one more per
        request than it forgets, whatever number are pending)."""

    def status(self, node: str) -> NodeStatus:
        return self._status.get(node, NodeStatus.UNKNOWN)

    def challenge(self, node: str) -> str:
        """A single-use nonce the node must put in its next attestation."""
        self._prune()
        nonce = self._nonce_source()
        if nonce in self._outstanding or nonce in self._used:
            raise ValueError("nonce source repeated a nonce; it must never do that")
        self._outstanding[nonce] = (node, self._clock.time_ns())
        return nonce

    def withdraw(self, nonce: str) -> None:
        """Forget an unanswered challenge: an attestation carrying it is then refused as
        `challenge_unknown` (the admission service makes way for a newer one)."""
        self._outstanding.pop(nonce, None)

    def admit(
        self,
        attestation: Envelope,
        release: Envelope,
        registry: RegistrySchema,
        *,
        target_release: str,
        roster: NodeRoster | None = None,
    ) -> Admission:
        """`roster`: the key each node may attest with this time, in place of the enrolled
        roster (the admission service passes the key that asked for the challenge)."""
        now = self._clock.time_ns()
        keys = self._roster if roster is None else roster
        opened, problems = open_attestation(attestation, keys)
        if opened is None:
            known = problems[0].reason is not AdmissionReason.ATTESTATION_MALFORMED
            node = problems[0].subject if known else ""
            return self._verdict(node, target_release, "", problems, now, record=False)
        freshness = self._freshness(opened.node, opened.nonce, opened.at_ns, now)
        if freshness:
            return self._verdict(opened.node, target_release, "", freshness, now, record=False)
        checked = check_release(release, self._trust, registry, target_release=target_release)
        findings = list(checked.findings)
        manifest = checked.verification.manifest  # authentic, so worth diffing even if refused
        if manifest is not None:
            findings.extend(diff_contents(manifest.contents, opened.contents))
        digest = checked.verification.manifest_digest
        return self._verdict(opened.node, target_release, digest, tuple(findings), now, record=True)

    def _freshness(self, node: str, nonce: str, at_ns: int, now: int) -> tuple[Finding, ...]:
        self._prune()
        if nonce in self._used:
            return (
                Finding(
                    AdmissionReason.ATTESTATION_REPLAYED,
                    node,
                    f"nonce {nonce} was already used",
                ),
            )
        issued = self._outstanding.get(nonce)
        if issued is None or issued[0] != node or not self._live(issued[1], now):
            return (
                Finding(
                    AdmissionReason.CHALLENGE_UNKNOWN,
                    node,
                    f"nonce {nonce} was not issued to {node} or its challenge expired",
                ),
            )
        del self._outstanding[nonce]
        self._used[nonce] = now
        age = now - at_ns
        if age > self._max_age_ns or age < -self._max_age_ns:
            return (
                Finding(
                    AdmissionReason.ATTESTATION_STALE,
                    node,
                    f"attested {age / NS_PER_S:.1f} s ago, limit "
                    f"{self._max_age_ns / NS_PER_S:.1f} s",
                ),
            )
        return ()

    def _live(self, issued_ns: int, now: int) -> bool:
        """A challenge is answerable within `max_age` of its issue, either way (the wall
        clock may step back)."""
        return -self._max_age_ns <= now - issued_ns <= self._max_age_ns

    def _prune(self) -> None:
        """Forget challenges and used nonces too old to matter: they fail as stale anyway.

        Both are kept in the order they were stamped, so only the front is looked at: a
        request costs O(1) amortised however many are pending (rebuilding both on every
        request let a flood of challenges hold the service for all of them each time).
        One stamped before the wall clock stepped back may wait behind a newer one a
        while longer; `_freshness` checks each challenge's age itself."""
        now = self._clock.time_ns()
        outstanding = self._outstanding
        while outstanding:
            self.examined += 1
            first = next(iter(outstanding))
            if self._live(outstanding[first][1], now):
                break
            del outstanding[first]
        used = self._used
        while used:  # kept for two `max_age`: a replay then fails as stale anyway
            self.examined += 1
            first = next(iter(used))
            if -self._max_age_ns <= now - used[first] <= 2 * self._max_age_ns:
                break
            del used[first]

    def _verdict(
        self,
        node: str,
        target_release: str,
        digest: str,
        findings: tuple[Finding, ...],
        now: int,
        *,
        record: bool,
    ) -> Admission:
        previous = self.status(node)
        if not record:
            status = previous
        elif not findings:
            status = NodeStatus.ADMITTED
        elif previous in (NodeStatus.ADMITTED, NodeStatus.FENCED):
            status = NodeStatus.FENCED
            if previous is NodeStatus.ADMITTED:
                findings = (
                    *findings,
                    Finding(
                        AdmissionReason.NODE_DRIFTED,
                        node,
                        "was admitted, no longer matches the target release: fenced",
                    ),
                )
        else:
            status = NodeStatus.REFUSED
        if record:
            self._status[node] = status
        return Admission(
            node=node,
            admitted=record and not findings,
            status=status,
            target_release=target_release,
            manifest_digest=digest,
            findings=findings,
            at_ns=now,
        )
