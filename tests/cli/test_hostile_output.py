"""What the fleet commands print when the values they show are hostile: shown as written.

A kill reason, a scope key, a resume request's reason, a node's membership record or an
admission verdict is text someone else wrote. Printed through console markup unescaped,
"[/x]" ends the command with a traceback (a kill reason with brackets made `status`
unusable during the incident it was about) and "[red]" or "[link=...]" is rendered
instead of shown. A time no calendar holds is "? (out of range)", not a traceback.
A real nats-server (`nats_server`), records written as the identities that may write
them, the commands run as an operator runs them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.fleet.approvals import Requests
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import ENCODER, NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.release.reasons import AdmissionReason, Finding
from knightwatch.state import Scope, TradingState

pytestmark = pytest.mark.timeout(90)

runner = CliRunner()
HOSTILE = ("[/x]", "[red]boom[/red]", "[link=https://evil]x[/link]")
"""A closing tag that matches nothing (a MarkupError), a style, a link: each shown as is."""
FAR = 10**30
"""Nanoseconds no calendar holds (a record can carry any integer)."""


def run(site: Site, who: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "400", **site.cli_env(who)})
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{args[:2]}: {type(exc).__name__}: {exc}"  # an exception escaped: a traceback
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("text", HOSTILE)
def test_kill_and_status_show_a_hostile_reason_and_key_as_written(
    text: str, nats_server: Site
) -> None:
    """The kill is sent and stored whatever its reason and key say; its report and `status`
    show both literally (the kill's own report ended in a traceback after it was sent)."""
    code, out = run(nats_server, "alice", "kill", "--symbol", text, "--reason", f"r {text}")
    assert code == 0 and "stored at revision" in out, out
    title = "".join(f"kill symbol {text!r}: HALTED".split())
    assert title in "".join(out.split()), out  # the title wraps at the table's width
    code, out = run(nats_server, "carol", "status")
    assert code == 0, out
    row = next(line for line in out.splitlines() if "HALTED" in line)
    assert f"│ {text} " in row and f"│ r {text} " in row and "alice" in row, out
    code, out = run(nats_server, "carol", "status", "--symbol", text)
    assert code == 0 and f"r {text}" in out, out


@pytest.mark.parametrize(
    "args",
    [
        ["kill", "--reason", "r", "--strategy", "a[/x]"],  # refused: '/' in a strategy
        ["resume", "--reason", "r", "--symbol", "[red]s "],  # refused: trailing space
        ["status", "--node", "[red]n\t"],  # refused: a control character
        ["node", "--id", "[/x]", "--key", "n1.key"],  # refused: not a node id
        ["kill", "--reason", "r", "--nats-url", "http://[/x]"],
    ],
)
def test_an_error_quoting_hostile_input_is_one_line(args: list[str], nats_server: Site) -> None:
    """An error message that quotes what was given shows it as given: one line, exit 2."""
    code, out = run(nats_server, "bob", *args)
    assert code == 2 and out.startswith("error: "), out
    shown = next(a for a in args if "[" in a)
    assert repr(shown)[1:-1] in out or shown in out, out


def test_requests_show_a_hostile_request_as_written(nats_server: Site) -> None:
    async def store() -> None:
        plane = await nats_server.connect("alice")
        try:
            ks = nats_server.killswitch(plane, "alice")
            await ks.kill(Scope.SYMBOL, "[/k]", "[red]halted[/red]", timeout_s=0.1)
            await Requests(ks).create(
                Scope.SYMBOL, "[/k]", "[/x] [link=https://evil]go[/link]", preflight="[/p] pass"
            )
        finally:
            await plane.close()

    asyncio.run(store())
    code, out = run(nats_server, "carol", "requests")
    assert code == 0, out
    row = next(line for line in out.splitlines() if "pending" in line)
    for shown in ("symbol [/k]", "[/x] [link=https://evil]go[/link]", "[/p] pass"):
        assert shown in row, (shown, out)
    code, out = run(nats_server, "carol", "status")
    assert code == 0 and "[red]halted[/red]" in out, out


def test_status_shows_hostile_member_and_verdict_records_and_any_time(
    nats_server: Site,
) -> None:
    """A node's membership record and the admission service's verdict, each written by the
    identity that may write it, with markup for text and times no calendar holds."""

    async def store() -> None:
        node = await nats_server.connect("n1")
        try:
            await node.put_member(
                NodeStatus(
                    node_id="n1", host="[/h]", pid=7, started_ns=0, seen_ns=FAR,
                    lease_expires_ns=FAR, admitted=True, armed=True,
                    node_state=TradingState.ACTIVE, last_command_id="[red]cmd",
                    last_confirmed_ns=FAR, refused=2, last_refusal="[/why]",
                    duplicate="[link=https://evil]d[/link]",
                )
            )  # fmt: skip
        finally:
            await node.close()
        admission = await nats_server.connect("admission")
        try:
            verdict = Verdict(
                node="n2", admitted=False, status="[/refused]", release_id="[red]rel",
                manifest_digest="", at_ns=-FAR,
                findings=(Finding(AdmissionReason.FILE_MISMATCH, "[/bin]", "[/changed]"),),
            )  # fmt: skip
            await admission.put_record(Bucket.ADMISSION, "n2", ENCODER.encode(verdict))
        finally:
            await admission.close()

    asyncio.run(store())
    code, out = run(nats_server, "carol", "status")
    assert code == 0, out
    for shown in (
        "[/h]:7",
        "[red]cmd ? (out of range)",
        "[/why]",
        "DUPLICATE id at [link=https://evil]d[/link]",
        "[/refused]",
        "[red]rel",
        "[/bin]: [/changed]",
    ):
        assert shown in out, (shown, out)
    assert out.count("? (out of range)") == 2, out  # the confirmation and the verdict


CLEAN_REGISTRY = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"


def test_flags_list_and_show_print_a_hostile_registry_as_written(
    nats_server: Site, tmp_path: Path
) -> None:
    """A registry is a file in a repository anyone can send a change to: its description,
    owner and history (and its file name) are shown as written."""
    text = (CLEAN_REGISTRY / "feature-flags.yaml").read_text()
    for plain, hostile in (
        ("description: Dark theme for the operator dashboard.", 'description: "[/x] [red]d"'),
        ("owner: ops-team", 'owner: "[link=https://evil]ops[/link]"'),
        ("actor: alice", 'actor: "[/alice]"'),
    ):
        assert plain in text
        text = text.replace(plain, hostile, 1)
    (tmp_path / "[").mkdir()
    registry = tmp_path / "[" / "flags].yaml"  # the path reads ".../[/flags].yaml"
    registry.write_text(text)
    code, out = run(nats_server, "carol", "flags", "list", "--registry", str(registry))
    assert code == 0, out
    assert "[/flags].yaml" in out and "[link=https://evil]ops[/link]" in out, out
    code, out = run(
        nats_server,
        "carol",
        "flags",
        "show",
        "ops.dashboard.dark_mode",
        "--registry",
        str(registry),
    )
    assert code == 0, out
    assert "[/x] [red]d" in out and "owner [link=https://evil]ops[/link]" in out, out
    assert "no state: every node evaluates the safe default" in out, out
    code, out = run(
        nats_server, "carol", "flags", "show", "trading.smars.rlp_enabled", "--registry",
        str(registry),
    )  # fmt: skip
    assert code == 0 and "[/alice]: created" in out, out
