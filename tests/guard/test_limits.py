from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.decision import RejectReason
from knightwatch.guard import Guard
from knightwatch.guard.lanes import Effective
from knightwatch.limits import (
    Limits,
    LimitsError,
    Override,
    loosened,
    ramp_percent,
    scaled,
    scaled_percent,
)
from knightwatch.order import Order, Side

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe_and_every_rule_is_on() -> None:
    lim = Limits()
    eff = Effective(lim, "any", "ANY")
    for rule in (
        "order_size",
        "price_collar",
        "rates",
        "execution_throttle",
        "position",
        "exposure",
        "turnover",
        "cancel_fill_ratio",
        "loss",
        "audit",
    ):
        assert rule in eff.rules
    assert lim.require_reference_price and lim.require_registered_parent


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"max_order_qty": -1}, "max_order_qty: must be >= 1"),
        ({"max_order_qty": 1.5}, "max_order_qty: must be an integer"),
        ({"max_order_qty": True}, "max_order_qty: must be an integer, not a boolean"),
        ({"max_loss": float("nan")}, "max_loss: must be finite"),
        ({"max_loss": -1.0}, "max_loss: must be > 0"),
        ({"price_collar_pct": 1.5}, "price_collar_pct: must be <= 1"),
        ({"require_reference_price": 1}, "require_reference_price: must be true or false"),
        ({"allowed_symbols": ["IBM", ""]}, "allowed_symbols: must be a list"),
    ],
)
def test_bad_keyword_values_name_key_and_rule(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(LimitsError) as err:
        Limits(**kw)  # type: ignore[arg-type]
    assert needle in str(err.value)


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(TypeError):
        Limits(max_qty=5)  # type: ignore[call-arg]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "limits.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[fleet]\nmax_qty = 5\n", "fleet.max_qty: unknown key"),
        ("[fleet]\nmax_order_qty = 'lots'\n", "fleet.max_order_qty: must be an integer"),
        ("[fleet]\nmax_order_qty = -3\n", "fleet.max_order_qty: must be >= 1"),
        ("[fleet]\nmax_loss = nan\n", "fleet.max_loss: must be finite"),
        ("[fleet]\nmax_loss = inf\n", "fleet.max_loss: must be finite"),
        ("[strategy.rlp]\nmax_order_qty = 0\n", "strategy.rlp.max_order_qty: must be >= 1"),
        ("[strategy.rlp]\nbogus = 1\n", "strategy.rlp.bogus: unknown key"),
        ("[strategy.rlp]\ntick_size = 0.05\n", "only a symbol override may set tick_size"),
        # a lot or tick no amount can be valued with: notional rounded to nothing (the
        # notional and exposure checks off), infinite positions, or a collar of zero ticks
        ("[symbol.BTC]\nlot_size = 1e-320\n", "symbol.BTC.lot_size: must be >= 1e-12"),
        ("[symbol.BTC]\nlot_size = 1e300\n", "symbol.BTC.lot_size: must be <= 1e+09"),
        ("[symbol.BTC]\ntick_size = 5e-324\n", "symbol.BTC.tick_size: must be >= 1e-12"),
        ("[fleet]\ntick_size = 1e-300\n", "fleet.tick_size: must be >= 1e-12"),
        ("[fleet]\ntick_size = 1e13\n", "fleet.tick_size: must be <= 1e+12"),
        ("[venue]\nx = 1\n", "venue: unknown key"),
        ("fleet = 3\n", "fleet: must be a table"),
        ("[fleet\n", "not valid TOML"),
    ],
)
def test_toml_errors_name_key_and_rule(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(write(tmp_path, toml))
    assert needle in str(err.value)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    p = write(tmp_path, "[fleet]\nmax_order_qty = -1\nmax_loss = -2.0\nnope = 1\n")
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(p)
    assert len(err.value.problems) == 3


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LimitsError, match="no such file"):
        Limits.from_toml(tmp_path / "nope.toml")


