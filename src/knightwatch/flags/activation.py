"""The activation gate: a flag moves off its safe default only on a uniform fleet.

Knight turned SMARS on fleet-wide while one server ran a release in which that
id meant Power Peg. Here a change away from the safe default is refused unless
every node that would evaluate it is admitted on a release whose flag schema
holds the id with the registry's definition hash; the refusal names the node.
Moving a flag back to its safe default is always allowed by one person: that is
the emergency direction and must never wait for a fleet check or an approver.
"""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from knightwatch.clock import NS_PER_S, Clock
from knightwatch.errors import quoted
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.fleet import FleetView
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import (
    FlagChange,
    FlagState,
    FlagStateStore,
    StateConflict,
    StateUnreadable,
)
from knightwatch.inputs import load_toml


class SecondApprover(StrEnum):
    """When a trading-behaviour flag change needs a second, different person."""

    NEVER = "never"
    MARKET_HOURS = "market_hours"
    ALWAYS = "always"


class MarketHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timezone: str = "America/New_York"
    open: str = "09:30"
    close: str = "16:00"
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        # OSError: a key naming a directory of the tz database ("America", "US") or too
        # long for a file name; raised through msgspec as is, it ended `flags set --policy`
        # with a traceback and made a roster holding it undecodable by anything's handler
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"market_hours.timezone: unknown time zone {quoted(self.timezone)}"
            ) from exc
        for name in ("open", "close"):
            try:
                time.fromisoformat(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"market_hours.{name}: expected HH:MM, got {exc}") from exc
        if any(d not in range(7) for d in self.weekdays):
            raise ValueError("market_hours.weekdays: each day must be 0 (Monday) to 6 (Sunday)")

    def check_session(self) -> None:
        """Refuse hours that contain no moment (they would make "market_hours" mean
        "never": no second approver ever asked for) or that `is_open` cannot compare.

        Applied to the activation policy file and to the roster's `approvals` (where a
        roster is built, and where a proposal or a stored version is decoded)."""
        bounds = [time.fromisoformat(self.open), time.fromisoformat(self.close)]
        for name, bound in zip(("open", "close"), bounds, strict=True):
            if bound.tzinfo is not None:  # compared with the local wall time it would raise
                raise ValueError(
                    f"market_hours.{name}: {quoted(getattr(self, name))} carries a UTC offset; "
                    "give HH:MM local to market_hours.timezone"
                )
        if bounds[0] >= bounds[1]:
            raise ValueError(
                f"market_hours: open {self.open} must be before close {self.close} "
                "(one session within a day)"
            )
        if not self.weekdays:
            raise ValueError(
                "market_hours.weekdays: empty (the market would never be open, and "
                "market_hours would never ask for a second approver)"
            )

    def is_open(self, wall_ns: int) -> bool:
        local = datetime.fromtimestamp(wall_ns / NS_PER_S, ZoneInfo(self.timezone))
        opens, closes = time.fromisoformat(self.open), time.fromisoformat(self.close)
        return local.weekday() in self.weekdays and opens <= local.time() < closes


class ActivationPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    second_approver: SecondApprover = SecondApprover.MARKET_HOURS
    market_hours: MarketHours = MarketHours()

    def __post_init__(self) -> None:
        self.market_hours.check_session()

    @classmethod
    def load(cls, path: Path) -> ActivationPolicy:
        data = load_toml(path, "activation policy")
        try:
            return msgspec.convert(data, cls)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"activation policy {path}: {exc}") from None


class ActivationCode(StrEnum):
    """Stable outcome codes for flag changes."""

    OK = "ok"
    UNKNOWN_FLAG = "unknown_flag"
    RETIRED_FLAG = "retired_flag"
    FLAG_NOT_ACTIVE = "flag_not_active"
    NO_TARGET_NODES = "no_target_nodes"
    UNKNOWN_NODE = "unknown_node"
    NODE_NOT_ADMITTED = "node_not_admitted"
    SCHEMA_MISSING_FLAG = "schema_missing_flag"
    SCHEMA_HASH_MISMATCH = "schema_hash_mismatch"
    MISSING_ACTOR = "missing_actor"
    MISSING_REASON = "missing_reason"
    SECOND_APPROVER_REQUIRED = "second_approver_required"
    SELF_APPROVAL = "self_approval"
    CONFLICT = "conflict"
    FROZEN_BY_KILL = "frozen_by_kill"
    APPROVAL_USED = "approval_used"


