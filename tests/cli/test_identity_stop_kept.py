"""`knightwatch identity revoke` of the last key able to kill is refused before anything is
signed or written: before, the proposal was written and, once signed and published, every
node refused every kill (nobody left with the operator or supervisor role)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_identity import change, invoke

pytestmark = pytest.mark.timeout(90)


def test_revoking_the_last_key_able_to_kill_is_refused_and_writes_no_proposal(
    fleet_up: Path, tmp_path: Path
) -> None:
    change(fleet_up, tmp_path, "revoke", "alice")  # one operator less: still able to kill
    change(fleet_up, tmp_path, "revoke", "bob")
    keys = fleet_up / "trust" / "keys"
    proposal = tmp_path / "last.json"
    code, out = invoke(
        "identity", "revoke", "supervisor", "--out", str(proposal),
        "--state-dir", str(fleet_up), "--key", str(keys / "admin1.key"),
    )  # fmt: skip
    assert code == 2, out
    assert "never leaves the fleet unable to kill" in " ".join(out.split()), out
    assert not proposal.exists()
