"""A flag id reads as one id to everyone: invisible characters, look-alike letters and
ids assembled in code do not make a retired flag a new one, or hide its dead code."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient

from knightwatch.flags.findings import FindingCode
from knightwatch.flags.lint import run_lint
from knightwatch.flags.provider import KnightwatchProvider
from knightwatch.flags.registry import FlagRegistry, RegistryError, parse_registry
from knightwatch.flags.state import MemoryFlagStateStore

PEG = "trading.smars.power_peg"
DAY = date(2012, 8, 1)

REGISTRY = """\
version: 1
flags:
  - id: trading.smars.power_peg
    description: Power Peg test order generator
    owner: smars-team
    created: 2003-01-01
    lifecycle: retired
    safe_default: false
    trading_behaviour: true
  - id: {other}
    description: RLP routing
    owner: smars-team
    created: 2012-07-01
    expires: 2099-12-31
    lifecycle: active
    safe_default: false
    trading_behaviour: true
"""

INVISIBLE = [
    "trading.smars.power_peg\u200b",  # zero-width space at the end
    "trading.smars.power\u00ad_peg",  # soft hyphen: renders as nothing mid-word
    "\ufefftrading.smars.power_peg",  # a byte-order mark pasted in front
    "trading.smars.power_\u2060peg",  # word joiner
    "trading.smars.\u202apower_peg",  # a bidi embedding control
]


def _yaml_string(text: str) -> str:
    return '"' + text.encode("ascii", "backslashreplace").decode() + '"'


@pytest.mark.parametrize("other", INVISIBLE)
def test_a_tombstone_with_an_invisible_character_is_a_reused_id(other: str) -> None:
    """The retired id with a zero-width space (or another format character) renders exactly
    as the tombstone; it loaded as a new, active flag with a new meaning."""
    text = REGISTRY.format(other=_yaml_string(other))
    with pytest.raises(RegistryError) as info:
        FlagRegistry(parse_registry(text, "r.yaml"))
    message = str(info.value)
    assert message.startswith("r.yaml:10: error [reused_id]"), message
    assert f"{PEG!r}" in message and "retired tombstone" in message


@pytest.mark.parametrize(
    "other",
    [
        "trading.smars.power_p\u0435g",  # Cyrillic ie: looks like the tombstone
        "trading.smars.rlp enabled",
        "trading.smars.rlp\\0enabled",  # a NUL
        "trading.>",  # a control-plane wildcard
        "trading..rlp",
        ".trading.rlp",
        "trading.rlp.",
        "trading.café",
    ],
)
def test_an_id_that_is_no_control_plane_key_is_refused_naming_its_line(other: str) -> None:
    """Each loaded, then failed as "control plane did not answer" at `flags set` (or, for a
    look-alike letter, sat in `flags list` beside the tombstone it copies)."""
    text = REGISTRY.format(other=_yaml_string(other))
    with pytest.raises(RegistryError) as info:
        FlagRegistry(parse_registry(text, "r.yaml"))
    message = str(info.value)
    assert message.startswith("r.yaml:10: flag id "), message
    assert "only ASCII letters, digits, '_' and '-'" in message
    assert info.value.line == 10
    assert "\n" not in message


def test_ids_lint_only_warns_about_still_load() -> None:
    """Upper case, a dash, a single segment: lint's `not_namespaced`, not a load error."""
    for other in ("Ops.Dashboard", "ops.dash-board", "SMARS"):
        registry = FlagRegistry(parse_registry(REGISTRY.format(other=other), "r.yaml"))
        assert registry.get(other) is not None


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    yield api.get_client("knightwatch-id-spelling")
    api.clear_providers()


@pytest.mark.parametrize("spelled", INVISIBLE)
def test_the_provider_takes_an_invisible_variant_as_the_retired_flag(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient, spelled: str
) -> None:
    """`trading.smars.power_peg` + a zero-width space was "not in the registry", so the
    client answered with the caller's default: on, waking the retired Power Peg code."""
    provider = KnightwatchProvider(
        flag_registry, MemoryFlagStateStore(), make_fleet(), "n1", flag_registry.schema()
    )
    api.set_provider(provider)
    details = client.get_boolean_details(spelled, True)
    assert (details.value, details.error_code) == (False, None)
    assert details.variant == "fail-closed:id_spelled_otherwise"
    assert f"spells {PEG!r}" in str(details.flag_metadata["detail"])


LINT_REGISTRY = REGISTRY.format(other="trading.smars.rlp_enabled")


