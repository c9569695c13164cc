"""OpenFeature provider: applications evaluate flags the standard way, fail-closed.

An evaluation returns the state's value only when this node is admitted, its
own compiled-in flag table and its admitted release both hold the id with the
registry's definition hash, and the flag is live. Otherwise it returns the
flag's safe default with `reason=DISABLED`, the refusal code as the variant
and in `flag_metadata`. It does not use an `error_code` for those cases on
purpose: the OpenFeature client replaces the value with the caller's default
when an error code is set, and the caller's default is not the registry's safe
default. Only an id the registry has never heard of (there is no safe default
to give) is reported as `FLAG_NOT_FOUND`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from knightwatch.flags.definition import FlagDefinition
from knightwatch.flags.fleet import FleetView, member_of
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import FlagStateReader, StateUnavailable

PROVIDER_NAME = "knightwatch-flags"
_T = TypeVar("_T")


class FailClosed(StrEnum):
    """Why an evaluation returned the safe default instead of the flag's state."""

    RETIRED_FLAG = "retired_flag"
    NODE_NOT_ADMITTED = "node_not_admitted"
    LOCAL_SCHEMA_MISSING_FLAG = "local_schema_missing_flag"
    LOCAL_SCHEMA_MISMATCH = "local_schema_mismatch"
    RELEASE_SCHEMA_MISMATCH = "release_schema_mismatch"
    STATE_UNAVAILABLE = "state_unavailable"


class KnightwatchProvider(AbstractProvider):
    """Boolean flags from the registry and the flag state, for one node.

    `local_schema` is the flag table compiled into this process (id ->
    definition hash), the same table its attestation presents at admission.
    """

    def __init__(
        self,
        registry: FlagRegistry,
        store: FlagStateReader,
        fleet: FleetView,
        node: str,
        local_schema: Mapping[str, str],
    ) -> None:
        super().__init__()
        self._registry = registry
        self._store = store
        self._fleet = fleet
        self._node = node
        self._local_schema = dict(local_schema)
        self._confirmed: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        flag = self._registry.get(flag_key)
        if flag is None:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message=f"{flag_key!r} is not in the flag registry",
                reason=Reason.ERROR,
            )
        refusal = self._refusal(flag)
        if refusal is not None:
            return self._fail_closed(flag, refusal)
        try:
            state = self._store.get(flag.id)
        except StateUnavailable as exc:
            return self._fail_closed(flag, FailClosed.STATE_UNAVAILABLE, str(exc))
        value = state.value_for(self._node) if state else None
        metadata: dict[str, bool | int | float | str] = {
            "definition_hash": flag.meaning_hash,
            "node": self._node,
        }
        if state is None or value is None:
            return FlagResolutionDetails(
                flag.safe_default,
                reason=Reason.DEFAULT,
                variant=_variant(flag.safe_default),
                flag_metadata=metadata,
            )
        metadata["revision"] = state.revision
        self._confirm(flag.id, state.revision)
        return FlagResolutionDetails(
            value, reason=Reason.TARGETING_MATCH, variant=_variant(value), flag_metadata=metadata
        )

    def _refusal(self, flag: FlagDefinition) -> FailClosed | None:
        if flag.retired:
            return FailClosed.RETIRED_FLAG
        member = member_of(self._fleet, self._node)
        if member is None or not member.admitted:
            return FailClosed.NODE_NOT_ADMITTED
        local = self._local_schema.get(flag.id)
        if local is None:
            return FailClosed.LOCAL_SCHEMA_MISSING_FLAG
        if local != flag.meaning_hash:
            return FailClosed.LOCAL_SCHEMA_MISMATCH
        if member.flag_schema.get(flag.id) != local:
            return FailClosed.RELEASE_SCHEMA_MISMATCH
        return None

    def _fail_closed(
        self, flag: FlagDefinition, refusal: FailClosed, detail: str = ""
    ) -> FlagResolutionDetails[bool]:
        metadata: dict[str, bool | int | float | str] = {
            "fail_closed": str(refusal),
            "definition_hash": flag.meaning_hash,
            "node": self._node,
        }
        if detail:
            metadata["detail"] = detail
        return FlagResolutionDetails(
            flag.safe_default,
            reason=Reason.DISABLED,
            variant=f"fail-closed:{refusal}",
            flag_metadata=metadata,
        )

    def _confirm(self, flag_id: str, revision: int) -> None:
        """Tell the store once per revision that this node now evaluates it."""
        with self._lock:
            if self._confirmed.get(flag_id) == revision:
                return
            self._confirmed[flag_id] = revision
        self._store.confirm_applied(flag_id, self._node, revision)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return _type_mismatch(flag_key, default_value)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return _type_mismatch(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _type_mismatch(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _type_mismatch(flag_key, default_value)


def _variant(value: bool) -> str:
    return "on" if value else "off"


def _type_mismatch(flag_key: str, default_value: _T) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(
        default_value,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=f"{flag_key!r}: registry flags are boolean",
        reason=Reason.ERROR,
    )
