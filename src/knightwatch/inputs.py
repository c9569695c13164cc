"""Reading the files people and other programs hand us: checked before they are parsed.

Every file a command takes (limits, policies, registries, flag tables,
envelopes, manifests, keys, scenarios) goes through here, so one set of rules
holds everywhere: the size is checked before the file is read (a 50 MB YAML
file must not take a minute to refuse), the bytes must be UTF-8, an empty file
is an error, and nesting deeper than `MAX_DEPTH` is refused before a recursive
parser can exhaust the stack. A UTF-8 byte-order mark (BOM, which Windows editors
write) opening a text file is read past, as Python's `utf-8-sig` does: it marks the
encoding and is no part of the text, and YAML allows it, so TOML and YAML files read
alike (tomllib alone refused it as "Invalid statement (line 1, column 1)"). JSON
files are refused naming it (`check_json_depth`): their bytes are what is signed
and hashed, and JSON forbids it (RFC 8259 section 8.1). Errors are one line naming
the file and the rule (`InputFileError`, a `ValueError`), never a traceback.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from knightwatch.errors import KnightwatchError

KIB = 1024
MIB = 1024 * KIB
TOML_MAX_BYTES = 1 * MIB
"""Limits, policies, supervisor configs, rollout plans, scenarios: hand-written, small."""
YAML_MAX_BYTES = 2 * MIB
"""The flag registry and flag tables (a few thousand flags; YAML parses at ~1 MB/s)."""
JSON_MAX_BYTES = 16 * MIB
"""Release manifests and envelopes (one line per artifact)."""
KEY_MAX_BYTES = 64 * KIB
"""A PEM key is under a kilobyte."""
MAX_DEPTH = 32
"""No file knightwatch reads nests deeper than a few levels; 32 leaves room and the stack safe."""
UNDECODABLE = (msgspec.DecodeError, RecursionError)
"""What decoding bytes from outside the process (a stored record, a message, a file, an
HTTP body) raises when they are no value of the type: catch this, never msgspec's errors
alone. `msgspec.ValidationError` is a `DecodeError`; `RecursionError` is what msgspec
raises for JSON nested deeper than the interpreter's recursion limit inside a field the
type skips or holds as a generic value. Left uncaught, one such record kept a service
from starting and one such message killed the handler instead of refusing it."""


class InputFileError(KnightwatchError, ValueError):
    """A file that cannot be used; the message names the file, the field if known, and the rule."""


NAME_RULE = "1-64 letters, digits, - or _"
"""The rule for a person's or component's name (a signer, a roster member, a console user,
a node id), as error messages say it."""
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_name(name: str) -> bool:
    """True if `name` may name a person or component: one spelling for one name, so no
    padding, case trick or markup can make one person two, and no name can carry quotes,
    newlines or markup into a file or a log line."""
    return _NAME.fullmatch(name) is not None


def read_bytes(
    path: str | os.PathLike[str], what: str, max_bytes: int, *, allow_empty: bool = False
) -> bytes:
    """The file's bytes; refused when missing, a directory, over `max_bytes` or empty."""
    p = Path(path)
    try:
        st = os.stat(p)  # before opening: opening a FIFO would block
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError(f"{what} {p}: is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{what} {p}: not a regular file (a device, pipe or socket)")
        if st.st_size > max_bytes:
            raise InputFileError(
                f"{what} {p}: {st.st_size} bytes is over the {max_bytes} byte limit"
            )
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)  # it may have grown since the stat
    except FileNotFoundError:
        raise InputFileError(f"{what} {p}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {p}: is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(f"{what} {p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputFileError(f"{what} {p}: more than the {max_bytes} byte limit")
    if not allow_empty and not data.strip():
        raise InputFileError(f"{what} {p}: the file is empty")
    return data


UTF8_BOM = b"\xef\xbb\xbf"


def decode_utf8(data: bytes, source: str) -> str:
    """The text; a leading byte-order mark is read past (it marks the encoding only)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1]
        raise InputFileError(
            f"{source}: not UTF-8 text (byte {exc.start}, line {line}: {bad!r})"
        ) from None


def read_text(
    path: str | os.PathLike[str], what: str, max_bytes: int, *, allow_empty: bool = False
) -> str:
    """`read_bytes`, decoded as UTF-8 (the error names the first bad byte and its line)."""
    data = read_bytes(path, what, max_bytes, allow_empty=allow_empty)
    return decode_utf8(data, f"{what} {Path(path)}")


# A string, a comment, or a bracket: strings and comments are skipped whole, so only
# brackets that really open a level are counted. Covers JSON and TOML (both quote styles,
# multi-line strings, `#` comments).
_TOKENS = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'
    r"|'''.*?'''"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[\[\]{}]",
    re.S,
)


def check_depth(text: str, source: str, limit: int = MAX_DEPTH) -> None:
    """Refuse bracket nesting deeper than `limit` (JSON, TOML), before any parser runs."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, m.start()) + 1
                raise InputFileError(
                    f"{source}: line {line}: nested deeper than {limit} levels "
                    "(refused before parsing)"
                )
        elif c in "]}":
            depth -= 1


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """TOML with the depth checked first; a TOML error names its line and column."""
    check_depth(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{source}: not valid TOML: {exc}") from None
    except ValueError as exc:  # tomllib's own int(): Python converts at most 4300 digits
        why = str(exc)
        if "digits" in why:
            why = f"an integer with more than {sys.get_int_max_str_digits()} digits"
        raise InputFileError(f"{source}: not valid TOML: {why}") from None
    except RecursionError:
        raise InputFileError(f"{source}: nested too deeply to parse") from None


def load_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A TOML file: size, encoding, emptiness and depth checked, then parsed.

    A file with no settings (only comments) is refused like an empty one: a
    file given on purpose that says nothing is a mistake, not the defaults.
    """
    source = f"{what} {Path(path)}"
    data = parse_toml(read_text(path, what, TOML_MAX_BYTES), source)
    if not data:
        raise InputFileError(f"{source}: no settings (only comments); refused as empty")
    return data


def check_json_depth(data: bytes, source: str) -> None:
    """`check_depth` for JSON bytes (decoded leniently: only brackets matter here), and
    a leading byte-order mark named (a JSON parser says only "invalid character")."""
    if data.startswith(UTF8_BOM):
        raise InputFileError(
            f"{source}: starts with a UTF-8 byte-order mark (BOM), which JSON does not "
            "allow; save it as UTF-8 without a BOM"
        )
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:
        check_depth(data.decode("utf-8", "replace"), source)
