"""A key the server does not serve (never enrolled, or revoked) is told as a refused login,
against a real nats-server with authorization on: the key is named and the server is said to
answer. Before, the server's `Authorization Violation` was dropped while connecting and every
command read "control plane unreachable ... no servers available": a kill's operator was sent
to the runbook's outage section with a key no door would take. A server that is really gone
still reads as an outage."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import LoginRefused, NatsControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.site import Site
from knightwatch.release.keys import SigningKey, write_key_pair
from knightwatch.trust.identity import Signer

runner = CliRunner()


async def test_a_key_not_served_is_a_refused_login_naming_it_and_an_outage_stays_one(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", ("n1",))
    await site.astart()
    try:
        stranger = Signer("mallory", SigningKey.generate())  # never enrolled
        await site.publish(site.kit.revoke("bob", SystemClock().time_ns()))
        for signer in (stranger, site.signer("bob")):
            plane = NatsControlPlane(site.url, name="cli", signer=signer)
            with pytest.raises(LoginRefused) as refused:
                await plane.connect()
            why = str(refused.value)
            assert signer.key.key_id[:16] in why and signer.name in why, why
            assert "refused the login" in why and "not enrolled" in why, why
            assert "unreachable" not in why and "no servers available" not in why, why
        # an enrolled key still logs in
        alice = await site.connect("alice")
        await alice.close()
    finally:
        site.stop()
    gone = NatsControlPlane(site.url, name="cli", signer=site.signer("alice"))
    with pytest.raises(ControlPlaneUnavailable) as down:
        await gone.connect()
    assert not isinstance(down.value, LoginRefused)
    assert "unreachable" in str(down.value), down.value


COMMANDS = [
    ["kill", "--strategy", "s1", "--reason", "runaway"],
    ["resume", "--strategy", "s1", "--reason", "fixed"],
    ["status"],
    ["requests"],
]


def _invoke(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"COLUMNS": "300", **env})
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_every_command_with_a_key_not_on_the_roster_says_its_login_was_refused(
    args: list[str], nats_server: Site, tmp_path: Path
) -> None:
    """kill, resume and the commands that only read: exit 2, one line naming the key and
    the refusal; a kill says it was NOT sent."""
    key, path, _ = write_key_pair(tmp_path / "keys", "mallory")
    env = {**nats_server.cli_env("alice"), "KNIGHTWATCH_KEY": str(path)}
    code, out = _invoke(args, env)
    assert code == 2, out
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "refused the login of key " + key.key_id[:16] in out, out
    assert "not enrolled" in out and nats_server.url in out, out
    assert "unreachable" not in out and "no servers available" not in out, out
    assert "unnamed" not in out, out  # the placeholder --key is read under before the roster
    if args[0] == "kill":
        assert out.startswith("error: kill NOT sent"), out
        # no outage to wait out: another enrolled key now, not "as soon as it answers"
        assert "enrolled operator's key" in out and "as soon as" not in out, out


@pytest.mark.parametrize("args", COMMANDS[:2], ids=lambda a: a[0])
def test_a_command_against_a_stopped_server_still_reads_as_an_outage(
    args: list[str], tmp_path: Path
) -> None:
    site = Site(tmp_path / "site", ("n1",))
    site.start()
    env = site.cli_env("alice")
    site.stop()
    code, out = _invoke(args, env)
    assert code == 2, out
    assert "unreachable" in out and "refused the login" not in out, out
    if args[0] == "kill":
        assert out.startswith("error: kill NOT sent") and "runbook" in out, out
