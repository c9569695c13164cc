"""Release and flag governance in the replay: the real admission, activation and rollout code.

The replay builds, in memory, what a fleet has in production: a flag registry
holding the deploy flag with its new meaning, a target release and the
previous one as signed manifests (CI plus release manager, threshold 2), an
enrolled key and an `Attestor` per node, a flag state store and the
`ActivationGate`. Admission itself is not here: with `attestation` the
replay's control plane runs the live `AdmissionService` and every node's
`NodeRuntime` attests through its `Attestor` (`fleet_admission`). What a node
attests is computed from the release it really runs at that moment (its file
table and compiled-in flag table), never from the deploy log.

Which checks bite depends on the layers (`GovernanceMode`):
- without `attestation` the control plane believes the deploy log: every node
  is taken to run the target release (Knight's belief in 2012);
- with `flag_schema` every node presents the flag table it was built with, so
  the activation gate sees node 8's older meaning of the reused id;
- with `attestation` the fleet view is the control plane's (`fleet_snapshot`:
  membership and the admission service's stored verdicts), so a refused node
  is a member that is not admitted; a rollback is a new target release and
  goes through the admission service like any other;
- with `rollout` the flag leaves its safe default through `Rollout` stages and
  health gates instead of everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.control.node.attestor import Attestor
from knightwatch.flags.activation import ActivationGate, ActivationRequest, ActivationResult
from knightwatch.flags.definition import FlagDefinition, Lifecycle
from knightwatch.flags.fleet import FleetMember
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.rollout import (
    Metrics,
    RequestHalt,
    Rollout,
    RolloutRunner,
    SetFlag,
    plan_digest,
    rollout_nodes,
)
from knightwatch.flags.state import MemoryFlagStateStore
from knightwatch.release.contents import ReleaseContents, contents_from_memory
from knightwatch.release.dsse import Envelope, encode_envelope
from knightwatch.release.flagschema import schema_from_table
from knightwatch.release.keys import SigningKey
from knightwatch.release.manifest import Manifest
from knightwatch.release.signing import ReleaseSigners
from knightwatch.sim.fleet import FleetAdmission
from knightwatch.sim.release import MEANINGS, Release
from knightwatch.sim.scenario import NodeConfig
from knightwatch.sim.setup import GovernanceMode, ReplayHooks
from knightwatch.state import Scope
from knightwatch.trust.approval import APPROVAL_TTL_S, Approval, ApprovalKind, sign_approval
from knightwatch.trust.command import Refused
from knightwatch.trust.flagproof import FlagSealer, check_flag_proof
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

if TYPE_CHECKING:
    from knightwatch.sim.node import Node
    from knightwatch.sim.scenario import Scenario

OPERATOR = "smars-ops"
APPROVER = "release-manager"


class Governance:
    """The control plane's release and flag state for one replay."""

    def __init__(self, scenario: Scenario, clock: SimClock, mode: GovernanceMode) -> None:
        self.scenario = scenario
        self.mode = mode
        self.clock = clock
        d = scenario.deploy
        self.target = scenario.releases[d.target]
        self.flag = d.flag
        meaning = MEANINGS[self.target.flags.get(d.flag, "smars")]
        opened = scenario.scenario.open.date()
        self.registry = FlagRegistry.from_definitions(
            [
                FlagDefinition(
                    id=d.flag,
                    description=meaning,
                    safe_default=False,
                    trading_behaviour=True,
                    lifecycle=Lifecycle.ACTIVE,
                    created=opened - timedelta(days=31),
                    owner="smars-team",
                    expires=opened + timedelta(days=152),
                )
            ],
            source=f"{scenario.name}:feature-flags.yaml",
        )
        signers = ReleaseSigners.generate(("ci", APPROVER))
        self.trust = signers.trust
        self.envelopes: dict[str, Envelope] = {
            rid: signers.sign(Manifest(release_id=rid, contents=contents_of(rel, scenario.config)))
            for rid, rel in scenario.releases.items()
        }
        self.node_keys = {n: SigningKey.generate() for n in scenario.node_ids()}
        self.store = MemoryFlagStateStore()
        self._nodes: list[Node] = []
        self._fleet: Callable[[], Sequence[FleetMember]] | None = None
        self.cast = Kit(now_ns=0, people={OPERATOR: (Role.OPERATOR,), APPROVER: (Role.APPROVER,)})
        """The people who change the flag: each change is signed by the operator and
        approved by the approver, and each node verifies that before applying it."""
        sealer = FlagSealer(self.cast.signer(OPERATOR), self.cast.roster)
        self.gate = ActivationGate(self.registry, self, self.store, clock, sealer=sealer)
        self.rollout: Rollout | None = None

    # ------------------------------------------------------------ fleet view

    def members(self) -> Sequence[FleetMember]:
        """What the control plane knows about each node (the `FleetView` of the gate)."""
        if self.mode.attestation:
            assert self._fleet is not None, "attestation runs the control plane"
            return self._fleet()
        if self.mode.flag_schema:
            return [
                FleetMember(n.id, True, n.release.id, schema_of(n.release)) for n in self._nodes
            ]
        believed = schema_of(self.target)
        return [FleetMember(n.id, True, self.target.id, believed) for n in self._nodes]

    # ------------------------------------------------------------ admission

    def fleet_admission(self, nodes: Sequence[Node]) -> FleetAdmission:
        """The admission service's inputs and an `Attestor` per node that measures the
        release the node runs at the moment it attests (so a rollback is seen)."""

        def measure(node: Node) -> Callable[[], ReleaseContents]:
            return lambda: contents_of(node.release, node.config)

        return FleetAdmission(
            trust=self.trust,
            registry=self.registry.admission_schema(),
            target=self.envelopes[self.target.id],
            attestors={
                n.id: Attestor(n.id, self.node_keys[n.id], measure(n), clock=self.clock)
                for n in nodes
            },
        )

    # ------------------------------------------------------------ flag activation

    def attach(
        self, nodes: list[Node], fleet: Callable[[], Sequence[FleetMember]] | None = None
    ) -> None:
        """The replay's nodes and, with the control plane, its fleet view."""
        self._nodes = nodes
        self._fleet = fleet

    def switch_on(self) -> ActivationResult:
        """The flag goes on everywhere at once, through the gate (2012's one big switch)."""
        reason = f"{self.target.id} launch at the open"
        result = self.gate.apply(
            ActivationRequest(
                flag_id=self.flag,
                value=True,
                actor=OPERATOR,
                reason=reason,
                origin="replay",
                approver=APPROVER,
                approval=self._approval(ApprovalKind.FLAG, reason),
            )
        )
        self.sync_nodes()
        return result

    def start_rollout(self, replay: ReplayHooks) -> list[str]:
        """The rollout over the admitted members; the others are left out by name (with
        the release each one runs, as simulated), or it refuses to start without any."""
        nodes, excluded = rollout_nodes(self.members())
        runs = {n.id: n.release.id for n in self._nodes}
        excluded = {n: f"{why}; runs {runs[n]}" for n, why in excluded.items()}
        try:
            self.rollout, actions = Rollout.start(
                f"{self.flag}@{self.target.id}",
                self.flag,
                True,
                nodes,
                self.scenario.rollout,
                self.clock,
                started_by=OPERATOR,
                approver=APPROVER,
                excluded=excluded,
            )
        except ValueError as exc:
            replay.mark("rollout", "*", f"refused to start: {exc}")
            return []
        approval = self._approval(
            ApprovalKind.ROLLOUT, "staged launch", plan_digest(self.scenario.rollout)
        )
        state = msgspec.structs.replace(
            self.rollout.state, approval=approval, approved_at_ns=self.clock.time_ns()
        )
        self.rollout = Rollout(state, self.clock)
        return self._execute(replay, actions, seen=0)

    def _approval(self, kind: ApprovalKind, reason: str, digest: str = "") -> str:
        """The approver's signed approval of the operator's change (valid for an hour)."""
        now = self.clock.time_ns()
        approval = Approval(
            kind, self.flag, True, None, OPERATOR, reason, now,
            now + int(APPROVAL_TTL_S * NS_PER_S), digest=digest,
        )  # fmt: skip
        return encode_envelope(sign_approval(approval, self.cast.signer(APPROVER))).decode()

    def step_rollout(self, replay: ReplayHooks, metrics: Metrics) -> list[str]:
        if self.rollout is None:
            return []
        seen = len(self.rollout.state.events)
        return self._execute(replay, self.rollout.step(metrics), seen=seen)

    def _execute(
        self, replay: ReplayHooks, actions: Sequence[SetFlag | RequestHalt], *, seen: int
    ) -> list[str]:
        """Apply the rollout's actions through the gate; mark every rollout event after `seen`."""
        assert self.rollout is not None
        outcomes = RolloutRunner(self.gate, _NodeHalts(replay), "replay").execute(
            self.rollout, actions
        )
        self.sync_nodes()
        for event in self.rollout.state.events[seen:]:
            if event.kind != "gate_failed":
                replay.mark("rollout", "*", f"{event.kind}: {event.detail}")
        return outcomes

    def sync_nodes(self) -> None:
        """Each node applies the flag state the store holds for it (safe default if none),
        once its signed proof verifies against the cast's roster with the meaning the
        node's own release gives the flag; a refused value leaves the node as it was."""
        state = self.store.get(self.flag)
        safe = False
        for node in self._nodes:
            value = state.value_for(node.id) if state is not None else None
            if state is not None and value is not None:
                try:
                    verdict = check_flag_proof(
                        state.proofs.get(node.id, ""),
                        self.cast.roster,
                        flag_id=self.flag,
                        node=node.id,
                        value=value,
                        schema=schema_of(node.release),
                        now_ns=self.clock.time_ns(),
                        live=False,
                    )
                except Refused:
                    continue
                if verdict.own_safe_default:
                    value = None
            on = safe if value is None else value
            if on != node.flag_on:
                node.set_flag(on)
            if state is not None:
                self.store.confirm_applied(self.flag, node.id, state.revision)


class _NodeHalts:
    """The rollout's halt requests, sent through the replay's kill switch as live."""

    def __init__(self, replay: ReplayHooks) -> None:
        self.replay = replay

    def halt(self, scope: Scope, key: str, reason: str, actor: str) -> None:
        self.replay.control_halt("rollout", scope, key, reason, actor)


def contents_of(release: Release, config: NodeConfig) -> ReleaseContents:
    """What a node running `release` with `config` attests: its files, its config file
    and its flag table (a config-only skew is a different config file)."""
    return contents_from_memory(release.files(), config_file(config), release.flag_table())


def config_file(config: NodeConfig) -> bytes:
    """The bytes of a node's router config file, as the node would read them from disk."""
    return b"# smars router config\n" + msgspec.json.encode(config) + b"\n"


def schema_of(release: Release) -> dict[str, str]:
    return schema_from_table(release.flag_table(), where=f"release {release.id}")
