"""A command's `--timeout` (how long it waits for nodes to confirm) never keeps a stop from
going out, and never makes a command wait for good.

`kill --timeout 0` (or `-1`, `nan`, `5s`, an unset variable's `""`) was refused at parsing,
exit 2: the kill was not sent, against the promise that a kill is never held back for its
`--timeout`. `flags set --timeout` had the same refusal for a switch back to the safe
default, and took `inf`, waiting for a node that never confirms for good after the change
was applied. `console serve --kill-timeout inf` had every console kill do the same."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.cli import flags, fleet
from knightwatch.cli.app import app
from knightwatch.cli.options import wait_seconds
from knightwatch.clock import SystemClock
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import NodeStatus, Verdict
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.state import TradingState

from ..identities import KIT

pytestmark = pytest.mark.timeout(90)
runner = CliRunner()
CLEAN = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo"
RLP = "trading.smars.rlp_enabled"
UNUSABLE = ("0", "-1", "-inf", "nan", "5s", "", " ")


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("text", UNUSABLE)
def test_a_wait_that_is_no_usable_number_is_the_default_and_said(text: str) -> None:
    seconds, why = wait_seconds("--timeout", text, 2.0, 300.0)
    assert seconds == 2.0
    assert why.startswith("--timeout: not a number of seconds from 0.01 to 300"), why
    assert f"(got {text!r})" in why and "waiting 2 s" in why, why


def test_a_wait_in_range_is_kept_and_one_too_long_is_the_most() -> None:
    assert wait_seconds("--timeout", "0.5", 2.0, 300.0) == (0.5, "")
    for text in ("inf", "1e10", "301"):
        seconds, why = wait_seconds("--timeout", text, 2.0, 300.0)
        assert seconds == 300.0 and why.startswith("--timeout: waiting at most 300 s"), why
    _, why = wait_seconds("--timeout", "\x1b[2J", 2.0, 300.0)
    assert "\x1b" not in why and "\\x1b[2J" in why, why


def test_a_kill_with_an_unusable_timeout_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each unusable `--timeout` still sends and stores the kill (waiting the default, made
    short here), and says what it waited."""
    monkeypatch.setattr(fleet, "KILL_TIMEOUT_DEFAULT", 0.3, raising=False)
    site = Site(tmp_path / "site", kit=KIT)
    site.start()
    try:
        env = site.cli_env("alice")
        for text in UNUSABLE:
            started = time.monotonic()
            code, out = invoke("kill", "--node", "n9", "--reason", "gone", "--timeout", text,
                               "--state-dir", str(tmp_path), env=env)  # fmt: skip
            assert time.monotonic() - started < 30
            assert code == 1, out  # sent, n9 not confirmed
            assert f"--timeout: not a number of seconds from 0.01 to 300 (got {text!r})" in out
            assert "waiting 0.3 s for confirmations" in out, out
            assert "not confirmed: n9" in out and "stored at revision" in out, out
    finally:
        site.stop()


def _member_that_never_confirms(site: Site, registry: Path) -> None:
    """n1: admitted on a release that knows RLP, live, and never confirming anything."""
    schema = FlagRegistry.load(registry).schema()

    async def store() -> None:
        now = SystemClock().time_ns()
        n1 = await site.connect("n1")
        admission = await site.connect("admission")
        try:
            await n1.put_member(
                NodeStatus("n1", "h", 1, now, now, now + 10**12, True, True, TradingState.ACTIVE)
            )
            verdict = Verdict("n1", True, "admitted", "r2", "d" * 64, (), now, schema)
            await admission.put_record(Bucket.ADMISSION, "n1", msgspec.json.encode(verdict))
        finally:
            await n1.close()
            await admission.close()

    asyncio.run(store())


def test_a_flag_switch_off_is_applied_whatever_its_timeout_and_ends(
    nats_server: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flags set RLP off --timeout 0` was refused (exit 2, nothing applied); `--timeout inf`
    applied it and then waited for n1 for good. Both apply it and end, naming n1 as not
    confirmed (exit 1)."""
    monkeypatch.setattr(flags, "TIMEOUT_MAX", 0.3, raising=False)
    registry = tmp_path / "feature-flags.yaml"
    shutil.copy(CLEAN / "feature-flags.yaml", registry)
    _member_that_never_confirms(nats_server, registry)
    env = nats_server.cli_env("erin")
    for revision, (text, said) in enumerate(
        (
            ("0", "--timeout: not a number of seconds from 0.01 to 0.3 (got '0'); waiting 2 s"),
            ("inf", "--timeout: waiting at most 0.3 s for confirmations (got inf)"),
        ),
        start=1,
    ):
        started = time.monotonic()
        code, out = invoke("flags", "set", RLP, "off", "--reason", "stop", "--registry",
                           str(registry), "--timeout", text, env=env)  # fmt: skip
        assert time.monotonic() - started < 30
        assert said in out, out
        assert "applied" in out and f"revision {revision}" in out, out
        assert code == 1 and "not confirmed: n1" in out, out


def test_the_consoles_kill_timeout_is_bounded_naming_it(tmp_path: Path) -> None:
    """`console serve --kill-timeout inf` had every kill from the console wait for a dead
    node for good, its result never shown: refused at start, naming the option."""
    for text in ("inf", "1e10", "301"):
        code, out = invoke("console", "serve", "--kill-timeout", text, "--state-dir",
                           str(tmp_path), "--nats-url", "nats://127.0.0.1:1")  # fmt: skip
        flat = " ".join(out.replace("\u2502", " ").split())
        assert code == 2 and "'--kill-timeout'" in flat and "300" in flat, out
