"""Incidents other than Knight 2012, written as a user would, against the guardrails.

Each example in `examples/scenarios/` below is another incident shape the scenario
schema can express:
- fat-finger: one node's config works every parent to 100x its quantity (lots typed as
  shares); the overfill is the firm's, and the router bounds or the Guard's parent check
  stop it at the parent's quantity;
- one-symbol: a fleet that trades one stock, one node's hotfix build maps the feature
  flag to old pegging code: a runaway confined to one symbol on one node;
- flash-crash: a customer's sell order worked whatever the price does (6 May 2010): no
  overfill, the harm is the market's (a move of more than 5%), and the customer's credit
  limit stops it.
Each first shows the harm unguarded, so no assertion can pass by default.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import Scenario, load, loads

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
INCIDENTS = ("fat-finger", "one-symbol", "flash-crash")


def run(sc: Scenario, guards: str) -> ReplayResult:
    return Replay(sc, resolve(guards)).run()


def events(r: ReplayResult) -> list[str]:
    return [f"{e.layer}: {e.what}" for e in r.events]


def test_the_incident_examples_are_shipped_and_load() -> None:
    for name in INCIDENTS:
        assert load(EXAMPLES / f"{name}.toml").name == name


def test_a_fat_finger_is_stopped_at_the_parent_quantity() -> None:
    sc = load(EXAMPLES / "fat-finger.toml")
    unguarded = run(sc, "none")
    assert unguarded.per_node["n2"].runaway_executions > 10_000
    assert unguarded.longest_runaway_s is None and unguarded.loss_usd > 100_000
    r = run(sc, "runtime")
    assert r.runaway_executions == 0 and r.loss_usd == 0.0
    assert r.parents_completed == r.parents
    stopped = [e for e in r.events if e.layer == "router_bounds"]
    assert stopped and {e.node for e in stopped} == {"n2"}
    assert all("max_qty_multiple" in e.what for e in stopped)
    alone = run(sc, "parent_reconciliation")  # the Guard's own check, without the router's
    assert alone.runaway_executions == 0
    assert any("parent_qty_exceeded" in e for e in events(alone))
    fleet = run(sc, "all")  # attestation sees n2's config file and keeps it out
    assert fleet.runaway_executions == 0 and not fleet.per_node["n2"].admitted
    assert any("config_mismatch" in e for e in events(fleet))
    assert fleet.parents_completed == fleet.parents  # its flow went to the admitted nodes


def test_a_runaway_in_one_symbol_on_one_node_is_halted_by_name() -> None:
    sc = load(EXAMPLES / "one-symbol.toml")
    assert len(sc.symbols(sc.scenario.seed)) == 1 and sc.skewed_nodes() == ["n3"]
    unguarded = run(sc, "none")
    ran = {n for n, st in unguarded.per_node.items() if st.runaway_executions}
    assert ran == {"n3"} and unguarded.loss_usd > 1_000_000
    r = run(sc, "supervisor")
    halts = [a for a in r.control_actions if a.actor == "supervisor"]
    assert [(a.scope, a.key) for a in halts] == [("node", "n3")]
    assert halts[0].rule == "supervisor_principal_flow"
    assert r.longest_runaway_s is not None and r.longest_runaway_s <= 2.0
    fleet = run(sc, "all")
    assert fleet.runaway_executions == 0 and not fleet.per_node["n3"].admitted
    assert any("flag_schema_mismatch" in e for e in events(fleet))


def test_a_sell_algorithm_that_ignores_price_is_stopped_by_the_customers_credit() -> None:
    sc = load(EXAMPLES / "flash-crash.toml")
    unguarded = run(sc, "none")
    assert unguarded.symbols_moved_over_5pct == 1 and unguarded.parents_completed == 1
    assert unguarded.runaway_executions == 0  # all of it the customer's: no overfill
    text = str(ReplayReport(unguarded, sc.record).sections())
    assert "no runaway" in text and "0.000 s" not in text  # not "contained at the open"
    for guards in ("exposure", "all"):
        r = run(sc, guards)
        assert r.symbols_moved_over_5pct == 0, guards
        assert any("first order blocked: customer_gross_exposure" in e for e in events(r))


def test_a_sell_runaway_in_a_penny_stock_never_trades_through_zero() -> None:
    """The book walked the bid through zero: unguarded, the runaway sold at negative
    prices and showed a profit; guarded, the first child priced at 0.0 was a traceback."""
    text = (EXAMPLES / "one-symbol.toml").read_text(encoding="utf-8")
    for old, new in (
        ("price = 42.0", "price = 0.50"),
        ("adv = 2_000_000", "adv = 2_000"),
        ("sigma = 0.025", "sigma = 0.05"),
        ("spread = 0.02", "spread = 0.01"),
        ("peg_updates_per_s = 5.0", "peg_updates_per_s = 10.0"),
        ("accounts = 10\n", "accounts = 10\nlong_symbols = 0\n"),  # every parent sells
    ):
        assert old in text, old
        text = text.replace(old, new)
    sc = loads(text, "penny.toml")
    unguarded = run(sc, "none")
    assert unguarded.runaway_executions > 10_000 and unguarded.loss_usd > 0
    r = run(sc, "kill_switch")  # a Guard in the loop that lets every child out
    assert r.child_orders == unguarded.child_orders and r.loss_usd > 0
