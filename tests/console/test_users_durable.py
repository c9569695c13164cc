"""A users-file write survives a machine crash in the order its seal relies on.

The users file is written first, then its seal file records the new generation; a file
older than the seal's generation is refused as a rollback. Each was renamed into place
without syncing the directory, so a crash could keep the seal's rename and lose the
users file's: the older file was then refused and every login with it. The real
`os.fsync` and `os.replace` run here; the test only notes which were called, in order.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from argon2.profiles import CHEAPEST

from knightwatch.console.users import UserStore
from knightwatch.release.keys import SigningKey

PW = "correct horse battery"


def test_each_rename_is_made_durable_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(tmp_path / "console-users.toml", profile=CHEAPEST)
    store.add("alice", PW, SigningKey.generate())  # the seal file exists from here on
    folder = os.stat(tmp_path).st_ino
    seen: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) and st.st_ino == folder:
            seen.append("sync dir")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        seen.append(f"rename {Path(dst).name}")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.disable("alice")
    assert seen == [
        "rename console-users.toml",
        "sync dir",
        "rename console-users.toml.seal",
        "sync dir",
    ], seen
    assert UserStore(tmp_path / "console-users.toml", profile=CHEAPEST).get("alice") is not None