class ActivationRequest(msgspec.Struct, frozen=True):
    flag_id: str
    value: bool
    actor: str
    reason: str
    origin: str
    nodes: tuple[str, ...] = ()
    approver: str | None = None
    approval: str = ""
    """The second person's signed approval (DSSE JSON) `approver` was checked from; it
    travels with the change so every node can check it again."""
    approval_kind: str = "flag"
    """"flag" (`flags set`) or "rollout" (a rollout's stages, `approval_digest` its plan)."""
    approval_digest: str = ""
    approval_nodes: tuple[str, ...] | None = None
    """The nodes the approval names (None: the fleet)."""
    approved_ns: int = 0
    """When the approval was checked, if not at the change (a rollout's start)."""
    rollout_id: str = ""
    """A rollout's stage: which rollout (its approval carries that rollout alone)."""
    rollout_nodes: tuple[str, ...] = ()
    """A rollout's stage: the rollout's nodes in the order its stages take them."""
    rollout_stage: int = 0
    """A rollout's stage: the index of the plan's stage this change makes."""
    rollout_plan: str = ""
    """A rollout's stage: the plan (JSON) whose digest `approval_digest` is; every node
    counts the approval only for the nodes this stage adds under it."""


class ChangeSealer(Protocol):
    """Signs each committed change so the nodes can verify it (`knightwatch.trust.flagproof`).

    The flags layer only carries the proof; what it proves is the trust layer's."""

    def second_person(self, wall_ns: int) -> bool:
        """Whether the roster's signed policy asks for a second person at this instant."""
        ...

    def seal(
        self,
        change: FlagChange,
        revision: int,
        request: ActivationRequest,
        definition: FlagDefinition,
    ) -> str: ...


STOP_ATTEMPTS = 20
"""How often a change to the safe default is checked and committed again after losing the
compare-and-set to another writer, before the conflict is reported."""


class ActivationResult(msgspec.Struct, frozen=True):
    accepted: bool
    code: ActivationCode
    detail: str
    state: FlagState | None = None
    change: FlagChange | None = None