@pytest.mark.parametrize(
    "code",
    [
        'flags.is_enabled("trading.smars." + "power_peg")',
        'flags.is_enabled(NS + "power_peg")',
        'flags.is_enabled(f"{NS}power_peg")',
        'flags.is_enabled(f"trading.smars.{NAME}")',
        "client.get_boolean_value(PEG_ID, False)",
        'client.get_boolean_value("TRADING.SMARS.POWER_PEG".lower(), False)',
        "client.get_boolean_details(flag_key=(NS + NAME).strip(), default_value=True)",
    ],
)
def test_lint_reports_a_retired_flag_asked_for_by_an_assembled_id(
    tmp_path: Path, code: str
) -> None:
    """Only a literal argument was read: the id built from a namespace constant and a name
    passed lint, and the retired flag's guarded block with it."""
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    (tmp_path / "router.py").write_text(
        'NS = "trading.smars."\n'
        'NAME = "power" + "_peg"\n'
        "PEG_ID = NS + NAME\n"
        "\n"
        f"if {code}:\n"
        "    send('child order')\n"
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = [
        f for f in report.findings if f.code is FindingCode.RETIRED_FLAG_REFERENCE and f.line == 5
    ]
    assert found, [f.render() for f in report.findings]
    assert found[0].flag_id == PEG and "guards lines 5-6" in found[0].message
    assert report.failed


@pytest.mark.parametrize(
    "literal",
    ["TRADING.SMARS.POWER_PEG", "trading.smars.power_peg\\u200b", "Trading.Smars.Power_Peg"],
)
def test_lint_reports_the_retired_id_spelled_otherwise_anywhere_in_code(
    tmp_path: Path, literal: str
) -> None:
    """The provider takes these as Power Peg (`id_spelled_otherwise`); lint did not see them
    outside an accessor call, so the dead code that held one passed."""
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    (tmp_path / "router.py").write_text(f'LEGACY = "{literal}"\n')
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    (finding,) = [f for f in report.findings if f.path.endswith("router.py")]
    assert finding.code is FindingCode.RETIRED_FLAG_REFERENCE and finding.line == 1
    assert finding.flag_id == PEG and "(spelled " in finding.message


def test_lint_leaves_names_it_cannot_pin_down_alone(tmp_path: Path) -> None:
    """A name bound twice, or bound in a function, is not guessed at (no false finding)."""
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    (tmp_path / "router.py").write_text(
        'A = "ops.x"\n'
        'A = "ops.y"\n'
        'B = "ops.z"\n'
        "def f():\n"
        "    global B\n"
        "    B = 'ops.w'\n"
        "flags.is_enabled(A)\n"
        "flags.is_enabled(B)\n"
        "flags.is_enabled(a + b)\n"
        'flags.is_enabled("trading.smars.rlp_enabled")\n'
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert [f for f in report.findings if f.path.endswith("router.py")] == []


@pytest.mark.parametrize(
    "built",
    [
        'NS + "power_peg"',
        'f"{NS}power_peg"',
        '"trading.smars." + "power_peg"',
        '".".join(["trading", "smars", "power_peg"])',
        '".".join(("trading", "smars", NAME))',
        '"trading.smars.{}".format(NAME)',
        '"trading.smars.{0}".format("power_peg")',
        '"{ns}{name}".format(ns=NS, name=NAME)',
        '"trading.smars.%s" % NAME',
        '"%s%s" % (NS, "power_peg")',
        '(NS + "POWER_PEG").lower()',
    ],
)
def test_lint_reports_a_retired_id_built_in_code_wherever_it_is_built(
    tmp_path: Path, built: str
) -> None:
    """Only an accessor's argument was assembled: the id built into a constant and read by
    the desk's own accessor (`flags.on(PEG)`, as Knight's code did) passed lint with the
    Power Peg block it guards; `.join`, `.format` and `%` were not read even in an accessor."""
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    (tmp_path / "router.py").write_text(
        'NS = "trading.smars."\n'
        'NAME = "power_peg"\n'
        f"PEG = {built}\n"
        "if flags.on(PEG):\n"
        "    send('child order')\n"
        f"if flags.is_enabled({built}):\n"
        "    send('child order')\n"
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = sorted(
        (f.line, f.flag_id) for f in report.findings if f.code is FindingCode.RETIRED_FLAG_REFERENCE
    )
    assert found == [(3, PEG), (6, PEG)], [f.render() for f in report.findings]


@pytest.mark.parametrize(
    "code",
    [
        '"trading.smars.%5s" % NAME',  # a width: not assembled (could be any size)
        '"trading.smars.{:>9}".format(NAME)',
        '"trading.smars.{0.upper}".format(NAME)',
        '"trading.smars.%(n)s" % {"n": NAME}',
        '".".join(parts)',
        '"trading.smars." + name',
        "NS + NAME_OF_SOMETHING_ELSE",
    ],
)
def test_lint_does_not_guess_at_strings_it_cannot_build_alone(tmp_path: Path, code: str) -> None:
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    (tmp_path / "router.py").write_text(
        'NS = "trading.smars."\nNAME = "power_peg"\nNAME_OF_SOMETHING_ELSE = "rlp_enabled"\n'
        f"PEG = {code}\n"
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert [f.render() for f in report.findings if f.path.endswith("router.py")] == []


@pytest.mark.parametrize("dot", ["\uff0e", "\u2024"])  # full-width full stop, one dot leader
def test_lint_reports_the_retired_id_with_a_dot_that_is_a_dot_to_the_provider(
    tmp_path: Path, dot: str
) -> None:
    """`id_identity` (NFKC) reads these as '.', so the provider takes the string as Power
    Peg; lint skipped any string without an ASCII '.', and passed it."""
    (tmp_path / "feature-flags.yaml").write_text(LINT_REGISTRY)
    spelled = PEG.replace(".", dot)
    (tmp_path / "router.py").write_text(f"LEGACY = {spelled!r}\n", encoding="utf-8")
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    (finding,) = [f for f in report.findings if f.path.endswith("router.py")]
    assert finding.code is FindingCode.RETIRED_FLAG_REFERENCE and finding.flag_id == PEG
