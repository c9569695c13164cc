"""`knightwatch identity` on a named fleet, and naming an unnamed one.

A roster names its fleet (`Roster.fleet`) and every later version must keep the
name. `identity add|revoke|rotate` built the next version without it, so on a
named fleet every roster change was refused at publish ("a fleet's roster keeps its
name"): nobody could enrol, revoke or rotate a key there. And nothing let the admins
name a fleet: `identity name FLEET` proposes the version that does (once), and
`identity show` says which fleet the roster is for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.control.site import Site

runner = CliRunner()
pytestmark = pytest.mark.timeout(90)


def site_of(tmp_path: Path, fleet: str) -> Iterator[Site]:
    site = Site(tmp_path / "site", nodes=("n1",), fleet=fleet)
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture
def named(tmp_path: Path) -> Iterator[Site]:
    yield from site_of(tmp_path, "prod-ldn")


@pytest.fixture
def unnamed(tmp_path: Path) -> Iterator[Site]:
    yield from site_of(tmp_path, "")


def invoke(site: Site, who: str, *args: str | Path) -> tuple[int, str]:
    state = () if args[:2] == ("identity", "new") else ("--state-dir", site.root / "cli-state")
    result = runner.invoke(
        app,
        [str(a) for a in (*args, *state)],
        env={"COLUMNS": "250", **site.cli_env(who)},
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def change(site: Site, tmp_path: Path, verb: str, *args: str | Path) -> str:
    """admin1 proposes, admin2 signs, admin1 publishes; the publish's output."""
    proposal = tmp_path / f"{verb}-{time.monotonic_ns()}.json"
    code, out = invoke(site, "admin1", "identity", verb, *args, "--out", proposal)
    assert code == 0 and "2 admin signature(s) needed" in out, out
    code, out = invoke(site, "admin2", "identity", "sign", proposal)
    assert code == 0 and "admin1, admin2" in out, out
    return invoke(site, "admin1", "identity", "publish", proposal)[1]


def test_a_named_fleets_roster_changes_keep_its_name(named: Site, tmp_path: Path) -> None:
    code, out = invoke(named, "admin1", "identity", "new", "dave", "--dir", tmp_path)
    assert code == 0, out
    v = named.kit.roster.version  # the site's own versions (the venue enrolled)
    add = ("dave", "--public", tmp_path / "dave.pub", "--role", "operator")
    out = change(named, tmp_path, "add", *add)
    assert f"roster version {v + 1} published" in out, out
    out = change(named, tmp_path, "revoke", "dave")
    assert f"roster version {v + 2} published" in out, out
    code, out = invoke(named, "carol", "identity", "show")
    assert code == 0 and "fleet prod-ldn" in out and f"roster version {v + 2}" in out, out


def test_an_unnamed_fleet_is_named_once_by_its_admins(unnamed: Site, tmp_path: Path) -> None:
    code, out = invoke(unnamed, "carol", "identity", "show")
    assert code == 0 and "fleet not named" in out, out
    code, out = invoke(
        unnamed, "admin1", "identity", "name", "prod ldn", "--out", tmp_path / "bad.json"
    )
    assert code == 2 and "FLEET: a fleet name must be" in out, out
    assert not (tmp_path / "bad.json").exists()
    v = unnamed.kit.roster.version
    out = change(unnamed, tmp_path, "name", "staging")
    assert f"roster version {v + 1} published" in out, out
    # every process follows it (the CLI reads the roster in force from the store)
    deadline = time.monotonic() + 30
    while "fleet staging" not in (out := invoke(unnamed, "carol", "identity", "show")[1]):
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
    code, out = invoke(
        unnamed, "admin1", "identity", "name", "other", "--out", tmp_path / "again.json"
    )
    assert code != 0 and "named 'staging' already" in out, out
    assert not (tmp_path / "again.json").exists()
    # and its next changes keep the name
    code, out = invoke(unnamed, "admin1", "identity", "new", "erin", "--dir", tmp_path)
    assert code == 0, out
    out = change(unnamed, tmp_path, "add", "erin", "--public", tmp_path / "erin.pub",
                 "--role", "viewer")  # fmt: skip
    assert f"roster version {v + 2} published" in out, out
