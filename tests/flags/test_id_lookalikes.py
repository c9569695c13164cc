"""A key that copies a registry id with look-alike letters of another script is that flag.

Registry ids are ASCII, so `trading.smars.power_pеg` with a Cyrillic 'е' can never be
loaded; but asked of the provider it was "not in the registry" (`FLAG_NOT_FOUND`) and
the OpenFeature client answered with the caller's default, here on: the retired Power
Peg code ran. Held in a constant read through the desk's own accessor, lint passed it.
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
from knightwatch.flags.registry import FlagRegistry
from knightwatch.flags.state import MemoryFlagStateStore

from .test_id_spelling import DAY, PEG, REGISTRY

RLP = "trading.smars.rlp_enabled"
LOOKALIKES = [
    ("trading.smars.power_p\u0435g", PEG),  # Cyrillic ie
    ("tr\u0430ding.smars.power_peg", PEG),  # Cyrillic a
    ("trading.smars.p\u03bfwer_peg", PEG),  # Greek omicron
    ("trading.smars.power_pe\u0261", PEG),  # Latin script g (U+0261)
    ("trading.smars.power_peg\u0301", PEG),  # an accent on the last letter
    ("TRADING.SMARS.POWER_P\u0415G", PEG),  # upper case with a Cyrillic IE
    ("trading.smars.rlp_\u0435nabled", RLP),  # a live flag: its safe default, not the caller's
]


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    yield api.get_client("knightwatch-id-lookalikes")
    api.clear_providers()


@pytest.mark.parametrize(("spelled", "meant"), LOOKALIKES)
def test_the_provider_takes_a_lookalike_key_as_the_flag_it_copies(
    flag_registry: FlagRegistry,
    make_fleet,
    client: OpenFeatureClient,
    spelled: str,
    meant: str,
) -> None:
    provider = KnightwatchProvider(
        flag_registry, MemoryFlagStateStore(), make_fleet(), "n1", flag_registry.schema()
    )
    api.set_provider(provider)
    details = client.get_boolean_details(spelled, True)
    assert (details.value, details.error_code) == (False, None)
    assert details.variant == "fail-closed:id_spelled_otherwise"
    assert f"spells {meant!r}" in str(details.flag_metadata["detail"])


def test_lint_reports_a_lookalike_retired_id_read_through_a_constant(tmp_path: Path) -> None:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other=RLP))
    (tmp_path / "desk.py").write_text(
        'PEG = "trading.smars.power_p\u0435g"\n'
        # another script's words in an id's shape copy no id: too few letters are the same
        'WORDS = "\u0442\u043e\u0440\u0433\u043e\u0432\u043b.smars.'
        '\u043f\u0435\u0433\u0438\u0439_\u0442\u0435\u0441"\n'
        "\n"
        "if flags.on(PEG):\n"
        "    fire()\n"
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    found = [(f.code, f.line, f.flag_id) for f in report.findings]
    assert found == [(FindingCode.RETIRED_FLAG_REFERENCE, 1, PEG)], found
    assert "spelled 'trading.smars.power_p\u0435g'" in report.findings[0].message
