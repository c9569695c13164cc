"""OpenFeature provider, exercised through the real openfeature API: fail-closed cases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from knightwatch.clock import SimClock
from knightwatch.control.node.flags import NodeFlags
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.memory import MemoryControlPlane, MemoryFabric
from knightwatch.flags.activation import ActivationGate, ActivationRequest
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.provider import KnightwatchProvider
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import (
    FlagState,
    FlagStateReader,
    MemoryFlagStateStore,
    StateUnavailable,
)
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.trust.kit import Kit

RLP = "trading.smars.rlp_enabled"
PEG = "trading.smars.power_peg"
DARK = "ops.dashboard.dark_mode"


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    yield api.get_client("knightwatch-test")
    api.clear_providers()


def provide(
    registry: FlagRegistry,
    store: FlagStateReader,
    fleet: StaticFleetView,
    local: dict[str, str],
    node: str = "n1",
) -> None:
    api.set_provider(KnightwatchProvider(registry, store, fleet, node, local))


def switch_on(registry: FlagRegistry, fleet: StaticFleetView, store: MemoryFlagStateStore) -> None:
    gate = ActivationGate(registry, fleet, store, SimClock())
    request = ActivationRequest(RLP, True, "alice", "open", "test", approver="bob")
    assert gate.apply(request).accepted


def test_admitted_node_gets_the_state_and_confirms(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient
) -> None:
    store, fleet = MemoryFlagStateStore(), make_fleet()
    provide(flag_registry, store, fleet, flag_registry.schema())
    before = client.get_boolean_details(RLP, True)
    assert (before.value, before.reason) == (False, Reason.DEFAULT)  # safe default, not caller's
    switch_on(flag_registry, fleet, store)
    details = client.get_boolean_details(RLP, False)
    assert details.value is True and details.reason == Reason.TARGETING_MATCH
    assert details.error_code is None and details.flag_metadata["revision"] == 1
    assert store.get(RLP).applied == {"n1": 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("case", "variant"),
    [
        ("not_admitted", "fail-closed:node_not_admitted"),
        ("not_in_fleet", "fail-closed:node_not_admitted"),
        ("local_missing", "fail-closed:local_schema_missing_flag"),
        ("local_other_meaning", "fail-closed:local_schema_mismatch"),
        ("release_disagrees", "fail-closed:release_schema_mismatch"),
    ],
)
def test_fails_closed_to_safe_default(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient, case: str, variant: str
) -> None:
    store, fleet = MemoryFlagStateStore(), make_fleet()
    switch_on(flag_registry, fleet, store)
    schema = flag_registry.schema()
    local = dict(schema)
    node = "n1"
    if case == "not_admitted":
        fleet = StaticFleetView([FleetMember("n1", False, "r2", schema)])
    elif case == "not_in_fleet":
        node = "n9"
    elif case == "local_missing":
        del local[RLP]
    elif case == "local_other_meaning":
        local[RLP] = "e" * 64
    elif case == "release_disagrees":
        fleet = StaticFleetView([FleetMember("n1", True, "r1", {RLP: "e" * 64})])
    provide(flag_registry, store, fleet, local, node)
    details = client.get_boolean_details(RLP, True)
    assert details.value is False  # the registry's safe default, though the state says on
    assert details.reason == Reason.DISABLED and details.variant == variant
    assert details.flag_metadata["fail_closed"] == variant.split(":", 1)[1]


def test_retired_unknown_and_wrong_type(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient
) -> None:
    provide(flag_registry, MemoryFlagStateStore(), make_fleet(), flag_registry.schema())
    retired = client.get_boolean_details(PEG, True)
    assert (retired.value, retired.variant) == (False, "fail-closed:retired_flag")
    unknown = client.get_boolean_details("trading.smars.nothing", False)
    assert unknown.error_code == ErrorCode.FLAG_NOT_FOUND and unknown.reason == Reason.ERROR
    wrong = client.get_string_details(RLP, "x")
    assert wrong.error_code == ErrorCode.TYPE_MISMATCH and wrong.value == "x"


def test_unreadable_state_fails_closed(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient
) -> None:
    """A node whose flag state is not in sync with the control plane evaluates safe defaults."""
    plane = MemoryControlPlane(MemoryFabric())  # never connected: nothing was read
    guard = Guard(Limits(lease_timeout_s=0.75), node="n1", clock=SimClock())
    kit = Kit(now_ns=0, nodes=["n1"])
    runtime = NodeRuntime(
        guard, plane, clock=SimClock(), trust=kit.store(), signer=kit.signer("n1")
    )
    unsynced = NodeFlags(runtime)
    provide(flag_registry, unsynced, make_fleet(), flag_registry.schema())
    details = client.get_boolean_details(RLP, True)
    assert (details.value, details.variant) == (False, "fail-closed:state_unavailable")
    assert "not in sync" in str(details.flag_metadata["detail"])


class _ConfirmationsLost(MemoryFlagStateStore):
    """The state was read, then the store went away: confirming fails, as the plane's
    store does when it cannot be reached (`StateUnavailable`)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.confirms = 0

    def confirm_applied(self, flag_id: str, node: str, revision: int) -> None:
        self.confirms += 1
        if self.down:
            raise StateUnavailable("flag state unreachable: timed out")
        super().confirm_applied(flag_id, node, revision)


