"""Stable reason codes for release verification and admission.

The control plane, dashboards and the flight recorder key on these values, so
they are never renamed, only added. A `Finding` pairs a code with the thing it
is about (a file path, flag id, key id or node id) so a refusal can say exactly
which file or flag differs.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class AdmissionReason(StrEnum):
    # release signatures
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    SIGNATURE_UNTRUSTED = "signature_untrusted"
    BELOW_THRESHOLD = "below_threshold"
    MANIFEST_TAMPERED = "manifest_tampered"
    MANIFEST_MALFORMED = "manifest_malformed"
    NOT_TARGET_RELEASE = "not_target_release"
    # release versus flag registry
    FLAG_UNKNOWN_TO_REGISTRY = "flag_unknown_to_registry"
    FLAG_RETIRED_IN_REGISTRY = "flag_retired_in_registry"
    FLAG_REDEFINED_IN_REGISTRY = "flag_redefined_in_registry"
    # node attestation
    NODE_UNKNOWN = "node_unknown"
    ATTESTATION_MALFORMED = "attestation_malformed"
    ATTESTATION_SIGNATURE_INVALID = "attestation_signature_invalid"
    ATTESTATION_REPLAYED = "attestation_replayed"
    ATTESTATION_STALE = "attestation_stale"
    CHALLENGE_UNKNOWN = "challenge_unknown"
    # what the node runs versus the signed manifest
    FILE_MISMATCH = "file_mismatch"
    FILE_MISSING = "file_missing"
    FILE_UNEXPECTED = "file_unexpected"
    FILE_MODE_MISMATCH = "file_mode_mismatch"
    """A file executable on the node and not in the release, or the reverse; or a node that
    does not report which files are executable against a release that names them."""
    CONFIG_MISMATCH = "config_mismatch"
    FLAG_SCHEMA_MISMATCH = "flag_schema_mismatch"
    FLAG_MISSING = "flag_missing"
    FLAG_UNEXPECTED = "flag_unexpected"
    ENVIRONMENT_MISMATCH = "environment_mismatch"
    """The interpreter, or a standard-library module or installed package (an entry of the
    release's measured environment), differs on the node."""
    ENVIRONMENT_MISSING = "environment_missing"
    ENVIRONMENT_UNEXPECTED = "environment_unexpected"
    """An installed package (or `.pth` file, or module) the release's environment does not
    name: a dist-info of another version reads as one missing and one unexpected."""
    ENVIRONMENT_UNMEASURED = "environment_unmeasured"
    """The release names its Python environment and the node does not measure its own."""
    # state change
    NODE_DRIFTED = "node_drifted"
    # incident
    FROZEN_BY_KILL = "frozen_by_kill"
    # who asked for a target release, and who approved it
    TARGET_REQUEST_REFUSED = "target_request_refused"
    """The request is not an operator's valid, fresh, unreplayed signature over this release."""
    TARGET_NOT_APPROVED = "target_not_approved"
    """No second person's valid approval of exactly this release for this requester."""


class Finding(msgspec.Struct, frozen=True):
    """One reason a release or node is refused; `subject` names the file, flag, key or node."""

    reason: AdmissionReason
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.subject}: {self.detail}"
