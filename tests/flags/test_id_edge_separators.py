"""A separator before the first word or after the last of a retired id is the retired id.

`trading.smars.power_peg_` or `_trading.smars.power_peg` beside the Power Peg tombstone
loaded as a new flag (every character is allowed in a registry id and lint's
lower-case dotted segments allow a trailing '_'), so the retired id came back with a
new meaning; the provider answered the key with the caller's default when only the
tombstone was in the registry, and lint passed code holding it.
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

EDGED = [
    "trading.smars.power_peg_",
    "trading.smars.power_peg__",
    "trading.smars.power_peg-",
    "_trading.smars.power_peg",
    "-trading.smars.power_peg",
    "__trading.smars.power_peg_",
]


@pytest.mark.parametrize("other", EDGED)
def test_a_tombstone_with_an_edge_separator_is_a_reused_id(other: str) -> None:
    with pytest.raises(RegistryError) as info:
        FlagRegistry(parse_registry(REGISTRY.format(other=other), "r.yaml"))
    message = str(info.value)
    assert message.startswith("r.yaml:10: error [reused_id]"), message
    assert f"{PEG!r}" in message and "retired tombstone" in message


def test_lint_fails_a_tombstone_reused_with_a_trailing_underscore(tmp_path: Path) -> None:
    """`power_peg_` is lower-case dotted segments: only the reuse can fail it."""
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other=f"{PEG}_"))
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert report.failed
    assert [f.line for f in report.findings if f.code is FindingCode.REUSED_ID] == [10]


def test_lint_names_code_holding_the_retired_id_with_a_trailing_underscore(
    tmp_path: Path,
) -> None:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other="trading.smars.rlp_enabled"))
    (tmp_path / "desk.py").write_text(f'PEG = "{PEG}_"\n\nif flags.on(PEG):\n    fire()\n')
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    retired = [f for f in report.findings if f.code is FindingCode.RETIRED_FLAG_REFERENCE]
    assert [(f.line, f.flag_id) for f in retired] == [(1, PEG)]


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    yield api.get_client("knightwatch-id-edge-separators")
    api.clear_providers()


@pytest.mark.parametrize("spelled", EDGED)
def test_the_provider_takes_an_edge_separated_key_as_the_retired_flag(
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
