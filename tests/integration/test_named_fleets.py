"""A named production fleet and a named staging fleet, the same people on both rosters.

Each is a real nats-server with authorization on, its roster naming its fleet
(`Roster.fleet`). What a person signs with the real tools (the kill switch's resume
request and co-signature, `flags approve`, `admission approve`, `admission target`)
names the fleet it was made in, and counts there only: made on staging it is refused
in production (`wrong_fleet`) and the other way round, while in its own fleet a kill,
the two-person resume, and a target change with its approval go through. Before, no
tool outside `trust/` filled the fleet in: a named fleet refused its own resumes,
approvals and target requests (fail closed), so nobody could run one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.killswitch import KillSwitchError
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import NatsControlPlane
from knightwatch.control.site import Site
from knightwatch.guard import Guard
from knightwatch.limits import Limits
from knightwatch.release.dsse import encode_envelope
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import ApprovalKind, check_approval, decode_approval_file
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role, Roster, TrustError
from knightwatch.trust.store import TrustStore
from knightwatch.trust.target import release_ref

from ..control.fleet_fixtures import POLICY
from .fleet_release import NEW_ROUTER, REGISTRY, Signers, deploy
from .test_fleet_governance import eventually

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
FLAG = "trading.x"


def casts() -> tuple[Kit, Kit]:
    """Staging and production: every person and admin holds the same key on both."""
    now = SystemClock().time_ns() - 1
    staging = Kit(now_ns=now, nodes=("n1",), fleet="staging")
    shared = {name: signer.key for name, signer in staging.signers.items()}
    production = Kit(now_ns=now, nodes=("n1",), fleet="production", node_keys=shared)
    for kit in (staging, production):
        kit.add("venue", [Role.VENUE])
    return staging, production


@pytest.fixture
async def fleets(tmp_path: Path) -> AsyncIterator[tuple[Site, Site]]:
    staging_kit, production_kit = casts()
    staging = Site(tmp_path / "staging", kit=staging_kit)
    production = Site(tmp_path / "production", kit=production_kit)
    started: list[Site] = []
    try:
        for site in (staging, production):
            await site.astart()
            started.append(site)
        yield staging, production
    finally:
        for site in started:
            site.stop()


async def cli(site: Site, who: str, *args: str | Path) -> tuple[int, str]:
    """One `knightwatch` command run as `who` against `site` (its key, anchor and URL)."""
    state = site.root / "cli-state"
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        [str(a) for a in (*args, "--state-dir", state)],
        env={"COLUMNS": "250", **site.cli_env(who)},
    )
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def roster(site: Site) -> Roster:
    assert site.kit.roster.fleet, "a named fleet"
    return site.kit.roster


def node(site: Site, plane: NatsControlPlane) -> NodeRuntime:
    clock = SystemClock()
    guard = Guard(
        Limits(lease_timeout_s=POLICY.lease_timeout_s, max_orders_per_s_symbol=None),
        node="n1",
        clock=clock,
    )
    guard.on_price("AAPL", 100.0)
    guard.arm("test")
    return NodeRuntime(
        guard, plane, clock=clock, policy=POLICY, trust=site.store(), signer=site.signer("n1")
    )


async def test_a_named_fleets_kill_and_resume_work_and_a_resume_from_the_other_is_refused(
    fleets: tuple[Site, Site],
) -> None:
    staging, production = fleets
    planes: list[NatsControlPlane] = []
    nodes: list[NodeRuntime] = []

    async def connect(site: Site, name: str) -> NatsControlPlane:
        planes.append(await site.connect(name))
        return planes[-1]

    try:
        switches = {}
        for site in (staging, production):
            runtime = node(site, await connect(site, "n1"))
            await runtime.start()
            nodes.append(runtime)
            ks = site.killswitch(await connect(site, "alice"), "alice")
            killed = await ks.kill(Scope.FLEET, "", "stop", timeout_s=10.0, targets=["n1"])
            assert killed.ok, killed  # a kill needs no fleet name
            assert runtime.guard.trading_state(Scope.FLEET) is TradingState.HALTED
            switches[site.kit.roster.fleet] = ks
        staging_node, production_node = nodes

        # a resume requested and co-signed on staging (the same two people) is refused by
        # production's kill switch, and production stays halted
        request = await switches["staging"].request_resume(Scope.FLEET, "", "fixed")
        crossed = request.cosigned(staging.signer("bob").key)
        with pytest.raises(KillSwitchError, match="wrong_fleet: resume fleet: it was made for "
                           "fleet 'staging'; this is fleet 'production'"):  # fmt: skip
            await switches["production"].apply_resume(crossed)
        assert production_node.guard.trading_state(Scope.FLEET) is TradingState.HALTED

        # each fleet's own two-person resume lifts its own halt, on its node
        for site, runtime in ((production, production_node), (staging, staging_node)):
            resumed = await switches[site.kit.roster.fleet].resume(
                Scope.FLEET, "", "fixed", timeout_s=10.0, approvers=(site.signer("bob"),)
            )
            assert resumed.ok, resumed
            await eventually(
                lambda r=runtime: r.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
            )
    finally:
        for runtime in nodes:
            await runtime.stop()
        for plane in planes:
            await plane.close()


async def test_flag_approvals_made_in_one_named_fleet_count_there_only(
    fleets: tuple[Site, Site], tmp_path: Path
) -> None:
    files = {}
    for site in fleets:
        fleet = site.kit.roster.fleet
        out = tmp_path / f"{fleet}-flag.json"
        code, text = await cli(
            site, "bob", "flags", "approve", FLAG, "on", "--for", "alice", "--reason", "ok",
            "--out", out,
        )  # fmt: skip
        assert code == 0 and "approved by bob" in text, text
        files[fleet] = decode_approval_file(out.read_bytes(), str(out))

    def judge(fleet: str, site: Site) -> str:
        return check_approval(
            files[fleet],
            roster(site),
            kind=ApprovalKind.FLAG,
            flag_id=FLAG,
            value=True,
            nodes=None,
            requester="alice",
            now_ns=SystemClock().time_ns(),
        )

    staging, production = fleets
    assert judge("staging", staging) == "bob"
    assert judge("production", production) == "bob"
    for made, site in (("staging", production), ("production", staging)):
        with pytest.raises(TrustError, match=f"approval fleet: it was made for fleet '{made}'"):
            judge(made, site)


async def test_a_target_change_in_a_named_fleet_takes_its_own_approval_not_the_others(
    fleets: tuple[Site, Site], tmp_path: Path
) -> None:
    staging, production = fleets
    signers = Signers()
    release = tmp_path / "r2.dsse.json"
    envelope = signers.release("r2", deploy(tmp_path / "good", NEW_ROUTER), REGISTRY.schema())
    release.write_bytes(encode_envelope(envelope))
    approvals = {}
    for site in fleets:
        fleet = site.kit.roster.fleet
        approvals[fleet] = tmp_path / f"{fleet}-target.json"
        code, text = await cli(
            site, "bob", "admission", "approve", release, "--for", "alice", "--reason", "ok",
            "--out", approvals[fleet],
        )  # fmt: skip
        assert code == 0 and "approved by bob: target release r2" in text, text
    release_id, digest = release_ref(envelope)
    for fleet, site in (("staging", production), ("production", staging)):
        with pytest.raises(TrustError, match=f"approval fleet: it was made for fleet '{fleet}'"):
            check_approval(
                decode_approval_file(approvals[fleet].read_bytes(), "approval"),
                roster(site),
                kind=ApprovalKind.TARGET,
                flag_id=release_id,
                value=True,
                nodes=None,
                requester="alice",
                now_ns=SystemClock().time_ns(),
                digest=digest,
            )

    plane = await production.connect("admission")
    try:
        service = AdmissionService(
            plane,
            signers.trust,
            REGISTRY.admission_schema(),
            clock=SystemClock(),
            roster=TrustStore(production.kit.anchor),
        )
        await service.start()
        # staging's approval does not set production's target
        code, text = await cli(
            production, "alice", "admission", "target", release, "--reason", "deploy",
            "--approval", approvals["staging"],
        )  # fmt: skip
        assert code == 1 and "REFUSED" in text, text
        assert "approval fleet: it was made for fleet 'staging'" in " ".join(text.split()), text
        # production's own does: the request alice signs names production too
        code, text = await cli(
            production, "alice", "admission", "target", release, "--reason", "deploy",
            "--approval", approvals["production"],
        )  # fmt: skip
        assert code == 0 and "target release r2 set" in text, text
    finally:
        await plane.close()


def test_a_site_refuses_a_fleet_name_its_kit_does_not_carry(tmp_path: Path) -> None:
    staging, _ = casts()
    with pytest.raises(TrustError, match="Site fleet: 'production' is not the kit's 'staging'"):
        Site(tmp_path / "site", kit=staging, fleet="production")
    assert not (tmp_path / "site").exists()  # nothing written for it
    assert Site(tmp_path / "named", nodes=("n1",), fleet="production").kit.roster.fleet == (
        "production"
    )