class _OffItsLoop(MemoryFlagStateStore):
    """A reader that fails with something other than `StateUnavailable`: a node's reader
    asked from a thread without its event loop raises `RuntimeError`."""

    def get(self, flag_id: str) -> FlagState | None:
        if flag_id == RLP:
            raise RuntimeError("no running event loop")
        return super().get(flag_id)


class _OtherFlags(MemoryFlagStateStore):
    """A reader that answers with the wrong record: another flag's state."""

    def get(self, flag_id: str) -> FlagState | None:
        return super().get(DARK if flag_id == RLP else flag_id)


def test_a_failing_confirmation_keeps_the_value_and_is_sent_again(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient
) -> None:
    """The flag was switched on and back off; the node's confirmation of the off could not
    be sent. The exception reached the OpenFeature client, which answered with the
    caller's default (on), not the off the state holds, and the lost confirmation was
    never sent again."""
    store, fleet = _ConfirmationsLost(), make_fleet()
    switch_on(flag_registry, fleet, store)
    gate = ActivationGate(flag_registry, fleet, store, SimClock())
    assert gate.apply(ActivationRequest(RLP, False, "carol", "stop", "test")).accepted
    provide(flag_registry, store, fleet, flag_registry.schema())
    details = client.get_boolean_details(RLP, True)
    assert (details.value, details.reason, details.error_code) == (
        False,
        Reason.TARGETING_MATCH,
        None,
    )
    assert store.confirms == 1 and store.get(RLP).applied == {}  # type: ignore[union-attr]
    store.down = False
    assert client.get_boolean_details(RLP, True).value is False
    assert store.confirms == 2 and store.get(RLP).applied == {"n1": 2}  # type: ignore[union-attr]


@pytest.mark.parametrize("reader", [_OffItsLoop, _OtherFlags])
def test_a_reader_that_fails_or_answers_garbage_gives_the_safe_default(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient, reader: type
) -> None:
    """Any failure of the state reader (not only `StateUnavailable`) reached the client,
    which answered with the caller's default; another flag's state was taken as this
    flag's value."""
    store, fleet = reader(), make_fleet()
    gate = ActivationGate(flag_registry, fleet, store, SimClock())
    assert gate.apply(ActivationRequest(DARK, True, "alice", "theme", "test")).accepted
    provide(flag_registry, store, fleet, flag_registry.schema())
    details = client.get_boolean_details(RLP, True)
    assert details.value is False and details.error_code is None
    assert details.variant == "fail-closed:state_unavailable"
    detail = str(details.flag_metadata["detail"])
    assert "RuntimeError: 'no running event loop'" in detail or "flag 'ops.dashboard" in detail


@pytest.mark.parametrize(
    "spelled", ["Trading.smars.power_peg", "trading.smars.power_peg ", "ｔrading.smars.power_peg"]
)
def test_a_registry_id_spelled_otherwise_is_that_flag_at_its_safe_default(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient, spelled: str
) -> None:
    """The retired Power Peg id in another case, with a trailing space or a full-width
    letter was "not in the registry", and the client answered with the caller's default:
    on, waking the retired code. The registry holds it as one id with Power Peg's."""
    provide(flag_registry, MemoryFlagStateStore(), make_fleet(), flag_registry.schema())
    details = client.get_boolean_details(spelled, True)
    assert (details.value, details.error_code) == (False, None)
    assert details.variant == "fail-closed:id_spelled_otherwise"
    assert "spells 'trading.smars.power_peg'" in str(details.flag_metadata["detail"])
    unknown = client.get_boolean_details("trading.smars.power_pegs", True)
    assert unknown.error_code == ErrorCode.FLAG_NOT_FOUND
