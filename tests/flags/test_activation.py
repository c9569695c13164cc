"""Activation gate: uniform fleet, named refusals, second approver, emergency direction."""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.clock import SimClock
from knightwatch.flags.activation import (
    ActivationCode,
    ActivationGate,
    ActivationPolicy,
    ActivationRequest,
    MarketHours,
    SecondApprover,
)
from knightwatch.flags.fleet import FleetMember, StaticFleetView
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import FlagChange, FlagState, MemoryFlagStateStore

RLP = "trading.smars.rlp_enabled"
PEG = "trading.smars.power_peg"
DARK = "ops.dashboard.dark_mode"
FIXTURES = Path(__file__).parent / "fixtures"


def request(flag_id: str = RLP, value: bool = True, **kw: object) -> ActivationRequest:
    fields: dict[str, object] = {"actor": "alice", "reason": "open", "origin": "test"}
    fields.update(kw)
    return ActivationRequest(flag_id=flag_id, value=value, **fields)  # type: ignore[arg-type]


def test_uniform_fleet_activates_and_records_who_when_where(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    store = MemoryFlagStateStore()
    gate = ActivationGate(flag_registry, make_fleet(), store, pre_market_clock)
    result = gate.apply(request())
    assert result.accepted and result.code is ActivationCode.OK
    state = store.get(RLP)
    assert state is not None and state.revision == 1
    assert all(state.value_for(f"n{i}") is True for i in range(1, 9))
    (change,) = store.changes(RLP)
    assert (change.actor, change.origin, change.at_ns) == (
        "alice",
        "test",
        pre_market_clock.time_ns(),
    )
    assert change.releases == {f"n{i}": "r2" for i in range(1, 9)} and change.revision == 1


def test_knight_fleet_refused_naming_the_stale_node(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    store = MemoryFlagStateStore()
    old_schema = {"trading.smars.power_peg": "9" * 64}
    gate = ActivationGate(flag_registry, make_fleet(n8=old_schema), store, pre_market_clock)
    result = gate.apply(request())
    assert not result.accepted and result.code is ActivationCode.SCHEMA_MISSING_FLAG
    assert "node n8 runs release r1" in result.detail
    assert store.get(RLP) is None


def test_same_id_different_meaning_refused(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    skewed = {RLP: "f" * 64}
    gate = ActivationGate(
        flag_registry, make_fleet(n3=skewed), MemoryFlagStateStore(), pre_market_clock
    )
    result = gate.check(request())
    assert result.code is ActivationCode.SCHEMA_HASH_MISMATCH
    assert "node n3" in result.detail and "f" * 64 in result.detail
    # Only the targeted nodes matter: activation on n1,n2 is allowed on the skewed fleet.
    assert gate.check(request(nodes=("n1", "n2"))).accepted


def test_not_admitted_and_unknown_nodes_refused(
    flag_registry: FlagRegistry, pre_market_clock: SimClock
) -> None:
    fleet = StaticFleetView(
        [FleetMember("n1", True, "r2", flag_registry.schema()), FleetMember("n2", False, "r2", {})]
    )
    gate = ActivationGate(flag_registry, fleet, MemoryFlagStateStore(), pre_market_clock)
    assert gate.check(request()).code is ActivationCode.NODE_NOT_ADMITTED
    assert gate.check(request(nodes=("n9",))).code is ActivationCode.UNKNOWN_NODE
    empty = ActivationGate(
        flag_registry, StaticFleetView([]), MemoryFlagStateStore(), pre_market_clock
    )
    assert empty.check(request()).code is ActivationCode.NO_TARGET_NODES


def test_registry_lifecycle_rules(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    gate = ActivationGate(flag_registry, make_fleet(), MemoryFlagStateStore(), pre_market_clock)
    assert gate.check(request("trading.smars.unknown")).code is ActivationCode.UNKNOWN_FLAG
    assert gate.check(request(PEG)).code is ActivationCode.RETIRED_FLAG
    assert gate.check(request(actor=" ")).code is ActivationCode.MISSING_ACTOR


def test_safe_direction_needs_no_uniformity_or_approver(
    flag_registry: FlagRegistry, make_fleet, open_market_clock: SimClock
) -> None:
    old = {PEG: "9" * 64}
    gate = ActivationGate(
        flag_registry, make_fleet(n8=old), MemoryFlagStateStore(), open_market_clock
    )
    assert gate.apply(request(value=False)).accepted
    assert gate.apply(request(PEG, value=False)).accepted


def test_safe_direction_reaches_nodes_that_dropped_out_of_the_fleet(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    """n3 was switched on, then stopped heartbeating (not a member now). The emergency
    off for the fleet still puts n3 back to the safe default, so it does not come back
    to "on"; naming n3 alone (or with a node that never came back) is accepted too, not
    refused as an unknown node."""
    store = MemoryFlagStateStore()
    on = ActivationGate(flag_registry, make_fleet(3), store, pre_market_clock)
    assert on.apply(request(nodes=("n1", "n3"))).accepted
    without_n3 = StaticFleetView(m for m in make_fleet(3).members() if m.node != "n3")
    gate = ActivationGate(flag_registry, without_n3, store, pre_market_clock)
    result = gate.apply(request(value=False))
    assert result.accepted and result.change is not None
    assert result.change.nodes == ("n1", "n2", "n3")
    assert result.change.releases == {"n1": "r2", "n2": "r2", "n3": ""}
    state = store.get(RLP)
    assert state is not None and state.node_values == {"n1": False, "n2": False, "n3": False}

    assert on.apply(request(nodes=("n3",))).accepted  # on again while it was a member
    named = gate.apply(request(value=False, nodes=("n3",)))
    assert named.accepted, named.detail
    state = store.get(RLP)
    assert state is not None and state.value_for("n3") is False
    # a rollout's abort names every node it exposed, n4 that never joined again too
    abort = gate.apply(request(value=False, nodes=("n1", "n3", "n4")))
    assert abort.accepted, abort.detail
    # away from the safe default a non-member is still refused, by name
    away = gate.check(request(nodes=("n3",)))
    assert away.code is ActivationCode.UNKNOWN_NODE and "n3" in away.detail


def test_second_approver_in_market_hours(
    flag_registry: FlagRegistry, make_fleet, open_market_clock: SimClock, pre_market_clock: SimClock
) -> None:
    in_hours = ActivationGate(
        flag_registry, make_fleet(), MemoryFlagStateStore(), open_market_clock
    )
    assert in_hours.check(request()).code is ActivationCode.SECOND_APPROVER_REQUIRED
    assert in_hours.check(request(approver="alice")).code is ActivationCode.SELF_APPROVAL
    assert in_hours.check(request(approver="bob")).accepted
    assert in_hours.check(request(DARK)).accepted  # not a trading-behaviour flag
    before_open = ActivationGate(
        flag_registry, make_fleet(), MemoryFlagStateStore(), pre_market_clock
    )
    assert before_open.check(request()).accepted
    always = ActivationPolicy(second_approver=SecondApprover.ALWAYS)
    strict = ActivationGate(
        flag_registry, make_fleet(), MemoryFlagStateStore(), pre_market_clock, always
    )
    assert strict.check(request()).code is ActivationCode.SECOND_APPROVER_REQUIRED


def test_market_hours_weekend_and_bad_config() -> None:
    hours = MarketHours()
    saturday_noon_ny = 1344096000 * 1_000_000_000  # 2012-08-04 16:00 UTC
    assert not hours.is_open(saturday_noon_ny)
    with pytest.raises(ValueError, match=r"market_hours\.timezone"):
        MarketHours(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match=r"market_hours\.open"):
        MarketHours(open="9h30")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('open = "16:00"\nclose = "09:30"', r"market_hours: open 16:00 must be before close"),
        ('open = "09:30"\nclose = "09:30"', r"market_hours: open 09:30 must be before close"),
        ("weekdays = []", r"market_hours\.weekdays: empty"),
        ('open = "09:30+05:00"', r"market_hours\.open: '09:30\+05:00' carries a UTC offset"),
    ],
)
def test_a_policy_whose_market_never_opens_is_refused(
    tmp_path: Path, table: str, message: str
) -> None:
    """Hours that contain no moment made `market_hours` mean `never` (no second approver
    ever asked for); an offset on a bound made every check during a change raise."""
    path = tmp_path / "policy.toml"
    path.write_text(f'second_approver = "market_hours"\n[market_hours]\n{table}\n')
    with pytest.raises(ValueError, match=rf"activation policy {path}: {message}"):
        ActivationPolicy.load(path)


def test_a_refusal_names_every_refusing_node_with_the_release_it_runs(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    skewed = {RLP: "f" * 64}
    fleet = make_fleet(n3=skewed, n7=skewed)
    gate = ActivationGate(flag_registry, fleet, MemoryFlagStateStore(), pre_market_clock)
    result = gate.check(request())
    assert result.code is ActivationCode.SCHEMA_HASH_MISMATCH
    assert result.detail.count("runs release r1") == 2
    assert "2 of 8 nodes refuse" in result.detail
    assert "node n3 runs release r1" in result.detail and "node n7 runs release r1" in result.detail
    members = [FleetMember("n1", True, "r2", flag_registry.schema())]
    members += [FleetMember("n2", False, "r2", {}), FleetMember("n3", False, "", {})]
    gate = ActivationGate(
        flag_registry, StaticFleetView(members), MemoryFlagStateStore(), pre_market_clock
    )
    detail = gate.check(request()).detail
    assert "node n2 is not admitted (judged against release r2" in detail
    assert "node n3 is not admitted (no verdict" in detail


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
@pytest.mark.parametrize("value", [True, False])
def test_a_change_without_a_reason_is_refused_and_not_recorded(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock, value: bool, blank: str
) -> None:
    """Every change is on the record with why; a blank reason (an unset `$WHY`) is none."""
    store = MemoryFlagStateStore()
    gate = ActivationGate(flag_registry, make_fleet(), store, pre_market_clock)
    result = gate.apply(request(DARK, value=value, reason=blank))
    assert not result.accepted and result.code is ActivationCode.MISSING_REASON
    assert result.detail == f"{DARK}: a change needs a reason, for the record"
    assert store.get(DARK) is None and not store.changes(DARK)


class _Contended(MemoryFlagStateStore):
    """A store another writer commits to between the gate's read and its commit (two
    operators at once, or a rollout's promotion racing its abort), `races` times."""

    def __init__(self, races: int, other: ActivationRequest, gate: ActivationGate) -> None:
        super().__init__()
        self.races = races
        self.other = other
        self.gate = gate
        self.racing = False

    def commit(
        self, change: FlagChange, expected_revision: int, *, replace_unreadable: bool = False
    ) -> FlagState:
        if self.races > 0 and not self.racing:
            self.races -= 1
            self.racing = True  # the other writer's own commit goes straight through
            try:
                assert self.gate.apply(self.other).accepted
            finally:
                self.racing = False
        return super().commit(change, expected_revision, replace_unreadable=replace_unreadable)


def test_the_stop_direction_is_not_lost_to_a_concurrent_writer(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    """A switch-off that lost the compare-and-set to another change of the flag came back
    `conflict`: a rollout's abort recorded itself aborted with its exposed nodes still
    on. It is checked again against what the other writer stored and committed, and
    reaches the nodes that writer switched on meanwhile."""
    fleet = make_fleet(3)
    other = request(DARK, nodes=("n3",))
    store = _Contended(0, request(nodes=("n3",), approver="bob"), None)  # type: ignore[arg-type]
    gate = ActivationGate(flag_registry, fleet, store, pre_market_clock)
    store.gate = gate
    assert gate.apply(request(nodes=("n1",), approver="bob")).accepted
    store.races = 3  # n3 switched on under the stop, three times over
    result = gate.apply(request(value=False))
    assert result.accepted and result.code is ActivationCode.OK, result.detail
    state = store.get(RLP)
    assert state is not None and state.node_values == {"n1": False, "n2": False, "n3": False}
    assert store.races == 0 and store.changes(RLP)[-1].value is False
    # away from the safe default a lost race stays a conflict: re-checked by a person
    store.races, store.other = 1, other
    dark = ActivationGate(flag_registry, fleet, store, pre_market_clock)
    store.gate = dark
    assert dark.apply(request(DARK, nodes=("n1",))).code is ActivationCode.CONFLICT


class InterleavedStore(MemoryFlagStateStore):
    """A real in-memory store where another writer commits once, right after the first read:
    the gate's read for its check and its compare-and-set then see different revisions."""

    def __init__(self, theirs: FlagChange) -> None:
        super().__init__()
        self._theirs: FlagChange | None = theirs

    def get(self, flag_id: str) -> FlagState | None:
        state = super().get(flag_id)
        if self._theirs is not None:
            theirs, self._theirs = self._theirs, None
            self.commit(theirs, state.revision if state else 0)
        return state


def test_stop_reaches_a_node_another_writer_switched_on_after_the_check_read(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock
) -> None:
    # n9 is no member in this gate's view (it left, or its lease lapsed) but another writer,
    # whose view still held it, switches it on between this stop's read and its commit: the
    # stop was checked against the older state and committed against the newer one, so n9
    # stayed on. The stop must be judged on the state it commits against.
    on_n9 = FlagChange(RLP, True, ("n9",), "bob", None, "canary", "test", 0, {"n9": "r2"})
    store = InterleavedStore(on_n9)
    gate = ActivationGate(flag_registry, make_fleet(), store, pre_market_clock)
    result = gate.apply(request(value=False, reason="stop"))
    assert result.accepted, result.detail
    state = store.get(RLP)
    assert state is not None and state.value_for("n9") is False, state.node_values
    assert result.change is not None and "n9" in result.change.nodes


@pytest.mark.parametrize("zone", ["America", "US", "Etc", "a" * 300])
def test_a_time_zone_that_names_no_zone_file_is_a_one_line_error(tmp_path: Path, zone: str) -> None:
    """ "America" is a directory of the tz database and a 300-character key no file name:
    ZoneInfo raised OSError, which no caller expects (the policy file and the roster's
    approvals use these hours), so `flags set --policy` ended with a traceback."""
    path = tmp_path / "policy.toml"
    path.write_text(f'[market_hours]\ntimezone = "{zone}"\n')
    with pytest.raises(ValueError, match=rf"activation policy {path}: market_hours\.timezone: "):
        ActivationPolicy.load(path)
    with pytest.raises(ValueError, match=r"unknown time zone"):
        MarketHours(timezone=zone)


@pytest.mark.parametrize("value", [False, True])
@pytest.mark.parametrize(
    "spelled", ["TRADING.SMARS.RLP_ENABLED", "trading.smars.rlp_enabled\u200b"]
)
def test_a_registry_id_spelled_otherwise_is_named_not_called_unknown(
    flag_registry: FlagRegistry, make_fleet, pre_market_clock: SimClock, value: bool, spelled: str
) -> None:
    """`flags set TRADING.SMARS.RLP_ENABLED off` answered "not in the flag registry": an
    operator stopping a flag was told it does not exist. The refusal names the registry id."""
    store = MemoryFlagStateStore()
    gate = ActivationGate(flag_registry, make_fleet(), store, pre_market_clock)
    result = gate.apply(request(spelled, value=value, approver="bob"))
    assert not result.accepted and result.code is ActivationCode.UNKNOWN_FLAG
    assert f"spells registry id {RLP!r} another way" in result.detail
    assert repr(spelled) in result.detail and store.get(RLP) is None
