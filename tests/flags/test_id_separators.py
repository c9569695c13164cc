"""A retired id with another separator between its words is the retired id.

`trading.smars.power.peg` or `trading.smars.power-peg` beside the Power Peg tombstone
read as a new flag: the registry loaded it, lint passed it (`power.peg` is lower-case
dotted segments), the provider answered `power-peg` with the caller's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient

from knightwatch.flags.findings import FindingCode
from knightwatch.flags.lint import run_lint
from knightwatch.flags.provider import KnightwatchProvider
from knightwatch.flags.registry import FlagRegistry, RegistryError, parse_registry
from knightwatch.flags.state import MemoryFlagStateStore

from .test_id_spelling import DAY, PEG, REGISTRY

SEPARATED = [
    "trading.smars.power.peg",
    "trading.smars.power-peg",
    "trading.smars.power__peg",
    "trading_smars.power_peg",
    "trading-smars-power-peg",
    "trading.smars.power_-peg",
]
SPELLED_IN_CODE = [*SEPARATED, "trading.smars.power\u2010peg", "trading.smars.power\uff3fpeg"]


@pytest.mark.parametrize("other", SEPARATED)
def test_a_tombstone_with_another_separator_is_a_reused_id(other: str) -> None:
    text = REGISTRY.format(other=other)
    with pytest.raises(RegistryError) as info:
        FlagRegistry(parse_registry(text, "r.yaml"))
    message = str(info.value)
    assert message.startswith("r.yaml:10: error [reused_id]"), message
    assert f"{PEG!r}" in message and "retired tombstone" in message and "separator" in message


@pytest.mark.parametrize("other", SEPARATED)
def test_lint_fails_a_tombstone_reused_with_another_separator(tmp_path: Path, other: str) -> None:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other=other))
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert report.failed
    assert [f.line for f in report.findings if f.code is FindingCode.REUSED_ID] == [10]


def test_distinct_words_are_still_distinct_ids() -> None:
    """Only separators fold: other words, or words run together, are another id."""
    for other in ("trading.smars.power_pegs", "trading.smars.powerpeg", "trading.smars.peg_power"):
        registry = FlagRegistry(parse_registry(REGISTRY.format(other=other), "r.yaml"))
        assert registry.get(other) is not None


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    yield api.get_client("knightwatch-id-separators")
    api.clear_providers()


@pytest.mark.parametrize("spelled", SPELLED_IN_CODE)
def test_the_provider_takes_a_separator_variant_as_the_retired_flag(
    flag_registry: FlagRegistry, make_fleet, client: OpenFeatureClient, spelled: str
) -> None:
    """Was `FLAG_NOT_FOUND`: the client answered with the caller's default, here on."""
    provider = KnightwatchProvider(
        flag_registry, MemoryFlagStateStore(), make_fleet(), "n1", flag_registry.schema()
    )
    api.set_provider(provider)
    details = client.get_boolean_details(spelled, True)
    assert (details.value, details.error_code) == (False, None)
    assert details.variant == "fail-closed:id_spelled_otherwise"


@pytest.mark.parametrize("spelled", SPELLED_IN_CODE)
def test_lint_reports_the_retired_id_with_another_separator_in_code(
    tmp_path: Path, spelled: str
) -> None:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other="trading.smars.rlp_enabled"))
    (tmp_path / "router.py").write_text(
        f"if flags.is_enabled({spelled!r}):\n    fire()\nLEGACY = {spelled!r}\n",
        encoding="utf-8",
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = [f for f in report.findings if f.path.endswith("router.py")]
    assert [(f.code, f.line, f.flag_id) for f in found] == [
        (FindingCode.RETIRED_FLAG_REFERENCE, 1, PEG),
        (FindingCode.RETIRED_FLAG_REFERENCE, 3, PEG),
    ], [f.render() for f in found]
