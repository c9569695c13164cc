"""An empty scope value never widens a command to the whole fleet."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.options import OptionError, check_output, node_list, scope_of, shown
from knightwatch.state import Scope

runner = CliRunner()
# A URL nothing listens on: a command that got past its options would fail differently.
NOWHERE = "nats://127.0.0.1:1"


@pytest.mark.parametrize("blank", ["", " ", "\t"])
@pytest.mark.parametrize("option", ["node", "strategy", "symbol"])
def test_a_blank_scope_value_is_an_error_naming_the_option(blank: str, option: str) -> None:
    kw: dict[str, str | None] = {"node": None, "strategy": None, "symbol": None, option: blank}
    with pytest.raises(OptionError, match=f"--{option}: empty value"):
        scope_of(kw["node"], kw["strategy"], kw["symbol"])


def test_only_no_option_at_all_means_the_fleet() -> None:
    assert scope_of(None, None, None) == (Scope.FLEET, "fleet")
    assert scope_of("n1", None, None) == (Scope.NODE, "n1")
    assert scope_of(None, "rlp", "IBM") == (Scope.STRATEGY_SYMBOL, "rlp/IBM")
    with pytest.raises(OptionError, match="stands alone"):
        scope_of("n1", "rlp", None)
    with pytest.raises(OptionError, match="whitespace"):
        scope_of(" n1", None, None)


@pytest.mark.parametrize(
    "args",
    [
        ["kill", "--reason", "r", "--symbol", ""],
        ["kill", "--reason", "r", "--node", " "],
        ["resume", "--reason", "r", "--node", ""],
        ["resume", "--reason", "r", "--strategy", ""],
        ["status", "--node", ""],
    ],
)
def test_fleet_commands_refuse_a_blank_scope_before_connecting(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--nats-url", NOWHERE])
    assert result.exit_code == 2, result.output
    assert "empty value" in result.output
    assert "Traceback" not in result.output


def test_node_lists_refuse_empty_names() -> None:
    assert node_list("--nodes", None) == ()
    assert node_list("--nodes", "n1, n2") == ("n1", "n2")
    for bad in ("", " ", "n1,", ",", "n1,,n2"):
        with pytest.raises(OptionError, match="--nodes: empty node name"):
            node_list("--nodes", bad)


@pytest.mark.parametrize("value", ["n1,n2\n2026-12-06 CRITICAL FLAG_SET", "n1,\x1b[2Jn2", "n\x00"])
def test_node_lists_refuse_control_characters_as_scope_values_do(value: str) -> None:
    """A node name goes into the signed request, the flag state and every node's log: a
    newline or an escape sequence in one forges a line there, as in `--node`."""
    with pytest.raises(OptionError, match="--nodes: control characters"):
        node_list("--nodes", value)


def test_flags_set_refuses_an_empty_node_list() -> None:
    result = runner.invoke(
        app, ["flags", "set", "x.y", "on", "--reason", "r", "--nodes", "", "--nats-url", NOWHERE]
    )
    assert result.exit_code == 1
    assert "--nodes: empty node name" in result.output


def test_a_huge_option_value_is_echoed_cut() -> None:
    result = runner.invoke(app, ["kill", "--reason", "r", "--node", " " + "x" * 10_000_000])
    assert result.exit_code == 2
    assert len(result.output) < 500 and "characters, cut" in result.output


def test_check_output_refuses_a_directory_for_a_file_and_a_file_for_a_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OptionError, match=r"--json .*: is a directory; --json must name a file"):
        check_output("--json", tmp_path)
    with pytest.raises(OptionError, match=r"--report .*: is a file; --report must name a dir"):
        check_output("--report", tmp_path / "afile", directory=True)
    with pytest.raises(OptionError, match="afile is not a directory"):
        check_output("--json", tmp_path / "afile" / "deeper" / "s.json")
    check_output("--json", tmp_path / "new" / "s.json")  # created later: fine
    check_output("--report", tmp_path / "new", directory=True)


@pytest.mark.parametrize("value", ["x\ny INJECT HALT node=n9", "A\x00", "tab\there"])
def test_a_scope_value_with_control_characters_is_an_error(value: str) -> None:
    with pytest.raises(OptionError, match="--symbol: control characters"):
        scope_of(None, None, value)


def test_a_strategy_with_a_slash_is_an_error_as_its_halt_key_would_name_another_pair() -> None:
    """ "mm" + "BTC/USDT" and "mm/BTC" + "USDT" would share the halt key "mm/BTC/USDT"."""
    assert scope_of(None, "mm", "BTC/USDT") == (Scope.STRATEGY_SYMBOL, "mm/BTC/USDT")
    with pytest.raises(OptionError, match="--strategy: must not contain '/'"):
        scope_of(None, "mm/BTC", "USDT")


def test_shown_escapes_what_a_terminal_would_act_on_and_keeps_the_rest() -> None:
    assert shown(Path("/tmp/desk [v1]/é.toml")) == "/tmp/desk [v1]/é.toml"
    assert shown("a\x1b[2J\rb\nc\u202ed\udcff") == "a\\x1b[2J\\rb\\nc\\u202ed\\udcff"


@pytest.mark.parametrize("node", ["ｎ1", "n１", "ո1", "n1.api", "n 1"])
def test_a_node_id_no_roster_name_can_be_is_refused_naming_the_rule(node: str) -> None:
    """`kill --node ｎ1` (a fullwidth n) was sent and stored as a kill of a node that cannot
    exist, while n1 traded on: refused before connecting, as the console refuses it."""
    with pytest.raises(OptionError, match=r"--node: a node id is .*no node can have it"):
        scope_of(node, None, None)
    assert scope_of("n1", None, None) == (Scope.NODE, "n1")
