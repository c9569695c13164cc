"""`Kit.write` (a local fleet's identities on disk): never readable or writable by others,
never a key silently replaced.

Before, under a permissive umask (0) the anchor, the roster versions and their
directories were writable by every account on the machine (another account could put
its own admins in anchor.toml, which every restart then trusted), and a key file already
there was unlinked and written anew: a cast written over another's lost its keys without
a word, and a crash between the two lost the key.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, TrustError


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_nothing_written_is_writable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    kit = Kit(now_ns=1)
    kit.write(tmp_path / "trust", private=["alice", "admin1"])
    trust = tmp_path / "trust"
    for path in (trust, trust / "roster", trust / "anchor.toml", trust / "roster" / "v1.json"):
        assert _mode(path) & 0o022 == 0, f"{path}: {_mode(path):04o}"
    assert _mode(trust / "keys") == 0o700
    for name in ("alice", "admin1"):
        assert _mode(trust / "keys" / f"{name}.key") == 0o600
    assert sorted(p.name for p in (trust / "keys").iterdir()) == ["admin1.key", "alice.key"]
    assert Kit.read(trust).signers.keys() == {"alice", "admin1"}


def test_a_key_file_holding_another_key_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    first = Kit(now_ns=1)
    first.write(tmp_path, private=["alice"])
    key = (tmp_path / "keys" / "alice.key").read_bytes()
    anchor = (tmp_path / "anchor.toml").read_bytes()
    other = Kit(now_ns=1)
    with pytest.raises(TrustError, match=r"^key file .*alice\.key: holds another key than alice"):
        other.write(tmp_path, private=["alice"])
    assert (tmp_path / "keys" / "alice.key").read_bytes() == key
    assert (tmp_path / "anchor.toml").read_bytes() == anchor  # not half replaced
    assert Kit.read(tmp_path).signer("alice").key.key_id == first.signer("alice").key.key_id


def test_the_same_cast_written_again_keeps_its_keys(tmp_path: Path) -> None:
    """A local fleet's restart (`local_kit`, `Site`): read, moved on, written again."""
    first = Kit(now_ns=1)
    first.write(tmp_path, private=list(first.signers))
    key = (tmp_path / "keys" / "alice.key").read_bytes()
    again = Kit.read(tmp_path)
    again.add("n9", [Role.NODE])  # a bigger fleet than last time: a new key
    again.write(tmp_path, private=list(again.signers))
    assert (tmp_path / "keys" / "alice.key").read_bytes() == key
    assert Kit.read(tmp_path).signers.keys() == {*first.signers, "n9"}
