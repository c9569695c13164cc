"""Scenario loading: strict, and every error names the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from knightwatch.sim.layers import LayerError, resolve
from knightwatch.sim.replay import Replay
from knightwatch.sim.scenario import ScenarioError, load, loads

SMALL = Path(__file__).parents[2] / "examples" / "scenario-small.toml"


def small_text() -> str:
    return SMALL.read_text(encoding="utf-8")


def error_of(text: str) -> str:
    with pytest.raises(ScenarioError) as exc:
        loads(text, "t.toml")
    return str(exc.value)


def test_shipped_scenarios_load() -> None:
    k = load("knight-2012")
    assert k.fleet.nodes == 8 and k.parents.count == 212
    assert len(k.symbols(k.scenario.seed)) == 154
    assert load(SMALL).name == "small-runaway"


def test_unknown_key_is_named() -> None:
    msg = error_of(small_text().replace("[fleet]\n", "[fleet]\nnodez = 3\n"))
    assert "fleet.nodez: unknown key" in msg


def test_wrong_type_is_named() -> None:
    msg = error_of(small_text().replace("count = 24", 'count = "many"'))
    assert "parents.count" in msg


def test_out_of_range_values_are_named() -> None:
    text = (
        small_text().replace("count = 24", "count = 0").replace("impact_y = 2.0", "impact_y = -1")
    )
    msg = error_of(text)
    assert "parents.count: must be in 1..100000" in msg
    assert "market.impact_y: must be > 0" in msg


def test_missing_node_and_behaviour_are_named() -> None:
    text = small_text().replace('missed_deploy = ["n4"]', 'missed_deploy = ["n9"]')
    text = text.replace('"orders.rlp" = "power_peg"', '"orders.rlp" = "powerpeg"')
    msg = error_of(text)
    assert "fleet.missed_deploy[0]: must be a node id" in msg
    assert "releases.old.flags.orders.rlp: must be one of" in msg


def test_parent_sizes_must_be_whole_children() -> None:
    msg = error_of(small_text().replace("qty = [100, 200, 500]", "qty = [150]"))
    assert "parents.qty[0]: must be a positive multiple of parents.child_qty" in msg


def test_limits_table_is_checked_with_the_real_limits_rules() -> None:
    assert "limits.max_lossy: unknown key" in error_of(
        small_text().replace("max_loss = 50_000.0", "max_lossy = 1.0")
    )
    assert "limits.max_loss" in error_of(
        small_text().replace("max_loss = 50_000.0", "max_loss = -5.0")
    )


def test_missing_required_section_and_bad_toml() -> None:
    assert "deploy: required key is missing" in error_of(
        small_text().replace("[deploy]", "[deployment]")
    ) or "deployment: unknown key" in error_of(small_text().replace("[deploy]", "[deployment]"))
    assert "not valid TOML" in error_of("[scenario\n")


def test_missing_file_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="knight-2012"):
        load(tmp_path / "nope.toml")


def test_layer_names_are_checked() -> None:
    assert resolve("none") == ()
    assert len(resolve("all")) >= 8
    runtime = {layer.name for layer in resolve("runtime")}
    assert runtime == {layer.name for layer in resolve("all")} - {
        "attestation",
        "flag_schema",
        "rollout",
    }
    assert [layer.name for layer in resolve("rates,kill_switch")] == ["rates", "kill_switch"]
    with pytest.raises(LayerError, match="bogus"):
        resolve("rates,bogus")


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("count = 24", 'count = "24"', "parents.count"),  # numeric strings are not integers
        ("count = 24", "count = 24.0", "parents.count"),  # nor are 4.0-style floats
        ("nodes = 4", "nodes = 4.0", "fleet.nodes"),
        ('flag = "orders.rlp"', 'flag = "orders.other"', "deploy.flag: must be a flag some"),
        ('missed_deploy = ["n4"]', 'missed_deploy = ["n4", "n4"]', "lists a node twice"),
        ('previous = "old"', 'previous = "new"', "deploy.previous: must differ from deploy"),
    ],
)
def test_a_scenario_that_would_run_but_show_nothing_is_refused(
    old: str, new: str, needle: str
) -> None:
    assert old in small_text()
    assert needle in error_of(small_text().replace(old, new))


def test_node_overrides_are_checked_key_by_key() -> None:
    text = small_text() + (
        "\n[nodes.n9]\nconfig = { fill_check = false }\n"
        '\n[nodes.n2]\nrelease = "nope"\nflags = { "orders.rlp" = "bogus" }\n'
        "config = { colour = 1 }\n"
        '\n[nodes.n4]\nrelease = "old"\n'
    )
    msg = error_of(text)
    assert "nodes.n9: must be a node id n1..n4" in msg
    assert "nodes.n2.release: must name a release" in msg
    assert "nodes.n2.flags.orders.rlp: must be one of" in msg
    assert "nodes.n2.config.colour: unknown key" in msg
    assert "nodes.n4.release: conflicts with fleet.missed_deploy" in msg
    msg = error_of(small_text() + "\n[nodes.n2]\nconfig = { peg_rate_scale = 0.0 }\n")
    assert "nodes.n2.config.peg_rate_scale: must be in (0, 100]" in msg
    msg = error_of(small_text() + '\n[nodes.n2]\nconfig = { fill_check = "no" }\n')
    assert "nodes.n2.config.fill_check: Expected `bool`" in msg


def test_per_node_release_flags_and_config_describe_the_skew() -> None:
    text = small_text().replace('missed_deploy = ["n4"]', "missed_deploy = []") + (
        '\n[nodes.n1]\nrelease = "old"\n'
        '\n[nodes.n2]\nflags = { "orders.rlp" = "power_peg" }\n'
        "\n[nodes.n3]\nconfig = { fill_check = false, work_multiple = 2.0 }\n"
    )
    sc = loads(text, "t.toml")
    assert sc.node_release("n1").id == "old"
    assert sc.node_release("n2").id == "new" and sc.node_release("n2").flags["orders.rlp"] == (
        "power_peg"
    )
    assert sc.node_config("n3").fill_check is False and sc.node_config("n3").work_multiple == 2.0
    assert sc.node_config("n4") == sc.config
    assert sc.skewed_nodes() == ["n1", "n2", "n3"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("\n[ramp]\nstages = [{fraction = 0.5, hold_s = 1.0}]\n", "ramp.stages: the last stage"),
        ("\n[ramp]\nstages = [{fraction = 1.0, hold_s = -1}]\n", "ramp.stages[0].hold_s"),
        ("\n[ramp]\nspike_ratio = 2.0\n", "ramp.spike_ratio: must be in (0, 1]"),
        ('\n[ramp]\nspike_min_blocks = "20"\n', "ramp.spike_min_blocks"),
        ("\n[ramp]\nstage = []\n", "ramp.stage: unknown key"),
    ],
)
def test_the_resume_ramp_is_checked_field_by_field(extra: str, named: str) -> None:
    assert named in error_of(small_text() + extra)


def test_resume_after_must_fall_inside_the_window() -> None:
    text = small_text().replace("reaction_s = 40\n", "reaction_s = 40\nresume_after_s = 500\n")
    assert "timeline.resume_after_s: must be in 0..scenario.duration_s" in error_of(text)
    ok = loads(small_text().replace("reaction_s = 40\n", "reaction_s = 40\nresume_after_s = 5\n"))
    assert ok.timeline.resume_after_s == 5.0 and ok.timeline.resume_ramp


@pytest.mark.parametrize("value", ["inf", "1e12", "86400.5"])
def test_duration_must_be_finite_and_at_most_one_day(value: str) -> None:
    """`inf` passed `> 0` and `1e12` would step for ever: both are refused before any run."""
    msg = error_of(small_text().replace("duration_s = 120", f"duration_s = {value}"))
    assert "scenario.duration_s: must be a finite number of seconds in (0, 86400]" in msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("quiet_s = 2", "quiet_s = inf", "market.quiet_s: must be a finite number (got inf)"),
        ("impact_y = 2.0", "impact_y = 2.0\ntick = inf", "market.tick: must be a finite number"),
        ("price = 20.0", "price = inf", "universe.symbols[0].price: must be a finite number"),
        ("adv = 20_000_000", "adv = inf", "universe.symbols[0].adv: must be a finite number"),
        ("spread = 0.01", "spread = inf", "universe.symbols[0].spread: must be a finite number"),
        ("sample_s = 1", "sample_s = inf", "scenario.sample_s: must be a finite number"),
        ("notice_s = 20", "notice_s = inf", "timeline.notice_s: must be a finite number"),
        (
            "max_qty_multiple = 1.0",
            "max_qty_multiple = inf",
            "router.max_qty_multiple: must be a finite number",
        ),
        ("discount_y = 3.2", "discount_y = inf", "exit.discount_y: must be a finite number"),
    ],
)
def test_numbers_that_are_not_finite_are_named(old: str, new: str, named: str) -> None:
    """`inf` passed every `> 0` rule and the replay died in a traceback (`round(inf)` in
    the book, the router or the sample clock) or ran with no kill at all."""
    assert old in small_text()
    assert named in error_of(small_text().replace(old, new, 1))


def test_a_price_under_one_tick_is_named() -> None:
    """A tick larger than a price put the quote at 0: the first child an `InvalidOrder`."""
    text = small_text().replace("impact_y = 2.0", "impact_y = 2.0\ntick = 10.0")
    msg = error_of(text)
    assert "universe.symbols[9].price: must be at least one market.tick (got 3.5)" in msg
    assert "universe.symbols[4].price" not in msg  # 25.0: 2 ticks of 10.0


def test_a_strategy_no_order_can_carry_is_named() -> None:
    msg = error_of(small_text().replace('strategy = "router"', 'strategy = "desk/router"'))
    assert "fleet.strategy: must not contain '/'" in msg


def test_a_symbol_name_with_a_slash_is_named() -> None:
    msg = error_of(small_text().replace('name = "LIQ1"', 'name = "LIQ/1"'))
    assert "universe.symbols[0].name: must not contain '/'" in msg


def test_tiers_whose_generated_symbols_would_share_names_are_named() -> None:
    """Symbols are generated as <tier initial><index>: two tiers with one initial gave
    120 books 90 names, and the replay traded pairs of books as one symbol."""
    path = Path(__file__).parents[2] / "examples" / "scenarios" / "clean-day.toml"
    text = path.read_text(encoding="utf-8")
    msg = error_of(text.replace('name = "B-midcap"', 'name = "a-midcap"'))
    assert "universe.tiers[1].name: must not start with the letter of universe.tiers[0].name" in msg


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "9999-01-01T00:00:00Z"])
def test_an_open_the_clocks_cannot_hold_is_named(when: str) -> None:
    text = small_text().replace("open = 2024-03-01T09:30:00-05:00", f"open = {when}")
    assert "scenario.open: must be in 1971..2199" in error_of(text)


def test_a_sample_interval_longer_than_the_run_is_named() -> None:
    msg = error_of(small_text().replace("sample_s = 1", "sample_s = 1000"))
    assert "scenario.sample_s: must be <= scenario.duration_s" in msg


def test_a_deploy_flag_the_target_does_not_define_is_named() -> None:
    """Only the old build (or a node's hotfix table) knew the flag: the registry takes
    its meaning from the target, so every node refused the switch (schema_missing_flag)
    and the run showed nothing, with no layer on."""
    text = small_text().replace('flags = { "orders.rlp" = "rlp" }', "flags = {}")
    msg = error_of(text)
    assert "deploy.flag: must be a flag deploy.target (new) defines" in msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        # a $2e12 stock: the book walked 10^10 levels per child and the replay hung
        ("price = 20.0", "price = 2e12", "universe.symbols[0].price: must be at most 1e+09"),
        # one share moving the quote by a billion ticks: the same hang
        ("impact_y = 2.0", "impact_y = 2.0\ntick = 1e-9", "give a book whose first level"),
        # the book's depth divided by an underflowed 0.0: ZeroDivisionError
        ("sigma = 0.02\n", "sigma = 1e-300\n", "universe.symbols[0].sigma: sigma * price"),
        # a spread wider than the stock's price: a loss of $6.7e14 unguarded
        ("spread = 0.01\n", "spread = 1e9\n", "universe.symbols[0].spread: must be less than"),
    ],
)
def test_a_book_the_market_model_cannot_walk_is_named(old: str, new: str, named: str) -> None:
    assert old in small_text()
    assert named in error_of(small_text().replace(old, new, 1))


def test_a_tier_is_judged_on_the_thinnest_book_it_can_draw() -> None:
    path = Path(__file__).parents[2] / "examples" / "scenarios" / "clean-day.toml"
    text = path.read_text(encoding="utf-8").replace("adv = 300_000", "adv = 0.00001")
    assert "universe.tiers[2]: price, sigma, adv" in error_of(text)


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (
            '[releases.old]\nid = "old"',
            '[releases."o/ld"]\nid = "o/ld"',
            "releases.o/ld: 'o/ld' must be 1-128",
        ),
        ('"orders.rlp" = "power_peg"', '"orders rlp" = "power_peg"', "releases.old.flags.orders"),
        ('"orders.rlp" = "power_peg"', f'"{"x" * 200}" = "power_peg"', "must be a string of 1"),
    ],
)
def test_a_release_or_flag_id_a_signed_manifest_cannot_hold_is_named(
    old: str, new: str, named: str
) -> None:
    """The governance layers sign every release and build every flag table: a release id
    with a '/' or a flag id with a space ended the replay in a ReleaseInputError
    traceback once the attestation, flag_schema or rollout layer was on."""
    text = small_text().replace(old, new)
    if "o/ld" in new:
        text = text.replace('previous = "old"', 'previous = "o/ld"')
    assert text != small_text()
    assert named in error_of(text)


def test_a_node_flag_id_a_flag_table_cannot_hold_is_named() -> None:
    msg = error_of(small_text() + '\n[nodes.n2]\nflags = { "a b" = "power_peg" }\n')
    assert "nodes.n2.flags.a b: flag id 'a b' must be a string of 1..128" in msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('name = "LIQ1"', 'name = "LIQ\\t1"', "universe.symbols[0].name: must not contain"),
        ('name = "LIQ1"', 'name = "LIQ\\u00001"', "universe.symbols[0].name: must not contain"),
        ('strategy = "router"', 'strategy = "rou\\tter"', "fleet.strategy: must not start or"),
        ('strategy = "router"', 'strategy = " router"', "fleet.strategy: must not start or"),
    ],
)
def test_a_symbol_or_strategy_the_guard_refuses_is_named(old: str, new: str, named: str) -> None:
    """A symbol or strategy with a control character (or padded) passed the loader and
    the Guard refused every child of it (`invalid_order`): the guarded runs showed every
    layer "containing" a scenario that never traded, the unguarded run traded it."""
    assert old in small_text()
    assert named in error_of(small_text().replace(old, new, 1))


def test_a_tier_whose_generated_symbols_the_guard_refuses_is_named() -> None:
    path = Path(__file__).parents[2] / "examples" / "scenarios" / "clean-day.toml"
    text = path.read_text(encoding="utf-8")
    msg = error_of(text.replace('name = "B-midcap"', 'name = " midcap"'))
    assert "universe.tiers[1].name: must not start with '/', a space or a control" in msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        # every parent is drawn before the open: the replay ran out of memory, never stepping
        ("count = 24", "count = 1_000_000_000", "parents.count: must be in 1..100000"),
        # each error is kept and logged by the node's runtime: 18 GB and climbing
        (
            "[fleet]\n",
            "[fleet]\npre_open_errors = { n4 = 1_000_000_000_000_000_000 }\n",
            "fleet.pre_open_errors.n4: must be in 0..10000",
        ),
        # the Guard registers no parent over 1e15: a ValueError traceback with any Guard layer
        ("child_qty = 100", "child_qty = 1_000_000_000_000_000_000", "parents.child_qty: must"),
        ("qty = [100, 200, 500]", "qty = [100, 1_000_000_000_000_000_000]", "parents.qty[1]"),
        # the check listed every node id first: a MemoryError before any rule was read
        ("nodes = 4", "nodes = 1_000_000_000_000_000_000", "fleet.nodes: must be in 1..256"),
        # each size was checked as a multiple of it: ZeroDivisionError
        ("child_qty = 100", "child_qty = 0", "parents.child_qty: must be in 1..1e+15 (an order"),
    ],
)
def test_counts_and_sizes_the_replay_cannot_hold_are_named(old: str, new: str, named: str) -> None:
    assert old in small_text()
    msg = error_of(small_text().replace(old, new, 1))
    assert named in msg
    problems = msg.splitlines()[1:]  # only the value itself: nothing it makes look wrong
    assert len(problems) == 1, msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("quiet_s = 2", "quiet_s = 1e300", "market.quiet_s: must be in 0..86400"),
        ("notice_s = 20", "notice_s = 1e300", "timeline.notice_s: must be in 0..86400"),
        ("reaction_s = 40", "reaction_s = 1e300", "timeline.reaction_s: must be in 0..86400"),
    ],
)
def test_seconds_the_replay_clock_cannot_hold_are_named(old: str, new: str, named: str) -> None:
    """Finite, so loaded: the run then ended in an OverflowError traceback when it turned
    them into clock nanoseconds (every step for quiet_s, at the planned kill for the rest)."""
    assert old in small_text()
    msg = error_of(small_text().replace(old, new, 1))
    assert named in msg and len(msg.splitlines()) == 2, msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (
            '[releases.old]\nid = "old"',
            '[releases.old]\nid = "old"\ncolour = 1',
            "releases.old.colour: unknown key",
        ),
        ('[releases.old]\nid = "old"', "[releases.old]\nid = 5", "releases.old.id: Expected `str`"),
        (
            '"orders.rlp" = "power_peg"',
            '"orders.rlp" = 1',
            "releases.old.flags.orders.rlp: Expected `str`, got `int`",
        ),
        (
            'strategy = "router"',
            'strategy = "router"\npre_open_errors = { n2 = 1.5 }',
            "fleet.pre_open_errors.n2: Expected `int`, got `float`",
        ),
        (
            'strategy = "router"',
            'strategy = "router"\npre_open_errors = { n2 = true }',
            "fleet.pre_open_errors.n2: Expected `int`, got `bool`",
        ),
    ],
)
def test_a_problem_inside_a_keyed_table_names_its_key(old: str, new: str, named: str) -> None:
    """msgspec names every key of a keyed table `[...]`: `releases[...].colour: unknown key`
    did not say which release had the typo, nor which node's error count was a float."""
    assert old in small_text()
    msg = error_of(small_text().replace(old, new, 1))
    assert named in msg and "[...]" not in msg, msg


def test_a_node_flag_of_the_wrong_type_names_the_node_and_flag() -> None:
    msg = error_of(small_text() + '\n[nodes.n2]\nflags = { "orders.rlp" = 1 }\n')
    assert "nodes.n2.flags.orders.rlp: Expected `str`, got `int`" in msg and "[...]" not in msg


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        # a switch or a rollback at the stop changes nothing
        ('flag = "orders.rlp"', 'flag = "orders.rlp"\nflag_on_s = 120', "deploy.flag_on_s: must"),
        ("rollback_s = 30", "rollback_s = 120", "timeline.rollback_s: must be in"),
    ],
)
def test_a_switch_or_rollback_at_the_stop_is_refused(old: str, new: str, named: str) -> None:
    assert old in small_text()
    msg = error_of(small_text().replace(old, new, 1))
    assert named in msg and len(msg.splitlines()) == 2, msg