def test_stricter_override_wins_when_strategy_and_symbol_both_set_a_key() -> None:
    lim = Limits(
        max_order_qty=10_000,
        strategy={"rlp": Override(max_order_qty=2_000)},
        symbol={"IBM": Override(max_order_qty=5_000, max_position_qty=7)},
    )
    assert Effective(lim, "rlp", "IBM").max_order_qty == 2_000
    assert Effective(lim, "mm", "IBM").max_order_qty == 5_000
    assert Effective(lim, "mm", "AAPL").max_order_qty == 10_000
    assert Effective(lim, "rlp", "IBM").max_position_qty == 7


def test_shipped_example_is_valid_and_sized_for_the_replay() -> None:
    lim = Limits.from_toml(ROOT / "examples" / "limits.toml")
    assert lim.version == "knight-2012-replay-v1"
    assert Effective(lim, "rlp", "EBR").max_order_qty == 2_000
    replay = tomllib.loads((ROOT / "src/knightwatch/sim/scenarios/knight-2012.toml").read_text())[
        "limits"
    ]
    for key, value in replay.items():
        assert getattr(lim, key) == value, key


def test_cli_limits_check(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["limits", "check", str(ROOT / "examples" / "limits.toml")])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    bad = runner.invoke(app, ["limits", "check", str(write(tmp_path, "[fleet]\nmax_loss = -1\n"))])
    assert bad.exit_code == 1
    assert "fleet.max_loss: must be > 0" in bad.output
    assert "Traceback" not in bad.output


def test_limits_are_frozen_all_the_way_down() -> None:
    lim = Limits(strategy={"rlp": Override(max_order_qty=5)})
    with pytest.raises(AttributeError):
        lim.max_order_qty = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        lim.strategy["mm"] = Override(max_order_qty=1)  # type: ignore[index]


def test_readme_check_table_is_the_rule_table() -> None:
    """Each README row lists exactly the keys and reason codes of its RULE_GROUPS entries."""
    import re
    from pathlib import Path

    from knightwatch.decision import GATEWAY_REASONS, RejectReason
    from knightwatch.limits import RULE_GROUPS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rows: dict[int, tuple[set[str], set[str]]] = {}
    for line in readme.splitlines():
        m = re.match(r"\| (\d+) \| [^|]+ \| ([^|]+) \| ([^|]+) \|$", line)
        if m:
            keys = set(re.findall(r"`([a-z_]+)`", m[2])) - {"halt", "resume"}
            rows[int(m[1])] = (keys, set(re.findall(r"`([a-z_]+)`", m[3])))
    want: dict[int, tuple[set[str], set[str]]] = {}
    for g in RULE_GROUPS:
        keys, reasons = want.setdefault(g.row, (set(), set()))
        keys.update(g.keys)
        reasons.update(r.value for r in g.reasons)
    assert rows == want
    guard_reasons = set(RejectReason) - {RejectReason.OK} - GATEWAY_REASONS
    assert {r for g in RULE_GROUPS for r in g.reasons} == guard_reasons


@given(
    fraction=st.floats(min_value=0.01, max_value=1.0),
    rate=st.integers(min_value=1, max_value=100_000),
    gross=st.floats(min_value=1.0, max_value=1e9),
)
def test_scaled_limits_are_never_looser_and_the_way_back_is_a_raise(
    fraction: float, rate: int, gross: float
) -> None:
    base = Limits(max_orders_per_s_node=rate, max_gross_exposure=gross)
    tighter = scaled(base, fraction)
    assert loosened(base, tighter) == []
    assert loosened(base, base) == []
    back = loosened(tighter, base)
    assert ("max_gross_exposure" in " ".join(back)) == (tighter.max_gross_exposure < gross)


