"""A boolean evaluation whose literal default is not the flag's safe default fails lint.

With no provider set, or one not ready or failed, the OpenFeature client answers
the caller's `default_value`, not the registry's safe default: code reading
`client.get_boolean_value("trading.smars.rlp_enabled", True)` routed with the flag
on whenever the provider was missing, and lint passed it (a known, live id).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.flags.findings import FindingCode, Severity
from knightwatch.flags.lint import run_lint

from .test_id_spelling import DAY

RLP = "trading.smars.rlp_enabled"
DARK = "trading.console.dark_mode"

REGISTRY = f"""\
version: 1
flags:
  - id: {RLP}
    description: RLP routing
    owner: smars-team
    created: 2012-07-01
    expires: 2099-12-31
    lifecycle: active
    safe_default: false
    trading_behaviour: true
  - id: {DARK}
    description: dark console theme
    owner: ops
    created: 2012-07-01
    expires: 2099-12-31
    lifecycle: active
    safe_default: false
    trading_behaviour: false
"""

UNSAFE = [
    f'client.get_boolean_value("{RLP}", True)',
    "client.get_boolean_details(flag_key=RLP, default_value=True).value",
    'await client.get_boolean_value_async(NS + "rlp_enabled", True)',
    f'client.get_boolean_details_async("{RLP}", default_value=True)',
]


def _lint(tmp_path: Path, body: str) -> list[tuple[FindingCode, Severity, int, str]]:
    (tmp_path / "feature-flags.yaml").write_text(REGISTRY)
    (tmp_path / "desk.py").write_text(
        f'NS = "trading.smars."\nRLP = "{RLP}"\n\n\nasync def f():\n{body}'
    )
    report = run_lint(tmp_path / "feature-flags.yaml", [tmp_path], DAY)
    return [(f.code, f.severity, f.line, f.message) for f in report.findings]


@pytest.mark.parametrize("call", UNSAFE)
def test_an_unsafe_literal_default_of_a_trading_flag_fails_lint(tmp_path: Path, call: str) -> None:
    findings = _lint(tmp_path, f"    if {call}:\n        route()\n    return {call}\n")
    assert [(c, s, line) for c, s, line, _ in findings] == [
        (FindingCode.UNSAFE_CALLER_DEFAULT, Severity.ERROR, 6),
        (FindingCode.UNSAFE_CALLER_DEFAULT, Severity.ERROR, 8),
    ], findings
    message = findings[0][3]
    assert message.startswith(f"flag {RLP!r}: default_value True is not its safe default False")
    assert message.endswith("pass False; it guards lines 6-7"), message


def test_a_non_trading_flag_with_an_unsafe_default_is_a_warning(tmp_path: Path) -> None:
    body = (
        f'    a = client.get_boolean_value("{DARK}", True)\n'
        f'    b = client.get_boolean_value("{RLP}", False)\n'  # its safe default: fine
        "    c = client.get_boolean_value(RLP, flag)\n"  # not a literal: not guessed at
    )
    findings = _lint(tmp_path, body)
    assert [(c, s, line) for c, s, line, _ in findings] == [
        (FindingCode.UNSAFE_CALLER_DEFAULT, Severity.WARNING, 6)
    ], findings
