"""The fleet commands' text, in and out: a `--reason` is checked before anything connects,
and text someone else stored is shown with its control characters escaped.

A reason is signed into the command, stored, shown by every `status` and logged by
every node: an empty one was refused only after connecting (as "reason:", naming no
option), one of megabytes was sent and its store write waited out for 15 s ("NOT
DURABLE", exit 1), and a newline or an escape sequence was stored as given. A stored
reason, key, host or verdict printed with an escape sequence in it reached the operator's
terminal as is: "\\x1b[2K\\x1b[1A" erases the line above (a HALTED row), "\\r" rewrites
the line it is on. A real nats-server (`nats_server`), as the other CLI tests run it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.options import REASON_MAX, OptionError, reason_value
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

from ..identities import KIT

pytestmark = pytest.mark.timeout(90)

runner = CliRunner()
NOWHERE = "nats://127.0.0.1:1"
"""A URL nothing listens on: a command that got past its options would fail differently."""
ESCAPES = "\x1b[2K\x1b[1A\r\x07\u202e"
"""Erase the line, move up, return to the line's start, bell, right-to-left override."""


def run(site: Site | None, who: str, *args: str) -> tuple[int, str]:
    env = {"COLUMNS": "400", **(site.cli_env(who) if site is not None else {})}
    result = runner.invoke(app, list(args), env=env)
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{args[:2]}: {exc!r}"
    return result.exit_code, result.output


BAD_REASONS = [
    ("", "--reason: empty value"),
    ("   ", "--reason: empty value"),
    ("x" * (REASON_MAX + 1), f"--reason: at most {REASON_MAX} characters (got {REASON_MAX + 1})"),
    ("x" * 2_000_000, f"--reason: at most {REASON_MAX} characters (got 2000000)"),
    ("line one\n2026-12-06 WARNING KILL_SWITCH forged", "--reason: control characters"),
    ("r" + ESCAPES, "--reason: control characters"),
    ("tab\there", "--reason: control characters"),
    ("nul\x00", "--reason: control characters"),
]


@pytest.mark.parametrize(("reason", "message"), BAD_REASONS)
def test_a_bad_reason_is_one_line_before_any_key_is_read_or_anything_connects(
    tmp_path: Path, reason: str, message: str
) -> None:
    """No key exists and nothing listens: the reason is what is refused, first, exit 2.
    A kill is never held back by its reason's form: only a blank one is refused; one too
    long or with control characters goes out cleaned (here it then fails on the key)."""
    missing = str(tmp_path / "no.key")
    common = ["--key", missing, "--nats-url", NOWHERE, "--state-dir", str(tmp_path)]
    envelope = str(tmp_path / "release.json")
    for args in (
        ["kill", "--reason", reason],
        ["kill", "--drain", "--symbol", "IBM", "--reason", reason],
        ["resume", "--reason", reason],
        ["admission", "approve", envelope, "--for", "bob", "--out", str(tmp_path / "a.json"),
         "--reason", reason],
        ["admission", "target", envelope, "--reason", reason],
    ):  # fmt: skip
        code, out = run(None, "", *args, *common)
        if args[0] == "kill" and reason.strip():
            assert "--reason: sent cleaned" in out and "no.key" in out, (args[:2], out)
            assert "\x1b" not in out and "\r" not in out, out
            continue
        assert code == 2, (args[:2], out)
        assert out.startswith(f"error: {message}"), (args[:2], out)
        assert len(out.strip().splitlines()) == 1 and len(out) < 400, (args[:2], out)
        assert "no.key" not in out and "unreachable" not in out, (args[:2], out)
        assert not (tmp_path / "a.json").exists()


def test_reason_value_keeps_every_reason_it_does_not_refuse() -> None:
    for ok in ("x", "x" * REASON_MAX, "runaway on n3, 09:31 [see ticket]", "é ü 日本"):
        assert reason_value("--reason", ok) == ok
    with pytest.raises(OptionError, match="--why: empty value"):
        reason_value("--why", "\n")


def test_a_reason_at_the_bound_is_sent_and_stored_at_once(nats_server: Site) -> None:
    started = time.monotonic()
    code, out = run(nats_server, "alice", "kill", "--symbol", "BOUND", "--reason", "r" * REASON_MAX)
    assert code == 0 and "stored at revision" in out, out
    assert time.monotonic() - started < 10, "the store write waited out its deadline"


def test_a_kill_with_a_pasted_multi_line_reason_goes_out_cleaned(nats_server: Site) -> None:
    """The stop direction is never held back by how its reason is written: a pasted log
    line (a newline, an escape) or a reason of megabytes is sent as one line at the bound,
    and the operator sees what went out."""
    pasted = "runaway n3\n2026-12-06 09:31 ERROR " + ESCAPES + "x" * 3_000
    code, out = run(nats_server, "alice", "kill", "--symbol", "PASTED", "--reason", pasted)
    assert code == 0 and "stored at revision" in out, out
    assert "--reason: sent cleaned" in out and "\x1b" not in out, out

    async def stored() -> str:
        plane = await nats_server.connect("alice")
        try:
            entry, _ = await plane.get_state(Scope.SYMBOL, "PASTED")
        finally:
            await plane.close()
        assert entry is not None
        return entry.reason

    reason = asyncio.run(stored())
    assert reason.startswith("runaway n3\\n2026-12-06") and len(reason) == REASON_MAX
    assert reason.isprintable()


