"""OpenFeature provider: applications evaluate flags the standard way, fail-closed.

An evaluation returns the state's value only when this node is admitted, its
own compiled-in flag table and its admitted release both hold the id with the
registry's definition hash, and the flag is live. Otherwise it returns the
flag's safe default with `reason=DISABLED`, the refusal code as the variant
and in `flag_metadata`. It does not use an `error_code` for those cases on
purpose: the OpenFeature client replaces the value with the caller's default
when an error code is set, and the caller's default is not the registry's safe
default. Only an id the registry has never heard of (there is no safe default
to give) is reported as `FLAG_NOT_FOUND`; a registry id spelled another way
(case, Unicode form, whitespace, a zero-width character, a separator: one id to
the registry), or copied with look-alike letters of another script (a Cyrillic 'е':
registry ids are ASCII), is that flag, refused with its safe default
(`id_spelled_otherwise`).

For the same reason an evaluation of a registry flag never raises: the client
answers an exception with the caller's default too. A state reader or fleet
view that fails in any way, or a state that is not this flag's or holds no
boolean, is `state_unavailable` / `node_not_admitted` with the safe default;
a confirmation that cannot be sent is logged and sent again on the next
evaluation, and the value stands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from knightwatch.errors import quoted
from knightwatch.flags.definition import FlagDefinition
from knightwatch.flags.fleet import FleetView, member_of
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import FlagStateReader, StateUnavailable

PROVIDER_NAME = "knightwatch-flags"
_T = TypeVar("_T")
log = logging.getLogger(__name__)


class FailClosed(StrEnum):
    """Why an evaluation returned the safe default instead of the flag's state."""

    RETIRED_FLAG = "retired_flag"
    NODE_NOT_ADMITTED = "node_not_admitted"
    LOCAL_SCHEMA_MISSING_FLAG = "local_schema_missing_flag"
    LOCAL_SCHEMA_MISMATCH = "local_schema_mismatch"
    RELEASE_SCHEMA_MISMATCH = "release_schema_mismatch"
    STATE_UNAVAILABLE = "state_unavailable"
    ID_SPELLED_OTHERWISE = "id_spelled_otherwise"
    """The key is a registry id in another case, Unicode form, with whitespace, with an
    invisible format character (a zero-width space), another separator or look-alike
    letters of another script."""


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
        if flag is None and (same := self._registry.same_id(flag_key)) is not None:
            # `Trading.smars.power_peg`: a registry id spelled another way is that flag,
            # not an unknown one the caller's default (perhaps on) would answer for
            return self._fail_closed(
                same, FailClosed.ID_SPELLED_OTHERWISE, f"{quoted(flag_key)} spells {same.id!r}"
            )
        if flag is None:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message=f"{flag_key!r} is not in the flag registry",
                reason=Reason.ERROR,
            )
        try:
            refusal = self._refusal(flag)
        except Exception as exc:  # the client would answer with the caller's default
            return self._fail_closed(flag, FailClosed.NODE_NOT_ADMITTED, _failure(exc))
        if refusal is not None:
            return self._fail_closed(flag, refusal)
        try:
            state = self._store.get(flag.id)
            value = state.value_for(self._node) if state is not None else None
        except StateUnavailable as exc:
            return self._fail_closed(flag, FailClosed.STATE_UNAVAILABLE, str(exc))
        except Exception as exc:  # the client would answer with the caller's default
            return self._fail_closed(flag, FailClosed.STATE_UNAVAILABLE, _failure(exc))
        if state is not None and (state.flag_id != flag.id or not isinstance(value, bool | None)):
            return self._fail_closed(
                flag,
                FailClosed.STATE_UNAVAILABLE,
                f"the state read for {flag.id!r} is not its boolean state "
                f"(flag {quoted(state.flag_id)}, value {quoted(value)})",
            )
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
        try:
            self._store.confirm_applied(flag_id, self._node, revision)
        except Exception as exc:  # the value stands; the confirmation is sent again next time
            with self._lock:
                if self._confirmed.get(flag_id) == revision:
                    del self._confirmed[flag_id]
            log.warning(
                "node %s: flag %s r%d not confirmed: %s",
                self._node,
                flag_id,
                revision,
                _failure(exc),
            )

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


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {quoted(str(exc))}"


def _variant(value: bool) -> str:
    return "on" if value else "off"


def _type_mismatch(flag_key: str, default_value: _T) -> FlagResolutionDetails[_T]:
    return FlagResolutionDetails(
        default_value,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=f"{flag_key!r}: registry flags are boolean",
        reason=Reason.ERROR,
    )
