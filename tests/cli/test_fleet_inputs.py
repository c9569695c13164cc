"""The fleet CLI's inputs that reached the control plane before they were judged: a node
started with another identity's key, a server URL that is no URL, a scope name no kill can
be stored under, and a `--timeout` no wait should take. Each is one line naming the option
and its rule (exit 2), before anything connects where it can be; a kill is never held back
by its `--timeout`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli import fleet
from knightwatch.cli.app import app
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.plane.connect import FleetError
from knightwatch.control.serve import serve_node
from knightwatch.control.site import Site
from knightwatch.trust.identity import Signer

from ..identities import KIT

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)
DEAD = "nats://127.0.0.1:1"  # nothing listens: whatever is not refused first says "unreachable"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.fixture
def kit_dir(tmp_path: Path) -> Path:
    KIT.write(tmp_path / "trust", private=["alice", "n1"])
    return tmp_path


def as_alice(state: Path) -> list[str]:
    return ["--state-dir", str(state), "--key", str(state / "trust" / "keys" / "alice.key")]


async def test_a_node_given_another_identitys_key_is_refused_naming_key(tmp_path: Path) -> None:
    """`node --id n1 --key alice.key` (or n2's key) logged in as that identity, was refused
    every write as n1 and ended 9 s later with "control plane did not answer: nats:
    timeout". It is refused at once naming --key and whose key it is; the recorder is let
    go, so the node starts on it with its own key."""
    site = Site(tmp_path / "site", kit=KIT)
    await site.astart()
    (tmp_path / "state").mkdir()  # as `knightwatch node` makes it
    try:
        for owner in ("alice", "n2"):
            started = time.monotonic()
            with pytest.raises(FleetError) as refused:
                await serve_node(
                    "n1",
                    [site.url],
                    tmp_path / "state",
                    signer=Signer("n1", site.signer(owner).key),  # as `load_signer` names it
                    anchor=site.kit.anchor,
                    limits_path=None,
                    policy=LeasePolicy(),
                    recorder_path=tmp_path / "n1.jsonl",
                )
            message = str(refused.value)
            assert message.startswith("--key: ") and f"'{owner}'" in message, message
            assert "not for node 'n1'" in message, message
            assert time.monotonic() - started < 5.0
        stopped = await _serve_briefly(site, tmp_path)  # the recorder was not left held
        assert stopped
    finally:
        site.stop()


async def _serve_briefly(site: Site, tmp_path: Path) -> bool:
    """n1 with its own key on the same recorder, stopped once it has joined."""
    import asyncio
    import signal

    from knightwatch.control.node.runtime import NodeRuntime

    async def trader(runtime: NodeRuntime, stop: asyncio.Event) -> None:
        signal.raise_signal(signal.SIGTERM)
        await stop.wait()

    await serve_node(
        "n1",
        [site.url],
        tmp_path / "state",
        signer=site.signer("n1"),
        anchor=site.kit.anchor,
        limits_path=None,
        policy=LeasePolicy(),
        trader=trader,
        recorder_path=tmp_path / "n1.jsonl",
    )
    return True


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("nats://[::1", "not a URL"),
        ("nats://127.0.0.1:99999", "not a URL"),
        ("nats://127.0.0.1:port", "not a URL"),
        ("nats://127.0.0.1:0", "1-65535"),
        ("nats://", "names a host"),
        ("tls://:4222", "names a host"),
        ("nats://a b:4222", "no spaces or control characters"),
        ("nats://\x1b[2J:4222", "no spaces or control characters"),
    ],
)
@pytest.mark.parametrize("command", [["kill", "--reason", "x"], ["status"]])
def test_a_server_url_that_is_no_url_is_refused_naming_the_option(
    kit_dir: Path, url: str, rule: str, command: list[str]
) -> None:
    """`nats://[::1` ended a kill with "error: Invalid IPv6 URL" (naming neither the option
    nor that nothing was sent); a port past 65535 or no host was tried as a server."""
    code, out = invoke(*command, "--nats-url", url, *as_alice(kit_dir))
    assert code == 2, out
    assert out.startswith("error: --nats-url: ") and rule in out, out
    assert "\x1b" not in out and len(out.strip().splitlines()) == 1, out


def test_a_recorded_url_that_is_no_url_names_its_file(kit_dir: Path) -> None:
    (kit_dir / "nats.url").write_text("nats://[::1\n")
    code, out = invoke("kill", "--reason", "x", *as_alice(kit_dir))
    assert code == 2 and "nats.url: not a URL" in out and "--nats-url" in out, out


def test_good_server_urls_still_pass() -> None:
    for url in ("nats://127.0.0.1:4222", "tls://nats.example:4222", "nats://u:p@[::1]:4222",
                "nats://host"):  # fmt: skip
        assert fleet._url_problem(url) is None, url


@pytest.mark.parametrize(
    ("scope", "named"),
    [
        (["--symbol", "X" * 130], "--symbol: at most 129 characters (got 130)"),
        (["--node", "n" * 200], "--node: at most 129 characters (got 200)"),
        (["--strategy", "s" * 130], "--strategy: at most 129 characters"),
        (["--strategy", "s" * 64, "--symbol", "X" * 65], "--strategy, --symbol: at most 129"),
    ],
)
@pytest.mark.parametrize("command", [["kill", "--reason", "x"], ["resume", "--reason", "x"]])
def test_a_scope_name_no_kill_can_be_stored_under_is_refused_naming_the_option(
    kit_dir: Path, scope: list[str], named: str, command: list[str]
) -> None:
    """Refused before anything connects (it was refused by the store after connecting, as
    "symbol key: must be at most 129 characters", naming no option)."""
    code, out = invoke(*command, *scope, "--nats-url", DEAD, *as_alice(kit_dir))
    assert code == 2 and out.startswith(f"error: {named}"), out


def test_the_cli_bound_is_the_stores() -> None:
    from knightwatch.cli.options import SCOPE_KEY_MAX
    from knightwatch.control.plane.wire import MAX_STATE_KEY

    assert SCOPE_KEY_MAX == MAX_STATE_KEY


def test_the_longest_storable_scope_name_is_still_sent(kit_dir: Path) -> None:
    code, out = invoke("kill", "--reason", "x", "--strategy", "s" * 64, "--symbol", "X" * 64,
                       "--nats-url", DEAD, *as_alice(kit_dir))  # fmt: skip
    assert code == 2 and "kill NOT sent" in out, out  # judged fine: it went to connect


def test_a_kill_with_an_endless_timeout_is_sent_and_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kill --node n9 --timeout inf` for a node never heard from waited for good: the kill
    went out but the command never ended or showed what was not confirmed. The kill is
    still sent (a stop is never refused for its timeout), waiting at most TIMEOUT_MAX
    (made short here), and says so."""
    monkeypatch.setattr(fleet, "TIMEOUT_MAX", 0.3, raising=False)
    site = Site(tmp_path / "site", kit=KIT)
    site.start()
    try:
        env = site.cli_env("alice")
        for timeout in ("inf", "1e10"):
            started = time.monotonic()
            code, out = invoke("kill", "--node", "n9", "--reason", "gone", "--timeout", timeout,
                               "--state-dir", str(tmp_path), env=env)  # fmt: skip
            assert time.monotonic() - started < 30
            assert code == 1, out  # not confirmed
            assert "--timeout: waiting at most 0.3 s" in out, out
            assert "not confirmed: n9" in out and "stored at revision" in out, out
    finally:
        site.stop()


def test_approve_refuses_an_endless_timeout_naming_it(kit_dir: Path) -> None:
    code, out = invoke("approve", "abc123", "--timeout", "inf", "--nats-url", DEAD,
                       *as_alice(kit_dir))  # fmt: skip
    flat = " ".join(out.replace("\u2502", " ").split())
    assert code == 2 and "'--timeout'" in flat and "300" in flat, out