def _store_hostile_records(site: Site) -> None:
    """What others may store: a kill and a resume request (by alice, through the kill switch,
    which takes any reason), a node's membership record (as n1), a verdict (as admission)."""

    async def store() -> None:
        plane = await site.connect("alice")
        try:
            ks = site.killswitch(plane, "alice")
            await ks.kill(Scope.SYMBOL, "ESC", f"halted{ESCAPES}", timeout_s=0.1)
            await Requests(ks).create(Scope.SYMBOL, "ESC", f"asked{ESCAPES}", preflight="p\r")
        finally:
            await plane.close()
        node = await site.connect("n1")
        try:
            await node.put_member(
                NodeStatus(
                    node_id="n1", host=f"h{ESCAPES}", pid=7, started_ns=0, seen_ns=0,
                    lease_expires_ns=0, admitted=True, armed=True,
                    node_state=TradingState.ACTIVE, last_command_id="c\x1b[2J",
                    refused=1, last_refusal=f"why{ESCAPES}", duplicate="d\r",
                )
            )  # fmt: skip
        finally:
            await node.close()
        admission = await site.connect("admission")
        try:
            verdict = Verdict(
                node="n2", admitted=False, status=f"s{ESCAPES}", release_id="rel\x1b[2J",
                manifest_digest="", at_ns=0, findings=(),
            )  # fmt: skip
            await admission.put_record(Bucket.ADMISSION, "n2", ENCODER.encode(verdict))
        finally:
            await admission.close()

    asyncio.run(store())


def test_status_and_requests_escape_control_characters_in_stored_text(
    nats_server: Site,
) -> None:
    _store_hostile_records(nats_server)
    shown = "\\x1b[2K\\x1b[1A\\r\\x07\\u202e"
    code, out = run(nats_server, "carol", "status")
    assert code == 0, out
    for raw in ("\x1b", "\r", "\x07", "\u202e"):
        assert raw not in out, (raw, out)
    for text in (f"halted{shown}", f"h{shown}:7", f"why{shown}", "d\\r", f"s{shown}", "rel\\x1b"):
        assert text in out, (text, out)
    code, out = run(nats_server, "carol", "requests")
    assert code == 0, out
    assert "\x1b" not in out and "\r" not in out and f"asked{shown}" in out, out


@pytest.mark.parametrize("given", ["", " ", ",", " , "])
@pytest.mark.parametrize("command", [["kill", "--reason", "r"], ["status"], ["requests"]])
def test_a_nats_url_given_with_no_url_in_it_is_refused_not_read_as_the_recorded_server(
    nats_server: Site, tmp_path: Path, given: str, command: list[str]
) -> None:
    """`--nats-url "$PROD"` with PROD unset: the command went to the server the state
    directory recorded (here a live one), and a kill was stored and "confirmed" there."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "nats.url").write_text(nats_server.url + "\n")
    for how in (["--nats-url", given], []):
        env = {"COLUMNS": "400", **nats_server.cli_env("alice")}
        if how:
            del env["KNIGHTWATCH_NATS_URL"]
        else:
            env["KNIGHTWATCH_NATS_URL"] = given
            if not given.strip():
                continue  # an empty variable is no variable: the recorded server, by design
        result = runner.invoke(app, [*command, *how, "--state-dir", str(state)], env=env)
        flat = " ".join(result.output.replace("\u2502", " ").split())
        assert result.exit_code == 2, (how, result.output)
        assert "'--nats-url'" in flat and "no URL in it" in flat, (how, result.output)
    code, out = run(nats_server, "carol", "status")
    assert code == 0 and "HALTED" not in out, out  # nothing was killed


@pytest.mark.parametrize(
    ("recorded", "message"),
    [
        (b"\xff\xfe nats://", "not a server URL (not UTF-8 text)"),
        (b"garbage\n", "each URL must start with nats:// or tls:// (got 'garbage')"),
        (b"http://127.0.0.1:4222\n", "each URL must start with nats:// or tls://"),
        (None, "cannot read (Is a directory)"),
    ],
)
def test_a_recorded_server_url_that_cannot_be_used_names_its_file(
    tmp_path: Path, recorded: bytes | None, message: str
) -> None:
    """A state directory's nats.url that is not text, no NATS URL, or a directory: one line
    naming the file and the rule, exit 2, for the kill as for the rest."""
    kit = tmp_path / "k"
    KIT.write(kit, private=["alice"])
    state = tmp_path / "state"
    state.mkdir()
    path = state / "nats.url"
    if recorded is None:
        path.mkdir()
    else:
        path.write_bytes(recorded)
    key = ["--key", str(kit / "keys" / "alice.key"), "--anchor", str(kit / "anchor.toml")]
    for command in (["kill", "--reason", "r"], ["status"]):
        result = runner.invoke(app, [*command, *key, "--state-dir", str(state)], env={
            "COLUMNS": "400", "KNIGHTWATCH_NATS_URL": ""})  # fmt: skip
        out = result.output
        assert result.exit_code == 2, (command, out)
        assert out.startswith(f"error: {path}: {message}"), (command, out)
        assert len(out.strip().splitlines()) == 1, (command, out)