def test_a_kill_or_resume_after_the_stop_still_loads() -> None:
    """A person too slow to kill within the run is a scenario worth running (what the
    guards do before anyone could react), and so is the default timeline (a kill 300 s
    after the runaway) in a run shorter than that: neither is refused."""
    text = small_text().replace("notice_s = 20", "notice_s = 200")  # 200 + 40 > 120
    assert loads(text).timeline.notice_s == 200.0
    text = small_text().replace("reaction_s = 40\n", "reaction_s = 40\nresume_after_s = 100\n")
    assert loads(text).timeline.resume_after_s == 100.0


def test_an_empty_node_override_is_refused() -> None:
    """`[nodes.n2]` with nothing in it ran n2 as every other node, silently."""
    msg = error_of(small_text() + "\n[nodes.n2]\n")
    assert "nodes.n2: must set at least one of release, flags, config" in msg


@pytest.mark.parametrize(
    "key", ["executions", "symbols", "shares", "net_long_symbols", "symbols_moved_over_5pct"]
)
def test_a_negative_record_count_is_refused(key: str) -> None:
    """The report holds the replay to the record as a ratio: -5 executions gave -0.0 ratios."""
    msg = error_of(small_text() + f"\n[record]\n{key} = -5\n")
    assert f"record.{key}: must be >= 0 (a count) (got -5)" in msg


