"""What a node's Python runs besides its artifacts: the interpreter, its standard library
and its installed packages, measured by bytes like the artifacts are.

A node is a Python process: most of the code it runs is not in its artifacts directory but
in the interpreter, the standard library and site-packages. A desk that installs its
strategy as a wheel, or a host where a dependency was upgraded by hand (`pip install -U`
on one router of eight, Knight's missed deploy in Python's terms), ran code no manifest
named, and attested the release exactly. A release built with the environment measured
names each of these by hash, and a node started to measure its own is compared entry by
entry.

An entry is one top-level name in an area (`site-packages/numpy`,
`site-packages/numpy-2.1.3.dist-info`, `stdlib/json`, `site-packages/x.pth`): its value
is the sha256 of the sorted list of its files' paths and hashes, so a manifest stays a few
hundred entries (an attestation travels on the control plane), while a finding still names
the package that differs, and a version bump reads as one dist-info missing and another
unexpected. The interpreter's binary (and its shared library, when it has one) are entries
of their own, and `python` holds its implementation and version in words.

Left out, because they differ between healthy hosts that run the same code: `__pycache__`
directories (bytecode the interpreter writes as it imports, stamped with each file's
modification time; it is checked against the source it caches) and `direct_url.json` in a
dist-info (where pip found a wheel). Console scripts in the environment's `bin/` are not
measured: they start the interpreter, and what they import is.

Re-measuring costs a walk and a stat of each file: a file is hashed again only when its
size, modification or change time or inode moved (`EnvironmentMeasure`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import stat
import sys
import sysconfig
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from knightwatch.errors import quoted
from knightwatch.release.contents import (
    INTERPRETER,
    INTERPRETER_LIBRARY,
    MAX_DEPTH,
    PYTHON,
    check_above,
    hash_file,
)
from knightwatch.release.errors import ReleaseInputError

_SKIPPED_FILES = frozenset({"direct_url.json"})


def python_version() -> str:
    """This interpreter's implementation and version in words: `cpython-3.11.7`."""
    return f"{sys.implementation.name}-{platform.python_version()}"


def interpreter_files() -> dict[str, Path]:
    """This interpreter's binary and, when it was built shared, its library."""
    files = {INTERPRETER: Path(os.path.realpath(sys.executable))}
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
        if libdir and name and os.path.exists(os.path.join(libdir, name)):
            files[INTERPRETER_LIBRARY] = Path(os.path.realpath(os.path.join(libdir, name)))
    return files


def environment_areas() -> dict[str, Path]:
    """Where this interpreter's standard library and installed packages are, by area; an
    area that is the same directory as one before it is measured once, under the first
    name (a venv's `platlib` is its `site-packages`)."""
    paths = sysconfig.get_paths()
    wanted = (
        ("stdlib", paths["stdlib"]),
        ("platstdlib", paths["platstdlib"]),
        ("site-packages", paths["purelib"]),
        ("platlib", paths["platlib"]),
    )
    areas: dict[str, Path] = {}
    seen: set[str] = set()
    for area, path in wanted:
        real = os.path.realpath(path)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        areas[area] = Path(path)
    return areas


REFRESH_S = 60.0
"""An environment is measured again at most this often (the node attests every few
seconds): a walk of a standard library and site-packages stats tens of thousands of files.
Installed code changed under a running process takes effect at its next import or its
restart, and a restarted node measures afresh."""

_Version = tuple[int, int, int, int, int]