def test_loosened_names_every_way_limits_allow_more() -> None:
    old = Limits(
        allowed_symbols=frozenset({"AAPL"}),
        restricted_symbols=frozenset({"GME"}),
        strategy={"mm": Override(max_orders_per_s=10)},
    )
    new = Limits(
        max_loss=None,
        require_registered_parent=False,
        execution_window_s=0.5,
        allowed_symbols=frozenset({"AAPL", "TSLA"}),
    )
    raised = loosened(old, new)
    assert "max_loss 250000.0 -> None" in raised
    assert "require_registered_parent true -> false" in raised
    assert "execution_window_s 1.0 -> 0.5" in raised
    assert "allowed_symbols: added TSLA" in raised
    assert "restricted_symbols: lifted GME" in raised
    assert "strategy.mm.max_orders_per_s 10 -> 200" in raised  # the override is gone
    assert loosened(new, old) == []  # every change the other way tightens


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("version = 12\n", "limits.toml: version: must be a non-empty string (got 12)"),
        (f"version = '{'v' * 129}'\n", "limits.toml: version: must be at most 128 characters"),
        ('[symbol.""]\nmax_order_qty = 5\n', "limits.toml: symbol.'': the name must not be empty"),
        ('[strategy." rlp"]\nmax_order_qty = 5\n', "strategy.' rlp': the name must not start"),
    ],
)
def test_every_file_problem_names_the_file_and_override_names_are_real(
    tmp_path: Path, toml: str, needle: str
) -> None:
    """`version` was checked only after the file's name was gone; an empty symbol name was
    an override that could never match an order (it did nothing, silently)."""
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(write(tmp_path, toml))
    assert all(p.startswith(f"{tmp_path / 'limits.toml'}: ") for p in err.value.problems)
    assert any(needle in p for p in err.value.problems), err.value.problems
    assert Limits.from_toml(write(tmp_path, f"version = '{'v' * 128}'\n")).version == "v" * 128


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (
            '[fleet]\nrestricted_symbols = ["GME", " AMC"]\n',
            "symbol ' AMC': the name must not start",
        ),
        ('[fleet]\nrestricted_symbols = ["GME\\t"]\n', "symbol 'GME\\t': the name must not start"),
        ('[fleet]\nallowed_symbols = ["IB\\u0000M"]\n', "must not contain control characters"),
        (f'[fleet]\nrestricted_symbols = ["{"S" * 65}"]\n', "must be at most 64 characters"),
        ('[symbol."IB\\u0007M"]\nmax_order_qty = 5\n', "must not contain control characters"),
        (f'[symbol."{"S" * 65}"]\nmax_order_qty = 5\n', "must be at most 64 characters"),
        (f'[strategy."{"s" * 65}"]\nmax_order_qty = 5\n', "must be at most 64 characters"),
        (
            '[strategy."mm/2"]\nmax_order_qty = 5\n',
            "strategy.'mm/2': the name must not contain '/'",
        ),
    ],
)
def test_a_name_no_order_can_carry_is_refused(tmp_path: Path, toml: str, needle: str) -> None:
    """A restricted symbol, or an override, under a name no order can match would do
    nothing, silently: the symbol stays tradeable, the override never applies."""
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(write(tmp_path, 'version = "v1"\n' + toml))
    assert any(needle in p for p in err.value.problems), err.value.problems


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=70))
def test_every_restricted_symbol_the_limits_take_restricts_an_order(name: str) -> None:
    """Taken means enforced: an order for exactly that symbol can exist and is refused."""
    try:
        limits = Limits(restricted_symbols=frozenset({name}), symbol={name: Override()})
    except LimitsError:
        return
    g = Guard(limits, node="n1")
    g.arm()
    decision = g.check(Order("o1", "s", name, Side.BUY, 1, 1.0))
    assert decision.reason is RejectReason.SYMBOL_RESTRICTED


def test_an_override_for_an_empty_name_is_refused_in_code_too() -> None:
    with pytest.raises(LimitsError, match=r"symbol\.'': the name must not be empty"):
        Limits(symbol={"": Override(max_order_qty=5)})