@pytest.mark.parametrize("value", ["1e308", "101.0"])
def test_a_router_quantity_multiple_the_router_cannot_count_is_named(value: str) -> None:
    """The router counts `int(qty * max_qty_multiple)` shares: 1e308 was loaded and the
    run ended in an OverflowError at the first parent."""
    msg = error_of(small_text().replace("max_qty_multiple = 1.0", f"max_qty_multiple = {value}"))
    assert "router.max_qty_multiple: must be in (0, 100]" in msg, msg
    assert loads(small_text().replace("max_qty_multiple = 1.0", "max_qty_multiple = 100.0"))


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("a\\u001b[31mRED", "must not contain control characters"),  # reached the terminal
        ("two\\nlines", "must not contain control characters"),  # forged a second line
        ("drill@5%", "must not end in @N%"),  # full limits read as a 5% ramp stage
        ("x" * 122, "must be at most 121 characters"),
    ],
)
def test_a_scenario_name_the_limits_version_cannot_carry_is_named(name: str, rule: str) -> None:
    """The name labels the replay's limits (`replay:<name>`) in every Guard decision and
    heads the report: it was taken as written, an escape sequence colouring the terminal."""
    text = small_text().replace('name = "small-runaway"', f'name = "{name}"', 1)
    msg = error_of(text)
    assert f"scenario.name: {rule}" in msg and len(msg.splitlines()) == 2, msg
    assert "\x1b" not in msg and loads(text.replace(name, "knight@2012 drill", 1))