class EnvironmentMeasure:
    """Measures an environment when called, at most every `refresh_s` (the last
    measurement is answered in between), hashing again only files that changed since (by
    inode, size, modification and change time).

    The default measures the interpreter running this process; tests and tools name the
    areas, interpreter files and version instead. Calls may come from several threads."""

    def __init__(
        self,
        areas: Mapping[str, Path] | None = None,
        interpreter: Mapping[str, Path] | None = None,
        python: str | None = None,
        *,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.areas = dict(environment_areas() if areas is None else areas)
        self.interpreter = dict(interpreter_files() if interpreter is None else interpreter)
        self.python = python_version() if python is None else python
        self.refresh_s = refresh_s
        self._hashes: dict[str, tuple[_Version, str]] = {}
        self._last: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._skip = _skipped(self.areas)

    def __call__(self) -> dict[str, str]:
        """Every entry's hash, sorted by name. ReleaseInputError names what could not be
        measured (an unreadable file, a world-writable directory): never left out."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.refresh_s:
                return dict(self._last[1])
            out = self._measure()
            self._last = (now, out)
            return dict(out)

    def _measure(self) -> dict[str, str]:
        out: dict[str, str] = {PYTHON: self.python}
        seen: dict[str, tuple[_Version, str]] = {}
        for key, binary in self.interpreter.items():
            out[key] = self._hash(str(binary), f"interpreter file {binary}", seen)
        for area, root in self.areas.items():
            entries: dict[str, list[bytes]] = {}
            for relative, path in _walk(str(root), f"environment area {area} ({root})"):
                top = relative.split("/", 1)[0]
                if top in self._skip.get(area, ()):
                    continue
                digest = self._hash(path, f"environment file {path}", seen)
                line = os.fsencode(relative) + b"\0" + digest.encode() + b"\n"
                entries.setdefault(top, []).append(line)
            for top, lines in entries.items():
                out[f"{area}/{top}"] = hashlib.sha256(b"".join(sorted(lines))).hexdigest()
        self._hashes = seen  # a file gone since is forgotten
        return dict(sorted(out.items()))

    def _hash(self, path: str, what: str, seen: dict[str, tuple[_Version, str]]) -> str:
        try:
            st = os.stat(path)
            version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = self._hashes.get(path)
            digest = (
                known[1]
                if known is not None and known[0] == version
                else hash_file(Path(path), what)[0]
            )
        except OSError as exc:
            raise ReleaseInputError(f"{what}: cannot read: {exc.strerror or exc}") from None
        seen[path] = (version, digest)
        return digest


def _skipped(areas: Mapping[str, Path]) -> dict[str, frozenset[str]]:
    """For each area, the top-level names left out: another area inside it (measured once,
    as its own), and a standard library's `site-packages` and `dist-packages`: the base
    interpreter's packages, on no venv's path (and measured as the `site-packages` area by
    an interpreter that is not a venv)."""
    real = {area: os.path.realpath(path) for area, path in areas.items()}
    skipped: dict[str, frozenset[str]] = {}
    for area, root in real.items():
        inside = {
            os.path.relpath(other, root).split(os.sep, 1)[0]
            for name, other in real.items()
            if name != area and other.startswith(root + os.sep)
        }
        if area in ("stdlib", "platstdlib"):
            inside |= {"site-packages", "dist-packages"}
        skipped[area] = frozenset(inside)
    return skipped


def _walk(root: str, what: str) -> list[tuple[str, str]]:
    """(relative POSIX path, path) of every regular file under `root`, links followed,
    `__pycache__` directories and a dist-info's `direct_url.json` left out.

    Refused, never skipped, as in an artifacts directory (`list_directory`): a directory
    that cannot be listed, one writable by every account (anyone could drop a module in)
    or above the root and not sticky, a broken link, a link back up its own path, a pipe,
    device or socket, a tree nested past MAX_DEPTH. Strings and `os.scandir`, not
    `pathlib`: a standard library and site-packages hold tens of thousands of files."""
    try:
        check_above(os.path.realpath(root), what, set())
    except OSError as exc:
        raise ReleaseInputError(f"{what}: cannot examine it: {exc.strerror or exc}") from None
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [(root, "", frozenset())]
    while stack:
        here, prefix, above = stack.pop()
        try:
            st = os.stat(here)
            entries = list(os.scandir(here))
        except OSError as exc:
            raise ReleaseInputError(f"{what}: cannot list {here}: {exc.strerror or exc}") from None
        if st.st_mode & stat.S_IWOTH:
            raise ReleaseInputError(
                f"{what}: {here}: writable by every account (mode {stat.S_IMODE(st.st_mode):04o})"
                f": any account could add a module to it, so it cannot be attested; "
                f"run chmod o-w {here}"
            )
        key = (st.st_dev, st.st_ino)
        if key in above:
            raise ReleaseInputError(
                f"{what}: {here} links back to a directory above it (a symlink loop); "
                "remove the link"
            )
        if len(above) > MAX_DEPTH:
            raise ReleaseInputError(
                f"{what}: {quoted(here)} is nested more than {MAX_DEPTH} directories deep"
            )
        inner = above | {key}
        for entry in entries:
            relative = prefix + entry.name
            try:
                if entry.is_dir():
                    if entry.name != "__pycache__":
                        stack.append((entry.path, relative + "/", inner))
                    continue
                regular = entry.is_file()
                broken = not regular and entry.is_symlink() and not os.path.exists(entry.path)
            except OSError as exc:
                raise ReleaseInputError(
                    f"{what}: cannot examine {entry.path}: {exc.strerror or exc}"
                ) from None
            if regular:
                if not (entry.name in _SKIPPED_FILES and prefix.endswith(".dist-info/")):
                    found.append((relative, entry.path))
            elif broken:
                raise ReleaseInputError(
                    f"{what}: {entry.path} is a broken symlink; deploy its target or remove it"
                )
            else:
                raise ReleaseInputError(
                    f"{what}: {entry.path} is not a regular file (a device, pipe or socket, "
                    "or a link to one): it cannot be measured; remove it"
                )
    return found
