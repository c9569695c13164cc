"""A registry flag evaluated as a string, integer, float or object fails lint.

Registry flags are boolean: the provider answers any other evaluation with a type
mismatch and the OpenFeature client hands back the caller's default. So
`client.get_integer_value("trading.smars.rlp_enabled", 1)` was on for ever, whatever
the flag's state, a switch-off or its safe default, and lint passed it (a known id).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.flags.findings import FindingCode, Severity
from knightwatch.flags.lint import run_lint

from .test_id_spelling import DAY, PEG, REGISTRY

RLP = "trading.smars.rlp_enabled"

CALLS = [
    f'client.get_integer_value("{RLP}", 1)',
    f'client.get_string_value("{RLP}", "on") == "on"',
    'client.get_float_details(NS + "rlp_enabled", 1.0).value',
    'client.get_object_value(flag_key=f"{NS}rlp_enabled", default_value={"on": 1})',
    f'await client.get_string_details_async("{RLP}", "on")',
    f'get_integer_value("{RLP}".lower(), 1)',
]


def _lint(tmp_path: Path, body: str) -> list[tuple[FindingCode, int, str]]:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY.format(other=RLP))
    (tmp_path / "desk.py").write_text(f'NS = "trading.smars."\n\n\nasync def f():\n{body}')
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    assert all(f.severity is Severity.ERROR for f in report.findings)
    return [(f.code, f.line, f.message) for f in report.findings]


@pytest.mark.parametrize("call", CALLS)
def test_a_non_boolean_evaluation_of_a_registry_flag_fails_lint(tmp_path: Path, call: str) -> None:
    findings = _lint(tmp_path, f"    if {call}:\n        route()\n")
    assert [(code, line) for code, line, _ in findings] == [(FindingCode.FLAG_TYPE_MISMATCH, 5)], (
        findings
    )
    message = findings[0][2]
    assert message.startswith(f"flag {RLP!r} is boolean: get_") and "caller's default" in message
    assert message.endswith("; it guards lines 5-6"), message


def test_a_non_boolean_evaluation_of_a_retired_flag_is_its_dead_code(tmp_path: Path) -> None:
    findings = _lint(tmp_path, f'    return client.get_string_value("{PEG}", "x")\n')
    assert [(code, line) for code, line, _ in findings] == [(FindingCode.RETIRED_FLAG_REFERENCE, 5)]


def test_other_typed_evaluations_are_not_flags(tmp_path: Path) -> None:
    """Keys that are no id of the registry's namespaces are another provider's business."""
    body = '    return client.get_string_value("theme", "dark"), get_integer_value(k, 1)\n'
    assert _lint(tmp_path, body) == []
