"""The shipped scenario families against the detection targets.

Each example in `examples/scenarios/` stands for a family a user would try on
their own fleet: a clean day with more customer flow than 2012, a runaway of
the whole fleet after a rollback, a config-only skew below the rate floor, a
slow bleed, fleets of 4 to 16 nodes with 1 to 3 stale nodes. The targets:
- clean days: with every layer, nothing halts and every customer parent is filled;
- the runtime layers (every Guard rule, router bounds, supervisor, kill switch;
  no attestation, flag schema or rollout): every node's runaway is contained
  within 2 simulated seconds of its own first runaway execution, loss < $100k;
- the supervisor alone: within 10 s and < $250k, a slow bleed within 5 minutes.
Each runaway family first shows that, unguarded, it really runs away and loses
more than the target allows, so no assertion below can pass by default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.report import automatic_halts
from knightwatch.sim.scenario import Scenario, load, loads

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
INCIDENTS = (
    "fat-finger",
    "one-symbol",
    "flash-crash",
    "frozen-feed",
    "reused-ids",
    "off-price",
    "wrong-side",
)
RUNTIME = "runtime"  # every layer but attestation, flag_schema and rollout

# family: how long the supervisor alone may let a node run away (the targets)
RUNAWAYS = {
    "fleet-runaway": 10.0,
    "config-skew": 10.0,
    "slow-bleed": 300.0,
    "fleet-4": 10.0,
    "fleet-16": 10.0,
}


def family(name: str) -> Scenario:
    path = EXAMPLES / f"{name}.toml"
    if name != "slow-bleed":
        return load(path)
    # The shipped bleed runs 45 minutes; its first five are where detection happens, and a
    # test replays only those (the docs show the whole day).
    text = path.read_text(encoding="utf-8")
    for old, new in (
        ("duration_s = 2700", "duration_s = 360"),
        ("count = 2400", "count = 270"),
        ("arrival_end_s = 2640", "arrival_end_s = 300"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return loads(text, str(path))


def run(sc: Scenario, guards: str) -> ReplayResult:
    return Replay(sc, resolve(guards)).run()


def test_every_family_is_shipped_and_loads() -> None:
    shipped = {p.stem for p in EXAMPLES.glob("*.toml")}
    assert shipped == {"clean-day", *RUNAWAYS, *INCIDENTS}  # INCIDENTS: test_incidents.py
    sizes = {load(EXAMPLES / f"{n}.toml").fleet.nodes for n in RUNAWAYS}
    assert min(sizes) == 4 and max(sizes) == 16


@pytest.mark.parametrize("guards", ["all", RUNTIME])
def test_a_clean_day_never_halts_and_fills_every_customer_parent(guards: str) -> None:
    r = run(load(EXAMPLES / "clean-day.toml"), guards)
    assert r.parents == 400 and r.parents_completed == r.parents
    assert automatic_halts(r) == 0 and not r.control_actions
    assert r.runaway_executions == 0 and r.loss_usd == 0.0
    assert r.blocked_orders > 0, "the node rate limit throttled the open: and nothing stopped"


@pytest.mark.parametrize("nodes", [4, 16])
def test_a_clean_day_on_another_fleet_size_never_halts(nodes: int) -> None:
    """The same customer flow on 4 nodes is twice the shipped day's per node: at the open
    each node's routers offer about twice what its Guard's node rate limit lets through,
    for a few seconds, every extra child throttled and sent again once the window frees.
    The supervisor judged those refusals over one rate window and halted all four nodes at
    1.5 s (115 of 400 parents filled); on 16 nodes the flow is thinner."""
    text = (EXAMPLES / "clean-day.toml").read_text(encoding="utf-8")
    assert "\nnodes = 8\n" in text
    sc = loads(text.replace("\nnodes = 8\n", f"\nnodes = {nodes}\n"), "clean-day")
    r = run(sc, "all")
    assert automatic_halts(r) == 0 and not r.control_actions, r.control_actions
    assert r.parents == 400 and r.parents_completed == r.parents
    assert r.runaway_executions == 0 and r.loss_usd == 0.0
    if nodes == 4:
        assert r.blocked_orders > 0, "the open outran the node rate limit: the case at hand"


@pytest.mark.parametrize("name", sorted(RUNAWAYS))
def test_runtime_layers_contain_every_runaway_within_two_seconds(name: str) -> None:
    sc = family(name)
    unguarded = run(sc, "none")
    assert unguarded.runaway_from_s is not None and unguarded.longest_runaway_s is None
    r = run(sc, RUNTIME)
    assert r.longest_runaway_s is not None and r.longest_runaway_s <= 2.0, r.per_node
    assert r.loss_usd < 100_000
    assert r.contained_after_s is not None


@pytest.mark.parametrize("name", sorted(RUNAWAYS))
def test_the_supervisor_alone_contains_every_family(name: str) -> None:
    sc = family(name)
    r = run(sc, "supervisor")
    assert r.runaway_from_s is not None, "without the Guard's parent check the overfill happens"
    assert r.longest_runaway_s is not None and r.longest_runaway_s <= RUNAWAYS[name], r.per_node
    assert r.loss_usd < 250_000
    stale = set(sc.skewed_nodes())
    halted = {a.key for a in r.control_actions if a.actor == "supervisor" and a.scope == "node"}
    assert stale <= halted  # each runaway node halted by name
    ran = {n for n, st in r.per_node.items() if st.runaway_from_s is not None}
    assert ran <= halted
    for a in r.control_actions:  # a baseline rule's alert names its baseline and the excess
        if a.rule.startswith("supervisor_baseline") or a.rule == "supervisor_principal_flow":
            assert "baseline" in a.reason and "limit" in a.reason, a.reason


def _variant(
    name: str, nodes: int, stale: list[int], seed: int, rollback_s: int | None
) -> Scenario:
    """`name`'s scenario on another fleet: `nodes` nodes, `stale` the ones that missed the
    deploy, another seed, the customer flow and the exposure cap scaled with the fleet."""
    text = (EXAMPLES / f"{name}.toml").read_text(encoding="utf-8")
    subs = [
        (r"(?m)^nodes = \d+$", f"nodes = {nodes}"),
        (r"(?m)^missed_deploy = \[.*\]$", f"missed_deploy = {[f'n{i}' for i in stale]}"),
        (r"(?m)^seed = \d+$", f"seed = {seed}"),
        (r"(?m)^gross_exposure_cap = .*$", f"gross_exposure_cap = {2e6 * nodes}"),
    ]
    if rollback_s is not None:
        subs.append((r"(?m)^rollback_s = \d+", f"rollback_s = {rollback_s}"))
    else:
        subs.append((r"(?m)^count = 120$", f"count = {30 * nodes}"))
    for pattern, new in subs:
        text, n = re.subn(pattern, new.replace("'", '"'), text)
        assert n == 1, pattern
    return loads(text, f"{name}-{nodes}")


@pytest.mark.parametrize(
    ("name", "nodes", "stale", "seed", "rollback_s"),
    [
        ("fleet-4", 5, [3], 101, None),
        ("fleet-4", 11, [2, 9], 202, None),
        ("fleet-4", 14, [1, 7, 14], 303, None),
        ("fleet-runaway", 6, [6], 404, 10),
        ("fleet-runaway", 10, [1, 4, 9], 505, 90),
    ],
)
def test_fleets_not_shipped_are_contained_as_the_shipped_ones(
    name: str, nodes: int, stale: list[int], seed: int, rollback_s: int | None
) -> None:
    """The families, not the examples: other fleet sizes, other stale nodes, other seeds and
    rollback times (the issue's targets are checked on scenarios not in the repository)."""
    sc = _variant(name, nodes, stale, seed, rollback_s)
    assert sc.fleet.nodes == nodes and sorted(sc.skewed_nodes()) == sorted(f"n{i}" for i in stale)
    unguarded = run(sc, "none")
    assert unguarded.runaway_from_s is not None and unguarded.loss_usd > 250_000
    r = run(sc, RUNTIME)
    assert r.longest_runaway_s is not None and r.longest_runaway_s <= 2.0, r.per_node
    assert r.loss_usd < 100_000
    s = run(sc, "supervisor")
    assert s.longest_runaway_s is not None and s.longest_runaway_s <= 10.0, s.per_node
    assert s.loss_usd < 250_000
    halted = {a.key for a in s.control_actions if a.actor == "supervisor" and a.scope == "node"}
    assert {n for n, st in s.per_node.items() if st.runaway_from_s is not None} <= halted
