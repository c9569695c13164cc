"""Lint and validation findings with stable codes.

Codes are a public contract (CI annotations, dashboards and suppressions key on
them), so they are only ever added, never renamed.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class FindingCode(StrEnum):
    REGISTRY_INVALID = "registry_invalid"
    REUSED_ID = "reused_id"
    REDEFINED_ID = "redefined_id"
    TOMBSTONE_REMOVED = "tombstone_removed"
    LIFECYCLE_REGRESSED = "lifecycle_regressed"
    HASH_MISMATCH = "hash_mismatch"
    NOT_NAMESPACED = "not_namespaced"
    MISSING_OWNER = "missing_owner"
    MISSING_EXPIRY = "missing_expiry"
    EXPIRED_ACTIVE = "expired_active"
    RETIRED_FLAG_REFERENCE = "retired_flag_reference"
    UNKNOWN_FLAG_REFERENCE = "unknown_flag_reference"
    SOURCE_UNPARSEABLE = "source_unparseable"
    HISTORY_UNAVAILABLE = "history_unavailable"
    HISTORY_REWRITTEN = "history_rewritten"
    FLAG_TYPE_MISMATCH = "flag_type_mismatch"
    UNSAFE_CALLER_DEFAULT = "unsafe_caller_default"


class Finding(msgspec.Struct, frozen=True):
    code: FindingCode
    severity: Severity
    path: str
    line: int
    message: str
    flag_id: str = ""

    def render(self) -> str:
        return f"{self.path}:{self.line}: {self.severity} [{self.code}] {self.message}"


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)