def test_a_record_source_with_a_control_character_is_named() -> None:
    """`[record] source` is the title of the report's table against the record."""
    msg = error_of(small_text() + '\n[record]\nsource = "SEC\\u001b[2J"\n')
    assert "record.source: must not contain a control character" in msg, msg


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("gates = []", "rollout.gates: at least one health gate is required"),
        (
            'gates = [{ metric = "order_rat", max = 3.0 }]',
            "rollout.gates[0].metric: must be a metric the supervisor reports",
        ),
        (
            'gates = [{ metric = "reject_ratio", max = 0.05 }, { metric = "", min = 1.0 }]',
            "rollout.gates[1].metric: must be a metric the supervisor reports",
        ),
    ],
)
def test_a_rollout_plan_the_rollout_layer_cannot_judge_with_is_named(
    table: str, named: str
) -> None:
    """With no gate the rollout layer refused to start, and with a gate on a metric nobody
    reports it aborted at its first stage: either way `--guards rollout` read "no runaway"
    on a runaway scenario, a rollout that never judged anything shown as containing it."""
    msg = error_of(small_text() + f"\n[rollout]\n{table}\n")
    assert named in msg and len(msg.splitlines()) == 2, msg


def test_every_metric_a_gate_may_name_is_one_the_supervisor_reports() -> None:
    """The shipped plan's gates, and gates on the rates, ratios and evidence, load."""
    from knightwatch.flags.rollout import RolloutPlan
    from knightwatch.sim.scenario import GATE_METRICS

    assert {g.metric for g in RolloutPlan().gates} <= GATE_METRICS
    gates = ", ".join(
        f'{{ metric = "{m}", max = 3.0 }}'
        for m in ("order_rate_ratio", "accepted_order_rate", "pnl_deviation", "orders", "halted")
    )
    assert len(loads(small_text() + f"\n[rollout]\ngates = [{gates}]\n").rollout.gates) == 5


