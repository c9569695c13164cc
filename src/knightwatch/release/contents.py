"""What a release consists of, by hash: artifact files, config and flag schema, which
artifacts may be executed and, when it is measured, the Python environment they run in.

The same struct describes what a release should be (inside a `Manifest`) and
what a node really runs (inside an `Attestation`), so admission is a plain
comparison of two values computed the same way. A node's contents are always
computed from bytes, never taken from a version string.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NoReturn

import msgspec

from knightwatch.errors import quoted
from knightwatch.release.canonical import is_sha256_hex, sha256_hex
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagschema import (
    FlagSchema,
    check_flag_id,
    schema_from_table,
)

Progress = Callable[[int, int], None]
_CHUNK = 1 << 20
MAX_DEPTH = 256
"""Directories nested inside each other under an artifacts directory, at most."""


_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories a path must not hold: controls (NUL, newline, escape, C1), format
characters (bidi overrides, zero-width) and line or paragraph separators."""


def check_artifact_path(path: str, *, where: str) -> str:
    """Relative POSIX paths of printable characters only, so the same release hashes the
    same on every host and every path reads on one line as it is.

    A path is a finding's subject and lands in the admission service's log line and the
    node's refusal: a file named with a newline in it (`x`, newline, `ADMISSION ...`)
    on a node wrote a forged line into the control plane's log, and a bidi override
    showed one file's name as another's."""
    if "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ReleaseInputError(
            f"{where}: artifact path {quoted(path)} must be a normalised relative POSIX path"
        )
    bad = next((c for c in path if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise ReleaseInputError(
            f"{where}: artifact path {quoted(path)} holds the unprintable character "
            f"U+{ord(bad):04X}; artifact paths are printable characters (rename the file)"
        )
    return path


PYTHON = "python"
"""The entry holding the interpreter's implementation and version in words."""
INTERPRETER = "interpreter"
INTERPRETER_LIBRARY = "interpreter-library"
_PYTHON_VALUE = re.compile(r"[a-z][a-z0-9_]{0,31}-[0-9][0-9A-Za-z.+]{0,63}")
ENVIRONMENT_AREAS = ("stdlib", "platstdlib", "site-packages", "platlib")


def check_environment(environment: Mapping[str, str], *, where: str) -> None:
    """Every entry named as `environment.EnvironmentMeasure` names them, with a sha256 (or,
    for `python`, an implementation and version such as `cpython-3.11.7`)."""
    for key, value in environment.items():
        if key == PYTHON:
            if not _PYTHON_VALUE.fullmatch(value):
                raise ReleaseInputError(
                    f"{where}[python]: {quoted(value)} must be an implementation and version "
                    "such as cpython-3.11.7"
                )
            continue
        if key not in (INTERPRETER, INTERPRETER_LIBRARY):
            area, _, name = key.partition("/")
            if area not in ENVIRONMENT_AREAS or not name or "/" in name:
                raise ReleaseInputError(
                    f"{where}: entry {quoted(key)} must be python, interpreter, interpreter-"
                    f"library or one of {', '.join(ENVIRONMENT_AREAS)} followed by /name"
                )
            check_artifact_path(key, where=where)
        if not is_sha256_hex(value):
            raise ReleaseInputError(f"{where}[{quoted(key)}]: must be 64 lower-case hex digits")


class ReleaseContents(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    artifacts: dict[str, str]
    config_sha256: str
    flag_schema: FlagSchema
    executables: tuple[str, ...] | None = None
    """The artifacts whose owner may execute them, sorted. None: not measured (a release
    signed, or a node built, before the execute bit was): nothing is compared then.

    A script shipped off (0644) and switched on by `chmod +x` on one node changed what runs
    without a byte changing, and was attested as the release. Only the owner's bit: a
    healthy host's umask (077) may take the group's and others' off."""
    environment: dict[str, str] | None = None
    """The interpreter, standard library and installed packages by entry
    (`environment.EnvironmentMeasure`). None: not measured (a release built without
    `--environment`: nothing is compared; a node started without measuring its own is
    refused by a release that names one)."""

    def __post_init__(self) -> None:
        for path, digest in self.artifacts.items():
            check_artifact_path(path, where="artifacts")
            if not is_sha256_hex(digest):
                raise ReleaseInputError(
                    f"artifacts[{quoted(path)}]: sha256 must be 64 lower-case hex digits"
                )
        if not is_sha256_hex(self.config_sha256):
            raise ReleaseInputError("config_sha256: must be 64 lower-case hex digits")
        for flag_id, digest in self.flag_schema.items():
            check_flag_id(flag_id, where="flag_schema")
            if not is_sha256_hex(digest):
                raise ReleaseInputError(
                    f"flag_schema[{flag_id!r}]: definition hash must be 64 lower-case hex digits"
                )
        if self.executables is not None:
            listed = self.executables
            if list(listed) != sorted(set(listed)):
                raise ReleaseInputError(
                    "executables: must be sorted, each path once (one list, one reading)"
                )
            stray = next((path for path in listed if path not in self.artifacts), None)
            if stray is not None:
                raise ReleaseInputError(
                    f"executables: {quoted(stray)} is not an artifact of this release"
                )
        if self.environment is not None:
            check_environment(self.environment, where="environment")


def hash_file(path: Path, what: str) -> tuple[str, int]:
    """The sha256 and mode of the regular file at `path`, checked on the descriptor read.

    Listing a file and opening it are two steps: a file replaced in between by a pipe (the
    open waited for a writer forever) or by a link to /dev/zero (it was read forever) hung
    `release build` and the node's measurement. The descriptor is opened without blocking
    and must be a regular file; one that changed while it was read (size, time or inode)
    has no single hash and is refused, never reported as bytes that never existed.
    OSError is left to the caller, which names the file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ReleaseInputError(
                f"{what} {path}: not a regular file when opened (replaced by a device, pipe "
                "or socket, or a link to one, while being measured): it cannot be measured"
            )
        _check_file_mode(before.st_mode, f"{what} {path}", path)
        digest = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        after = os.fstat(fd)
    if _version(before) != _version(after):
        raise ReleaseInputError(
            f"{what} {path}: changed while it was being hashed (size or modification time "
            "moved); measure again once the deploy has finished"
        )
    return digest.hexdigest(), before.st_mode


def _check_file_mode(mode: int, what: str, path: Path) -> None:
    """Refuse a file whose mode hands what runs to other accounts.

    The manifest holds bytes, not modes, so a file made writable by every account
    attested as before while anyone on the host could change it between attestations
    (a lazy import loads the changed bytes; they are put back before the next one), and
    a set-id file runs with its owner's rights whoever starts it. A group-writable file
    (umask 002) is left alone: modes differ so across healthy hosts. The owner's execute
    bit is measured, not refused (`ReleaseContents.executables`)."""
    if mode & stat.S_IWOTH:
        raise ReleaseInputError(
            f"{what}: writable by every account (mode {stat.S_IMODE(mode):04o}): any account "
            f"on the host could change what runs between attestations, so it cannot be "
            f"attested; run chmod o-w {path}"
        )
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise ReleaseInputError(
            f"{what}: set-user-id or set-group-id (mode {stat.S_IMODE(mode):04o}): it runs "
            f"with its owner's rights whoever starts it, so it cannot be attested; "
            f"run chmod ug-s {path}"
        )


def check_above(directory: str, what: str, checked: set[str]) -> None:
    """Refuse `what` when `directory` (a real path) or one above it is writable by every
    account and not sticky: anyone could move what is in it aside and put their own in
    its place (`/srv` left 0777 under `/srv/app`), and it would be measured as ours.
    A sticky one (/tmp) lets others add their own entries but never move ours.
    `checked` holds directories already passed, so a tree costs one stat a directory.
    OSError is left to the caller, which names the path."""
    here = directory
    while here not in checked:
        mode = os.stat(here).st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise ReleaseInputError(
                f"{what}: {here} above it: writable by every account (mode "
                f"{stat.S_IMODE(mode):04o}) and not sticky: any account on the host could put "
                f"another in place of what it holds, so it cannot be attested; "
                f"run chmod o-w {here}"
            )
        checked.add(here)
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


def _version(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def list_directory(root: Path) -> list[Path]:
    """Every regular file under root (symlinks followed), sorted by relative path.

    A symlinked directory is walked like any other (`Path.rglob` skipped it, so files a
    node runs from a linked directory were never measured, and drift there passed). What
    cannot be measured is refused, never skipped: a directory that cannot be listed, a
    broken symlink, a symlink back to a directory on its own path (it has no end), and a
    pipe, device or socket (a link to /dev/zero was left out of the manifest, unsaid).
    So is a directory (the root too, or a linked one's target) writable by every account:
    anyone could add or swap a file in it between attestations; and one above the tree or
    above a linked file's target that is writable by every account and not sticky.
    """
    try:
        is_dir = root.is_dir()
    except OSError as exc:  # a path too long, or no access to a directory above it
        raise ReleaseInputError(
            f"artifacts directory {root}: cannot examine it: {exc.strerror or exc}"
        ) from None
    if not is_dir:
        raise ReleaseInputError(f"artifacts directory {root}: not a directory")

    def unreadable(exc: OSError) -> NoReturn:
        raise ReleaseInputError(
            f"artifacts directory {root}: cannot list {exc.filename}: {exc.strerror or exc}"
        )

    def identity(path: str) -> tuple[int, int]:
        st = os.stat(path)
        if st.st_mode & stat.S_IWOTH:  # sticky too: others still add a module next to ours
            raise ReleaseInputError(
                f"artifacts directory {root}: {path}: writable by every account (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): any account on the host could add or swap "
                f"a file in it between attestations, so it cannot be attested; "
                f"run chmod o-w {path}"
            )
        return st.st_dev, st.st_ino

    try:
        top = identity(str(root))
    except OSError as exc:
        unreadable(exc)
    found: list[Path] = []
    above: dict[str, frozenset[tuple[int, int]]] = {str(root): frozenset({top})}
    for here, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        path_to_here = above.pop(here)
        for name in sorted(dirs):
            child = os.path.join(here, name)
            try:
                key = identity(child)
            except OSError as exc:
                unreadable(exc)
            if key in path_to_here:
                raise ReleaseInputError(
                    f"artifacts directory {root}: {child} links back to a directory above it "
                    "(a symlink loop); remove the link"
                )
            if len(path_to_here) > MAX_DEPTH:
                # os.walk recurses once a level: a tree nested past the interpreter's
                # recursion limit was a RecursionError traceback out of `release build`
                # and out of the node's measurement, which ended its attesting
                raise ReleaseInputError(
                    f"artifacts directory {root}: {quoted(child)} is nested more than "
                    f"{MAX_DEPTH} directories deep; artifact trees nest at most {MAX_DEPTH}"
                )
            above[child] = path_to_here | {key}
        for name in names:
            path = Path(here, name)
            try:  # a name that cannot be examined (a path too long, no access) is refused
                regular = path.is_file()  # too: a raw OSError stopped the node's attesting
                broken = not regular and path.is_symlink() and not path.exists()
                target = os.readlink(path) if broken else ""
            except OSError as exc:
                raise ReleaseInputError(
                    f"artifacts directory {root}: cannot examine {path}: {exc.strerror or exc}"
                ) from None
            if regular:
                found.append(path)
            elif broken:
                raise ReleaseInputError(
                    f"artifacts directory {root}: {path} is a broken symlink (its target "
                    f"{target!r} is missing); deploy the target or remove the link"
                )
            else:  # a pipe, device or socket (or a link to one) has no bytes to hash
                raise ReleaseInputError(
                    f"artifacts directory {root}: {path} is not a regular file (a device, "
                    "pipe or socket, or a link to one): it cannot be measured; remove it"
                )
    checked: set[str] = set()
    real: dict[str, str] = {}  # a directory as walked -> its real path, resolved once
    try:  # where the tree and each file really are: a link's target directory too
        check_above(os.path.realpath(root), f"artifacts directory {root}", checked)
        for path in found:
            if os.path.islink(path):
                where = os.path.dirname(os.path.realpath(path))
            else:
                walked = os.path.dirname(path)
                where = real.get(walked) or real.setdefault(walked, os.path.realpath(walked))
            check_above(where, f"artifact {path}", checked)
    except OSError as exc:
        unreadable(exc)
    files = sorted(found, key=lambda p: p.relative_to(root))
    for path in files:  # before any hashing: a manifest names its files in UTF-8 JSON
        relative = path.relative_to(root).as_posix()
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            raise ReleaseInputError(
                f"artifacts directory {root}: file name {quoted(os.fsencode(relative))} is not "
                "UTF-8; artifact paths must be UTF-8 (rename the file)"
            ) from None
        check_artifact_path(relative, where=f"artifacts directory {root}")
    return files


def measure_directory(
    root: Path, progress: Progress | None = None
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Each file's sha256 by relative path, and the files whose owner may execute them."""
    files = list_directory(root)
    hashes: dict[str, str] = {}
    executables: list[str] = []
    for done, path in enumerate(files, start=1):
        relative = path.relative_to(root).as_posix()
        try:
            hashes[relative], mode = hash_file(path, "artifact")
        except OSError as exc:
            raise ReleaseInputError(f"artifact {path}: cannot read: {exc.strerror}") from exc
        if mode & stat.S_IXUSR:
            executables.append(relative)
        if progress is not None:
            progress(done, len(files))
    return hashes, tuple(sorted(executables))


def hash_directory(root: Path, progress: Progress | None = None) -> dict[str, str]:
    return measure_directory(root, progress)[0]


def hash_config(path: Path) -> str:
    """The config file's sha256; a directory, device or pipe is refused (it has no end), and
    so is a config writable by every account or in a directory that lets anyone swap it."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ReleaseInputError(f"config file {path}: not a regular file")
        check_above(os.path.dirname(os.path.realpath(path)), f"config file {path}", set())
        return hash_file(path, "config file")[0]
    except OSError as exc:
        raise ReleaseInputError(f"config file {path}: cannot read: {exc.strerror}") from None


def contents_from_directory(
    artifacts: Path,
    config: Path,
    flag_schema: FlagSchema,
    progress: Progress | None = None,
    *,
    environment: Callable[[], dict[str, str]] | None = None,
) -> ReleaseContents:
    """A node's contents from disk; the flag schema is its compiled-in table, already read.
    `environment`: the node's Python environment is measured too (`EnvironmentMeasure`)."""
    hashes, executables = measure_directory(artifacts, progress)
    return ReleaseContents(
        artifacts=hashes,
        config_sha256=hash_config(config),
        flag_schema=dict(sorted(flag_schema.items())),
        executables=executables,
        environment=None if environment is None else environment(),
    )


def contents_from_memory(
    files: Mapping[str, bytes],
    config: bytes,
    flags: Mapping[str, object],
    *,
    executables: Iterable[str] = (),
) -> ReleaseContents:
    """The in-process form used by the replay: a file table instead of a disk (and the
    paths in it that are executable)."""
    return ReleaseContents(
        artifacts={
            check_artifact_path(path, where="files"): sha256_hex(data)
            for path, data in sorted(files.items())
        },
        config_sha256=sha256_hex(config),
        flag_schema=schema_from_table(dict(flags), where="flags"),
        executables=tuple(sorted(set(executables))),
    )
