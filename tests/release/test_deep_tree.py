"""An artifacts tree nested deeper than can be walked is refused in one line, never a
RecursionError.

`os.walk` recurses once per directory level: a tree about a thousand directories deep
(2,400 characters of path, well inside what the kernel accepts) raised RecursionError
out of `release build` as a traceback, and out of the node's measurement, which its
attest loop does not catch: the node stopped attesting for good.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from knightwatch.control.node.attestor import directory_measure
from knightwatch.release.contents import MAX_DEPTH, hash_directory
from knightwatch.release.errors import ReleaseInputError

from .release_world import CONFIG, FLAGS


def nested(root: Path, depth: int) -> Path:
    """`root` with `depth` one-letter directories inside each other, a file at the bottom."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("f.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"x = 1\n")
        os.close(out)
    finally:
        os.close(fd)
    return root


@pytest.fixture
def deep(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tree `request.param` deep, removed bottom up after the test. Made outside pytest's
    temporary directories: their clean-up recurses once a level too (shutil.rmtree), and
    a tree left there raised RecursionError at the end of every later pytest session."""
    depth: int = request.param
    top = Path(tempfile.mkdtemp(prefix="kw-deep-tree-"))
    root = nested(top / "app", depth)
    try:
        yield root
    finally:
        os.unlink(f"{root}{'/d' * depth}/f.py")
        for level in range(depth, -1, -1):
            os.rmdir(f"{root}{'/d' * level}")
        os.rmdir(top)


@pytest.mark.parametrize("deep", [MAX_DEPTH + 1, sys.getrecursionlimit() + 200], indirect=True)
def test_a_tree_nested_too_deep_is_refused_naming_the_rule(tmp_path: Path, deep: Path) -> None:
    with pytest.raises(ReleaseInputError, match=rf"nested more than {MAX_DEPTH} directories deep"):
        hash_directory(deep)
    (tmp_path / "config.toml").write_bytes(CONFIG)
    with pytest.raises(ReleaseInputError, match=r"^artifacts directory .*nested more than"):
        directory_measure(deep, tmp_path / "config.toml", dict(FLAGS))()


@pytest.mark.parametrize("deep", [MAX_DEPTH], indirect=True)
def test_a_tree_as_deep_as_allowed_is_measured(deep: Path) -> None:
    (path,) = hash_directory(deep)
    assert path == "/".join(["d"] * MAX_DEPTH + ["f.py"])
