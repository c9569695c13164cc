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
- frozen-feed, reused-ids, off-price, wrong-side: what goes wrong on one node while it
  trades (`[faults]`): a reference-price feed that freezes while others sell the stock off
  (`[[flow]]`), a restart that reuses client order ids, children priced through the touch,
  children sent on the other side of their parent (a router's sign bug).
Each first shows the harm unguarded, so no assertion can pass by default.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.sim.layers import resolve
from knightwatch.sim.replay import Replay, ReplayResult
from knightwatch.sim.report import ReplayReport
from knightwatch.sim.scenario import Scenario, ScenarioError, load, loads

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


def first_blocks(r: ReplayResult) -> dict[str, str]:
    """node -> the reason of its first blocked order (the earliest one)."""
    out: dict[str, str] = {}
    for e in r.events:
        if e.layer == "guard" and e.what.startswith("first order blocked: "):
            out.setdefault(e.node, e.what.removeprefix("first order blocked: "))
    return out


def test_a_frozen_feed_buys_at_a_stale_price_until_the_freshness_check_stops_it() -> None:
    sc = load(EXAMPLES / "frozen-feed.toml")
    unguarded = run(sc, "none")
    assert unguarded.runaway_executions == 0 and unguarded.parents_completed == 80
    assert unguarded.loss_usd > 4_000  # n2 paid its frozen ask while the stock fell
    assert "fault: reference-price feed frozen" in events(unguarded)
    for guards in ("order_size", "runtime"):  # the collar compares the stale price with
        r = run(sc, guards)  # the same stale reference: only its age gives it away
        assert first_blocks(r) == {"n2": "stale_reference_price"}, guards
        assert r.loss_usd < unguarded.loss_usd / 10, guards


def test_reused_order_ids_are_refused_before_their_fills_are_misbooked() -> None:
    sc = load(EXAMPLES / "reused-ids.toml")
    unguarded = run(sc, "none")
    assert unguarded.per_node["n2"].runaway_executions == unguarded.runaway_executions > 40
    assert unguarded.longest_runaway_s is None  # never stopped
    assert unguarded.parents_completed <= unguarded.parents - 10 and unguarded.loss_usd > 100
    assert "fault: router restarted: child ids from n2-1 again" in events(unguarded)
    for guards in ("parent_reconciliation", "runtime"):
        r = run(sc, guards)
        assert r.runaway_executions == 0 and r.loss_usd == 0.0, guards
        assert first_blocks(r)["n2"] == "duplicate_order_id", guards
        assert set(first_blocks(r)) == {"n2"}, guards


def test_children_priced_through_the_touch_are_stopped_by_the_price_collar() -> None:
    sc = load(EXAMPLES / "off-price.toml")
    unguarded = run(sc, "none")
    assert unguarded.runaway_executions == 0 and unguarded.parents_completed == unguarded.parents
    assert unguarded.loss_usd > 5_000  # 8% over the touch on every n2 child after 30 s
    assert "fault: children priced 8% through the touch" in events(unguarded)
    for guards in ("order_size", "runtime"):
        r = run(sc, guards)
        assert first_blocks(r) == {"n2": "price_collar"}, guards
        assert r.loss_usd == 0.0, guards


def test_children_on_the_wrong_side_of_their_parent_are_refused_by_the_parent_side() -> None:
    """A router's sign bug sells for a customer's buy order: every parent is reported done,
    and the firm holds both legs. The Guard knows each parent's side (the replay registers
    it with any Guard), so the first wrong-side child is refused, whichever layer is on."""
    sc = load(EXAMPLES / "wrong-side.toml")
    unguarded = run(sc, "none")
    assert unguarded.runaway_executions == 0 and unguarded.parents_completed == unguarded.parents
    assert unguarded.peak_gross_usd > 250_000 and unguarded.loss_usd > 500  # the firm's legs
    assert "fault: children sent on the wrong side of their parents" in events(unguarded)
    for guards in ("order_size", "parent_reconciliation", "runtime"):
        r = run(sc, guards)
        assert first_blocks(r)["n2"] == "parent_side_mismatch", guards
        assert set(first_blocks(r)) == {"n2"}, guards
        assert r.peak_gross_usd == 0.0 and r.loss_usd == 0.0, guards


def test_a_bad_fault_or_flow_is_a_one_line_error_naming_the_key() -> None:
    text = (EXAMPLES / "frozen-feed.toml").read_text(encoding="utf-8")
    table = "[faults.n2.frozen_feed]   # its feed stops at 30 s and never comes back\nfrom_s = 30.0"
    for old, new, expected in (
        ("[faults.n2.frozen_feed]", "[faults.n9.frozen_feed]", "faults.n9: must be a node id"),
        ("from_s = 30.0\n\n[[flow]]", "from_s = 300.0\n\n[[flow]]", "faults.n2.frozen_feed.from_s"),
        (
            "from_s = 30.0\n\n[[flow]]",
            "from_s = 30.0\nuntil_s = 10.0\n\n[[flow]]",
            "faults.n2.frozen_feed.until_s: must be after",
        ),
        (
            "from_s = 30.0\n\n[[flow]]",
            "from_s = 30.0\nfor_s = 1.0\n\n[[flow]]",
            "faults.n2.frozen_feed.for_s: unknown key",
        ),
        ('symbol = "XYZ"\nside', 'symbol = "ABC"\nside', "flow[0].symbol: must name a symbol"),
        ('side = "sell"', 'side = "short"', "flow[0].side"),
        ("shares = 1_500_000", "shares = 0", "flow[0].shares: must be in 1..1e12"),
        ("to_s = 150.0", "to_s = 20.0", "flow[0].to_s: must be after from_s"),
        (
            table,
            "[faults.n2]",
            "faults.n2: must set at least one of",
        ),
        (
            table,
            "[faults.n2.off_price]\nfrom_s = 1.0\npct = 1.5",
            "faults.n2.off_price.pct: must be in (0, 1)",
        ),
        (
            table,
            "[faults.n2.reused_ids]\nfrom_s = nan",
            "faults.n2.reused_ids.from_s: must be a finite",
        ),
        (
            table,
            "[faults.n2.wrong_side]\nfrom_s = 30.0\nuntil_s = 30.0",
            "faults.n2.wrong_side.until_s: must be after wrong_side.from_s",
        ),
        (
            table,
            "[faults.n2.wrong_side]\nfrom_s = 10.0\nuntil_s = 301.0",
            "faults.n2.wrong_side.until_s: must be after wrong_side.from_s and at most",
        ),
        (
            table,
            "[faults.n2.wrong_side]\nfrom_s = -1.0",
            "faults.n2.wrong_side.from_s: must be in 0..scenario.duration_s",
        ),
        (
            table,
            "[faults.n2.wrong_side]\nfrom_s = 1.0\nside = 'sell'",
            "faults.n2.wrong_side.side: unknown key",
        ),
        (table, "[faults.n2.wrong_side]", "faults.n2.wrong_side.from_s"),
    ):
        assert old in text, old
        try:
            loads(text.replace(old, new, 1), "bad.toml")
        except ScenarioError as exc:
            problems = exc.problems
        else:
            raise AssertionError(f"{new!r} loaded")
        assert any(expected in q for q in problems), (expected, problems)
        assert all("\n" not in q for q in problems)


def test_a_bad_key_in_a_node_table_names_the_node() -> None:
    """msgspec names a table's key `[...]`: the error read `nodes[...].colour`."""
    text = (EXAMPLES / "one-symbol.toml").read_text(encoding="utf-8")
    old = "[nodes.n3]              # a hotfix build: its own flag table, same release id\n"
    assert old in text
    try:
        loads(text.replace(old, old + "colour = 1\n", 1), "bad.toml")
    except ScenarioError as exc:
        assert exc.problems == ["nodes.n3.colour: unknown key"]
    else:
        raise AssertionError("loaded")