@given(st.floats(min_value=0.001, max_value=1.0))
def test_a_scaled_version_names_the_percent_a_ramp_reads_back(fraction: float) -> None:
    """A ramp judges a node by the percent its limits version names (`scaled_percent`):
    read back, it is the stage's own (`ramp_percent`), and an unscaled version is 100."""
    version = scaled(Limits(version="desk"), fraction).version
    assert scaled_percent(version) == ramp_percent(fraction)
    assert scaled_percent("desk") == 100 == scaled_percent("desk@x%")


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        ("desk@1%", "version: must not end in @N% (reserved"),
        ("desk@10%@100%", "version: must not end in @N%"),
        ("v1\\nBLOCK_ORDER forged", "version: must not contain control characters"),
        ("v1\\u001b[2J", "version: must not contain control characters"),
        (" v1", "version: must not start or end with whitespace"),
        ("v1\\t", "version: must not start or end with whitespace"),
    ],
)
def test_a_version_that_forges_a_ramp_stage_or_a_line_is_refused(
    tmp_path: Path, version: str, needle: str
) -> None:
    """A file's version "desk@1%" read as a node already at 1% of its limits, so the ramp's
    check that every node applied a stage passed for a node trading at full limits; a
    version with a newline or an escape sequence went into every log line and onto the
    operator's terminal as written."""
    path = write(tmp_path, f'version = "{version}"\n[fleet]\nmax_order_qty = 5\n')
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(path)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}: ") and needle in problem, problem
    result = CliRunner().invoke(app, ["limits", "check", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 1 and "\x1b" not in result.output, result.output


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=130))
def test_every_version_the_loader_takes_is_one_label_a_ramp_reads_as_unscaled(
    version: str,
) -> None:
    try:
        limits = Limits.from_mapping({"version": version})
    except LimitsError:
        return
    assert limits.version == version.strip() and version.isprintable()
    assert scaled_percent(limits.version) == 100


def test_limits_check_says_each_problem_on_one_line(tmp_path: Path) -> None:
    """Each problem (file, key, rule, value) was wrapped at the terminal's width, so the
    line naming the key did not say the rule or the value it broke."""
    path = write(
        tmp_path,
        'version = "v1"\n[fleet]\nmax_loss = nan\nmax_order_qty = -5\n'
        "[strategy.rlp]\nmax_orders_per_s = 99999999999999999999\n",
    )
    result = CliRunner().invoke(app, ["limits", "check", str(path)], env={"COLUMNS": "60"})
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    for key, rule in (
        ("fleet.max_loss", "must be finite (not NaN or infinity) (got nan)"),
        ("fleet.max_order_qty", "must be >= 1 (got -5)"),
        ("strategy.rlp.max_orders_per_s", "(got 99999999999999999999)"),
    ):
        (line,) = [line for line in lines if key in line]
        assert str(path) in line and rule in line, result.output


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("", "x\\u001b[2Jy\\nforged: valid"),
        ("[fleet]\n", "max_order_qty\\nfleet.max_loss: must be > 0"),
        ("[strategy.rlp]\n", "\\u001b]0;pwned\\u0007"),
        ("[symbol.IBM]\n", "k" * 100_000),
    ],
    ids=["top", "fleet", "strategy", "symbol"],
)
def test_an_unknown_key_is_named_on_one_line_quoted_and_cut(
    tmp_path: Path, where: str, key: str
) -> None:
    """An unknown key was echoed as written: a newline in it forged a second problem line,
    an escape sequence reached the operator's terminal, a 100 KB key was repeated whole."""
    path = write(tmp_path, f'version = "v1"\n{where}"{key}" = 1\n')
    with pytest.raises(LimitsError) as err:
        Limits.from_toml(path)
    (problem,) = err.value.problems
    assert "unknown key" in problem and problem.isprintable() and len(problem) < 1000, problem
    result = CliRunner().invoke(app, ["limits", "check", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 1 and "\x1b" not in result.output, result.output
    assert len(result.output.splitlines()) == 2 and len(result.output) < 1000, result.output
