"""Option values that choose what a command acts on: never widened by an empty string.

`--node "$NODE"` with NODE unset arrives as `""`. Read as "no option", it would
resume or kill the whole fleet; so an empty or blank scope value is an error
naming the option, and the fleet is chosen only by giving no scope option at all.

Output paths are checked here too, before a command does its work: a replay or
a lint can take minutes, and a result lost at the end to `--json /tmp` (a
directory) wastes all of them.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

import typer

from knightwatch.errors import KnightwatchError, escaped, quoted
from knightwatch.inputs import NAME_RULE, is_name
from knightwatch.order import MAX_ID_LEN, MAX_SYMBOL_LEN
from knightwatch.state import FLEET_KEY, Scope, pair_key


class OptionError(KnightwatchError, ValueError):
    """A command-line option value that cannot be used; the message names the option."""


def scope_value(
    option: str, value: str | None, *, absent: str = "to mean the whole fleet"
) -> str | None:
    """`value` as given, None if the option was not given; an empty or blank value raises.

    `absent` says what leaving the option out means, for the message."""
    if value is None:
        return None
    if not value.strip():
        raise OptionError(
            f"{option}: empty value (an unset shell variable?); give a name, "
            f"or leave the option out {absent}"
        )
    if value != value.strip():
        raise OptionError(f"{option}: leading or trailing whitespace in {quoted(value)}")
    if not value.isprintable():  # a newline would start a forged line in every node's log
        raise OptionError(f"{option}: control characters in {quoted(value)}")
    return value


REASON_MAX = 500
"""The longest `--reason` a command takes: the console's bound (`console.app.REASON_MAX`).
A reason is signed into the command, stored with it and sent to every node; one of
megabytes was past what the server takes in one message, and a kill with it waited out
its store deadline (15 s) to end "NOT DURABLE"."""


def reason_value(option: str, value: str) -> str:
    """`value`, checked before anything connects: a reason is recorded with the command,
    shown in every `status` and written to every node's log, so an empty or blank one
    (an unset shell variable), one longer than `REASON_MAX` or one with a control
    character (a newline forging a line, an escape sequence rewriting a terminal) is an
    `OptionError` naming `option` and the rule."""
    if not value.strip():
        raise OptionError(
            f"{option}: empty value (an unset shell variable?); say why, it is recorded "
            "with the command"
        )
    if len(value) > REASON_MAX:
        raise OptionError(
            f"{option}: at most {REASON_MAX} characters (got {len(value)}): "
            "keep the detail in the incident notes"
        )
    if not value.isprintable():
        raise OptionError(f"{option}: control characters in {quoted(value)}; write it on one line")
    return value


TIMEOUT_MAX = 300.0
"""The longest `--timeout` a kill, an approval or a flag change waits for confirmations.
Unbounded, `kill --node n9 --timeout inf` (or 1e10) for a node never heard from waited for
good: the kill went out, but its result, the nodes that did not confirm and the store's
answer were never shown, and the command never ended."""
TIMEOUT_LEAST = 0.01
"""The shortest `--timeout` waited as given."""
KILL_TIMEOUT_DEFAULT = 2.0


def wait_seconds(option: str, text: str, default: float, most: float) -> tuple[float, str]:
    """How long to wait for confirmations of a command that has to go out whatever its
    `option` says (a kill, a flag change), and what to tell the operator ("" if `text` is
    used as given). A wait longer than `most` (infinity too) is `most`; one that is no
    number of seconds from `TIMEOUT_LEAST` up (`0`, `-1`, `nan`, `5s`, an unset shell
    variable's `""`) is `default`. Only the wait is changed: the command is never refused
    for it."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if TIMEOUT_LEAST <= seconds <= most:
        return seconds, ""
    if seconds > most:
        return most, f"{option}: waiting at most {most:g} s for confirmations (got {seconds:g})"
    return default, (
        f"{option}: not a number of seconds from {TIMEOUT_LEAST:g} to {most:g} "
        f"(got {shown(quoted(text))}); waiting {default:g} s for confirmations"
    )


SCOPE_KEY_MAX = MAX_ID_LEN + 1 + MAX_SYMBOL_LEN
"""The longest scope key the kill-state store holds (`control.plane.wire.MAX_STATE_KEY`, a
test holds them equal; not imported from there: that loads the whole control package, 0.48 s
of a command's start measured alone)."""


def scope_of(node: str | None, strategy: str | None, symbol: str | None) -> tuple[Scope, str]:
    """The scope named by `--node`, `--strategy` and `--symbol`.

    `--strategy` and `--symbol` together name one strategy in one symbol (the
    scope the Guard's execution throttle halts), key "STRATEGY/SYMBOL".
    `--node` stands alone. None of them means the whole fleet.
    """
    node = scope_value("--node", node)
    strategy = scope_value("--strategy", strategy)
    if strategy is not None and "/" in strategy:
        raise OptionError(
            f"--strategy: must not contain '/' (it joins strategy and symbol in a halt key; "
            f"got {quoted(strategy)})"
        )
    symbol = scope_value("--symbol", symbol)
    if node is not None and (strategy is not None or symbol is not None):
        raise OptionError(
            "--node, --strategy, --symbol: --node stands alone; --strategy and --symbol may be "
            "given together (none means the whole fleet)"
        )
    # checked here, naming the option, not after connecting as "symbol key: ..." (a kill
    # looked refused by the server; a resume ran its preflight first)
    for option, value in (("--node", node), ("--strategy", strategy), ("--symbol", symbol)):
        if value is not None and len(value) > SCOPE_KEY_MAX:
            raise OptionError(
                f"{option}: at most {SCOPE_KEY_MAX} characters (got {len(value)}): "
                "no kill can be stored under a longer name"
            )
    if strategy is not None and symbol is not None:
        if len(pair_key(strategy, symbol)) > SCOPE_KEY_MAX:
            raise OptionError(
                f"--strategy, --symbol: at most {SCOPE_KEY_MAX} characters together, with the "
                f"'/' that joins them (got {len(strategy) + 1 + len(symbol)})"
            )
        return Scope.STRATEGY_SYMBOL, pair_key(strategy, symbol)
    if node is not None:
        if not is_name(node):
            # a look-alike (`ｎ1`, `n1.api`) names no node the roster can hold: its kill was
            # stored and sent while the real n1 went on trading ("not confirmed" at best)
            raise OptionError(
                f"--node: a node id is {NAME_RULE} (got {quoted(node)}); no node can have it"
            )
        return Scope.NODE, node
    if strategy is not None:
        return Scope.STRATEGY, strategy
    if symbol is not None:
        return Scope.SYMBOL, symbol
    return Scope.FLEET, FLEET_KEY


def node_list(option: str, value: str | None) -> tuple[str, ...]:
    """A comma-separated node list; not given means every node, given empty (or a name with
    a control character) is an error."""
    if value is None:
        return ()
    nodes = tuple(n.strip() for n in value.split(","))
    if not nodes or any(not n for n in nodes):
        raise OptionError(
            f"{option}: empty node name in {quoted(value)}; "
            "leave the option out to mean the whole fleet"
        )
    if not all(n.isprintable() for n in nodes):  # as `scope_value`: no forged log line
        raise OptionError(f"{option}: control characters in {quoted(value)}")
    return nodes


def nonempty_path(value: str | Path) -> Path:
    """A typer `parser` for a directory option: `--artifacts "$DIR"` with DIR unset arrives
    as `""`, which `Path` reads as `.`, so the command would hash or scan whatever directory
    it was started in. An empty or blank value is refused naming the option (exit 2).

    An option's own default (`--state-dir`'s `.knightwatch`) arrives as a `Path`: kept."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter(
            "empty path (an unset shell variable?); `.` must be written out to mean this directory"
        )
    return Path(value)


def shown(value: object) -> str:
    """`value` as text for one line of a terminal: every character that is not printable (a
    newline, an escape sequence, a carriage return, a file name's byte that is not UTF-8)
    escaped as `repr` writes it, so a name given on the command line or read from a file
    can neither rewrite the operator's screen nor add a line to the output."""
    return escaped(str(value))


def wrong_kind(path: Path, *, directory: bool) -> str:
    """What `path` is ("a file" or "a directory") when it exists as the other kind than
    wanted, else ""."""
    if path.exists() and path.is_dir() != directory:
        return "a directory" if path.is_dir() else "a file"
    return ""


def check_output(option: str, path: Path, *, directory: bool = False) -> None:
    """Refuse an output path that cannot be written as a file (or, `directory`, as one).

    A missing path is fine (it is created), as long as the nearest part of it that
    exists is a directory. A symbolic link loop (or a path that cannot be examined) is
    refused, and so is a link to nothing unless it is a file whose target's directory
    exists (it is written through the link; a directory is never made at one): each
    passed here and lost a run of minutes at its end ("Too many levels of symbolic
    links", "No such file or directory", "File exists").
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # the parent walk below names it
        if path.is_symlink():  # a link to nothing: a file is written through it, never made
            target = Path(os.path.realpath(path))
            if directory or not target.parent.is_dir():
                raise OptionError(
                    f"{option} {path}: a link to {target}, which does not exist"
                ) from None
    except OSError as exc:
        raise OptionError(f"{option} {path}: cannot be used: {exc.strerror or exc}") from None
    got = wrong_kind(path, directory=directory)
    if got:
        want = "a directory" if directory else "a file"
        raise OptionError(f"{option} {path}: is {got}; {option} must name {want}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(f"{option} {path}: {parent} is not a directory")


def check_writable(option: str, path: Path) -> None:
    """Refuse (`OptionError`, one line) a report file that cannot be written, before a run
    of minutes rather than with a traceback after it; a file this check creates is
    removed again."""
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise OptionError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None


def when(ns: int, *, millis: bool = False) -> str:
    """A stored instant (a lease, a roster's validity, a token's expiry: any integer a
    writer or an edited file put there) as UTC; one no calendar holds is said, not a
    traceback."""
    if not ns:
        return "-"
    try:
        shown = datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    except (OverflowError, ValueError, OSError):
        return "? (out of range)"
    return shown[:-3] if millis else shown[:-7]