def test_a_flow_starting_before_the_open_names_its_start() -> None:
    """`from_s = -1` was reported as a bad `to_s` (the value the user had right)."""
    flow = '\n[[flow]]\nsymbol = "LIQ1"\nside = "sell"\nshares = 1000\nfrom_s = -1\nto_s = 5\n'
    msg = error_of(small_text() + flow)
    assert "flow[0].from_s: must be in 0..scenario.duration_s" in msg, msg
    assert "flow[0].to_s" not in msg


@pytest.mark.parametrize("value", ["1e308", "101.0"])
def test_a_block_discount_beyond_the_bound_is_named(value: str) -> None:
    """`discount_y = 1e308` is finite and >= 0: the short's buy-back overflowed to `inf`,
    the replay printed a loss of "$infB" and `--json` wrote `"loss_usd": null`."""
    msg = error_of(small_text().replace("discount_y = 3.2", f"discount_y = {value}"))
    assert "exit.discount_y: must be in 0..100" in msg


def test_the_largest_block_discount_gives_a_finite_loss() -> None:
    sc = loads(small_text().replace("discount_y = 3.2", "discount_y = 100.0"), "t.toml")
    r = Replay(sc, ()).run()
    assert r.net_short_symbols > 0 and math.isfinite(r.loss_usd)
    assert r.loss_usd > Replay(loads(small_text(), "t.toml"), ()).run().loss_usd
