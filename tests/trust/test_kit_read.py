"""`Kit.read` (a local fleet's restart, the drill): every refusal names the file at fault.

Before, a roster version that did not verify, a gap in the numbering or a version file
named twice (`v1.json`, `v01.json`) surfaced as the verifier's bare sentence, naming no
file, and a key file holding another name's key loaded as that file's name, so every
command it later signed was refused as not signed by its actor.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, TrustError


def written(tmp_path: Path, private: tuple[str, ...] = ()) -> Kit:
    kit = Kit(now_ns=10)
    kit.add("dave", (Role.OPERATOR,))
    kit.add("erin", (Role.OPERATOR,))
    kit.write(tmp_path, private)
    return kit


def test_a_version_that_does_not_verify_is_named(tmp_path: Path) -> None:
    written(tmp_path)
    path = tmp_path / "roster" / "v2.json"
    envelope = json.loads(path.read_text())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["admin_threshold"] = 1
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path.write_text(json.dumps(envelope))
    with pytest.raises(TrustError, match=r"^roster file .*v2\.json: signature by .* does not"):
        Kit.read(tmp_path)


@pytest.mark.parametrize(
    ("rename", "named"),
    [
        ({"v2.json": "v02.json", "v3.json": "v2.json"}, "v02.json"),  # version 2 twice
        ({"v2.json": "v9.json"}, "v3.json"),  # a gap: v3 follows v1
        ({"v3.json": "v5.json"}, "v5.json"),
    ],
)
def test_a_gap_or_a_version_named_twice_is_named(
    tmp_path: Path, rename: dict[str, str], named: str
) -> None:
    written(tmp_path)
    roster = tmp_path / "roster"
    for old, new in rename.items():
        shutil.move(roster / old, roster / new)
    with pytest.raises(TrustError, match=rf"^roster file .*{named}: "):
        Kit.read(tmp_path)


def test_a_key_file_holding_another_name_s_key_is_named(tmp_path: Path) -> None:
    kit = written(tmp_path, ("alice", "bob"))
    assert Kit.read(tmp_path).signer("alice").key.key_id == kit.signer("alice").key.key_id
    keys = tmp_path / "keys"
    (keys / "alice.key").unlink()
    shutil.copy(keys / "bob.key", keys / "alice.key")
    with pytest.raises(TrustError, match=r"^key file .*alice\.key: holds bob's key"):
        Kit.read(tmp_path)
