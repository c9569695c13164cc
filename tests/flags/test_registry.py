"""Registry: canonical meaning hash, strict loading that names the key, tombstones."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from knightwatch.flags.definition import FlagDefinition, Lifecycle, definition_hash
from knightwatch.flags.registry import FlagRegistry, RegistryError, parse_registry

FIXTURES = Path(__file__).parent / "fixtures"

ENTRY = """\
version: 1
flags:
  - id: trading.smars.rlp_enabled
    description: RLP routing
    owner: smars-team
    created: 2012-07-01
    expires: 2012-12-31
    lifecycle: active
    safe_default: false
    trading_behaviour: true
"""


def test_hash_covers_meaning_not_bookkeeping() -> None:
    base = definition_hash("a.b", "route to RLP", False, True)
    assert base == definition_hash("a.b", "  route   to\nRLP ", False, True)
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    assert base != definition_hash("a.b", "Power Peg", False, True)
    assert base != definition_hash("a.b", "route to RLP", True, True)
    assert base != definition_hash("a.b", "route to RLP", False, False)
    assert base != definition_hash("a.c", "route to RLP", False, True)
    one = FlagDefinition("a.b", "route to RLP", False, True, Lifecycle.ACTIVE, date(2012, 1, 1))
    other_owner = FlagDefinition(
        "a.b", "route to RLP", False, True, Lifecycle.RETIRED, date(2013, 1, 1), owner="x"
    )
    assert one.meaning_hash == other_owner.meaning_hash == base


def test_clean_fixture_loads_with_lines_and_schema() -> None:
    registry = FlagRegistry.load(FIXTURES / "clean_repo" / "feature-flags.yaml")
    assert registry.document.lines == (3, 17, 25)
    assert set(registry.schema()) == {"trading.smars.rlp_enabled", "ops.dashboard.dark_mode"}
    admission = registry.admission_schema()
    assert admission.retired == frozenset({"trading.smars.power_peg"})
    assert set(admission.definitions) == {f.id for f in registry.flags()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ENTRY.replace("owner:", "ownr:"), "unknown field `ownr`"),
        (
            ENTRY.replace("safe_default: false", "safe_default: maybe"),
            "flag 'trading.smars.rlp_enabled': Expected `bool`, got `str`"
            " - at `$.flags[0].safe_default`",
        ),
        (ENTRY.replace("lifecycle: active", "lifecycle: live"), "`$.flags[0].lifecycle`"),
        (ENTRY.replace("version: 1", "version: 2"), "`version` must be 1, got 2"),
        (ENTRY + "    owner: other\n", "duplicate key 'owner'"),
        ("- just a list\n", "top level must be a mapping"),
        (ENTRY + "    definition_hash: 1234\n", "quote hashes"),
        ("flags: [\n", "not valid YAML"),
        (
            ENTRY.replace("description: RLP routing", "description: ''"),
            "flag 'trading.smars.rlp_enabled': description: blank",
        ),
        (
            ENTRY.replace("description: RLP routing", 'description: "  \\t "'),
            "flag 'trading.smars.rlp_enabled': description: blank",
        ),
        (
            ENTRY.replace("expires: 2012-12-31", "expires: 2012-06-30"),
            "flag 'trading.smars.rlp_enabled': expires: 2012-06-30 is before created 2012-07-01",
        ),
    ],
)
def test_strict_parse_names_the_key(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, "feature-flags.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("feature-flags.yaml")


def test_registry_refuses_reused_retired_id() -> None:
    with pytest.raises(RegistryError) as info:
        FlagRegistry.load(FIXTURES / "knight_repo" / "feature-flags.yaml")
    message = str(info.value)
    assert "feature-flags.yaml:24:" in message
    assert "[reused_id]" in message and "retired tombstone defined at line 5" in message


def test_registry_refuses_recorded_hash_that_disagrees() -> None:
    text = ENTRY + "    definition_hash: " + "ab" * 32 + "\n"
    with pytest.raises(RegistryError, match=r"\[hash_mismatch\]"):
        FlagRegistry(parse_registry(text, "r.yaml"))


def test_unreadable_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"flag registry .*missing.yaml: no such file"):
        FlagRegistry.load(tmp_path / "missing.yaml")


TOMBSTONE = """\
version: 1
flags:
  - id: trading.smars.power_peg
    description: Power Peg test order generator
    owner: smars-team
    created: 2003-01-01
    lifecycle: retired
    safe_default: false
    trading_behaviour: true
  - id: {reuse}
    description: RLP routing
    owner: smars-team
    created: 2012-07-01
    expires: 2012-12-31
    lifecycle: active
    safe_default: false
    trading_behaviour: true
"""


@pytest.mark.parametrize(
    "reuse",
    [
        "Trading.smars.POWER_PEG",  # another case
        '"trading.smars.power_peg "',  # trailing whitespace
        '"trading.smars.\\uff50ower_peg"',  # full-width p: the same id after NFKC
    ],
)
def test_a_tombstone_spelled_another_way_is_a_reused_id(reuse: str) -> None:
    """A retired id brought back with another case, Unicode form or whitespace is
    the same id to every reader: the registry refuses it as reused, not as a new flag."""
    with pytest.raises(RegistryError) as info:
        FlagRegistry(parse_registry(TOMBSTONE.format(reuse=reuse), "r.yaml"))
    message = str(info.value)
    assert message.startswith("r.yaml:10: error [reused_id]")
    assert "'trading.smars.power_peg'" in message and "retired tombstone" in message


LONG = "9" * 5000


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("owner", ENTRY.replace("owner: smars-team", f"owner: {LONG}")),
        ("version", ENTRY.replace("version: 1", f"version: {LONG}")),
        ("a history note", ENTRY + f"    history:\n      - {{at: 2012-07-01, note: {LONG}}}\n"),
        ("a negative integer", ENTRY.replace("owner: smars-team", f"owner: -{LONG}")),
    ],
)
def test_an_integer_too_long_to_read_is_refused_naming_its_line(where: str, text: str) -> None:
    """Past Python's 4300-digit conversion limit the YAML loader raised a bare ValueError:
    `flags lint` and every `flags` command ended with a traceback instead of a line."""
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "999" in t)
    with pytest.raises(RegistryError) as info:
        parse_registry(text, "r.yaml")
    message = str(info.value)
    assert message.startswith(f"r.yaml: line {line}, column "), (where, message)
    assert "characters is too long to read (at most 4300 digits)" in message
    assert info.value.line == line