class ActivationGate:
    """Checks a request against registry, fleet and policy, then commits it."""

    def __init__(
        self,
        registry: FlagRegistry,
        fleet: FleetView,
        store: FlagStateStore,
        clock: Clock,
        policy: ActivationPolicy | None = None,
        frozen_by: str | None = None,
        sealer: ChangeSealer | None = None,
    ) -> None:
        """`frozen_by` names the kill in force, if any: then only safe-default changes pass.

        `sealer` signs every committed change; without one the change is unsigned, and
        nodes that verify flag state refuse it (only in-process stores go without)."""
        self._frozen_by = frozen_by
        self._sealer = sealer
        self._registry = registry
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._policy = policy or ActivationPolicy()

    def apply(self, request: ActivationRequest) -> ActivationResult:
        """Check, then commit with compare-and-set. A change to the safe default that lost
        the race to another writer is checked again against what they wrote and retried:
        the stop direction is never refused because someone else changed the flag (a
        rollout's abort that lost its switch-off so left the exposed nodes on)."""
        flag = self._registry.get(request.flag_id)
        stop = flag is not None and request.value == flag.safe_default
        result = self._apply_once(request)
        for _ in range(STOP_ATTEMPTS - 1):
            if not stop or result.code is not ActivationCode.CONFLICT:
                break
            result = self._apply_once(request)
        return result

    def _apply_once(self, request: ActivationRequest) -> ActivationResult:
        verdict, read = self._check(request)
        if not verdict.accepted or verdict.change is None:
            return verdict
        flag = self._registry.get(request.flag_id)
        safe_direction = flag is not None and request.value == flag.safe_default
        # the stop direction commits against the very state its targets were judged on: read
        # again here, a node another writer switched on in between (not a member in this
        # view) was left out of the targets, yet the compare-and-set against the newer
        # revision passed, and the node stayed on
        current, unreadable = read or self._current(request.flag_id, safe_direction)
        revision = current.revision if current else 0
        change = verdict.change
        if self._sealer is not None and flag is not None:
            proof = self._sealer.seal(change, revision + 1, request, flag)
            change = msgspec.structs.replace(change, proof=proof)
        try:
            state = self._store.commit(change, revision, replace_unreadable=bool(unreadable))
        except StateConflict as exc:
            return ActivationResult(False, ActivationCode.CONFLICT, str(exc))
        detail = verdict.detail
        if unreadable:
            detail += f"; replaced an unreadable stored state ({unreadable})"
        return ActivationResult(True, ActivationCode.OK, detail, state, change)

    def _current(self, flag_id: str, safe_direction: bool) -> tuple[FlagState | None, str]:
        """The stored state, and "" or why it could not be read.

        A stored record nobody can decode never holds back the stop direction: a
        change to the safe default starts from a fresh state (no node values: every
        node at the safe default) above the unreadable one's revision. Away from the
        safe default it stays an error naming the record (`StateUnreadable`)."""
        try:
            return self._store.get(flag_id), ""
        except StateUnreadable as exc:
            if not safe_direction:
                raise
            return FlagState(flag_id, exc.revision), str(exc)

    def check(self, request: ActivationRequest) -> ActivationResult:
        return self._check(request)[0]

    def _check(
        self, request: ActivationRequest
    ) -> tuple[ActivationResult, tuple[FlagState | None, str] | None]:
        """The verdict, and the stored state it was judged on (the stop direction reads it:
        None when it did not), which a commit must be made against."""
        read: tuple[FlagState | None, str] | None = None

        def refuse(
            code: ActivationCode, detail: str
        ) -> tuple[ActivationResult, tuple[FlagState | None, str] | None]:
            return ActivationResult(False, code, f"{request.flag_id}: {detail}"), read

        if not request.actor.strip():
            return refuse(ActivationCode.MISSING_ACTOR, "a change needs a named actor")
        if not request.reason.strip():
            return refuse(ActivationCode.MISSING_REASON, "a change needs a reason, for the record")
        flag = self._registry.get(request.flag_id)
        if flag is None and (same := self._registry.same_id(request.flag_id)) is not None:
            # "not in the flag registry" for `TRADING.SMARS.RLP_ENABLED off` told an operator
            # in an emergency that the flag they were stopping does not exist
            return refuse(
                ActivationCode.UNKNOWN_FLAG,
                f"{quoted(request.flag_id)} is not in the flag registry as spelled; it spells "
                f"registry id {same.id!r} "
                "another way (case, Unicode form, whitespace or an invisible character): "
                "give that id",
            )
        if flag is None:
            return refuse(ActivationCode.UNKNOWN_FLAG, "not in the flag registry")
        members = {m.node: m for m in self._fleet.members()}
        safe_direction = request.value == flag.safe_default
        # the stop direction also reaches nodes the state holds off the safe default that
        # are not members now (crashed, partitioned, left): they read the state when they
        # come back, and must not come back to the value the emergency was turning off
        holding: set[str] = set()
        unreadable = ""
        if safe_direction:
            read = self._current(flag.id, safe_direction)
            current, unreadable = read
            if current is not None:
                holding = {n for n, v in current.node_values.items() if v != request.value}
        targets = request.nodes or tuple(sorted(members.keys() | holding))
        # replacing an unreadable state puts every node at the safe default, members or not
        if not targets and not unreadable:
            return refuse(ActivationCode.NO_TARGET_NODES, "no node would evaluate this change")
        # a named node that is not a member is no reason to hold the stop direction back
        # (a rollout's abort names every node it exposed, crashed ones too)
        unknown = [n for n in targets if n not in members]
        if unknown and not safe_direction:
            return refuse(ActivationCode.UNKNOWN_NODE, f"not fleet members: {', '.join(unknown)}")
        if not safe_direction:
            if self._frozen_by is not None:
                return refuse(
                    ActivationCode.FROZEN_BY_KILL,
                    f"away from its safe default refused while {self._frozen_by}; only "
                    "safe-default changes pass until the resume",
                )
            if flag.lifecycle is Lifecycle.RETIRED:
                return refuse(ActivationCode.RETIRED_FLAG, "retired flags only go to safe default")
            if flag.lifecycle is not Lifecycle.ACTIVE:
                return refuse(
                    ActivationCode.FLAG_NOT_ACTIVE, f"lifecycle is {flag.lifecycle}, not active"
                )
            # every node that would refuse is named, each with the release it runs, so one
            # refusal is enough to see the whole skew (the code is the first node's)
            refused: list[tuple[ActivationCode, str]] = []
            for node in targets:
                member = members[node]
                held = member.flag_schema.get(flag.id)
                if not member.admitted:
                    runs = (
                        f"judged against release {member.release_id}"
                        if member.release_id
                        else "no verdict"
                    )
                    refused.append(
                        (
                            ActivationCode.NODE_NOT_ADMITTED,
                            f"node {node} is not admitted ({runs}; what it runs is unverified)",
                        )
                    )
                elif held is None:
                    refused.append(
                        (
                            ActivationCode.SCHEMA_MISSING_FLAG,
                            f"node {node} runs release {member.release_id}, whose flag schema "
                            "does not know this id",
                        )
                    )
                elif held != flag.meaning_hash:
                    refused.append(
                        (
                            ActivationCode.SCHEMA_HASH_MISMATCH,
                            f"node {node} runs release {member.release_id}, where this id "
                            f"means {held}, not the registry's {flag.meaning_hash}",
                        )
                    )
            if refused:
                what = "; ".join(detail for _, detail in refused)
                many = (
                    f"{len(refused)} of {len(targets)} nodes refuse: " if len(refused) > 1 else ""
                )
                return refuse(refused[0][0], many + what)
            approval = self._approval_refusal(request, flag.trading_behaviour)
            if approval is not None:
                return refuse(*approval)
        change = FlagChange(
            flag_id=flag.id,
            value=request.value,
            nodes=targets,
            actor=request.actor,
            approver=request.approver,
            reason=request.reason,
            origin=request.origin,
            at_ns=self._clock.time_ns(),
            releases={n: members[n].release_id if n in members else "" for n in targets},
        )
        direction = "to safe default" if safe_direction else "away from safe default"
        verb = "on" if request.value else "off"
        detail = f"{flag.id} -> {verb} ({direction}) on {len(targets)} node(s)"
        return ActivationResult(True, ActivationCode.OK, detail, change=change), read

    def _approval_refusal(
        self, request: ActivationRequest, trading_behaviour: bool
    ) -> tuple[ActivationCode, str] | None:
        if request.approver is not None and request.approver == request.actor:
            return ActivationCode.SELF_APPROVAL, "the approver must be a different person"
        if not trading_behaviour or request.approver:
            return None
        rule = self._policy.second_approver
        now = self._clock.time_ns()
        if rule is SecondApprover.ALWAYS or (
            rule is SecondApprover.MARKET_HOURS and self._policy.market_hours.is_open(now)
        ):
            return (
                ActivationCode.SECOND_APPROVER_REQUIRED,
                f"changes trading behaviour; policy '{rule}' requires a second approver "
                "(a signed approval: `knightwatch flags approve`, then --approval FILE)",
            )
        if self._sealer is not None and self._sealer.second_person(now):
            return (
                ActivationCode.SECOND_APPROVER_REQUIRED,
                "changes trading behaviour; the roster's signed approval policy requires a "
                "second approver, and every node checks it (a signed approval: `knightwatch "
                "flags approve`, then --approval FILE)",
            )
        return None
