"""Fleet governance timings: admit N node processes; `flags set` to confirmation by all N.

Same code paths as `knightwatch up` and `knightwatch flags set`: a release built
and signed by `LocalRelease`, the admission service, real `knightwatch node`
processes with their release inputs, the activation gate over the live fleet
view, and each node's `NodeFlags` confirming the revision it applied.

    .venv/bin/python bench/fleet_bench.py --nodes 8 --admit-repeats 5 --flag-repeats 50 \\
        --json f.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from datetime import date
from pathlib import Path

import yaml

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.admission import AdmissionService
from knightwatch.control.fleet.flagstore import AppliedWaiter, PlaneFlagStore, fleet_snapshot
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.site import Site
from knightwatch.flags.activation import ActivationGate, ActivationRequest
from knightwatch.flags.registry import FlagRegistry
from knightwatch.sim.drill.local_release import LocalRelease
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.trust.flagproof import FlagSealer
from knightwatch.trust.store import TrustStore

FLAG = "ops.bench.probe"
REGISTRY = {
    "version": 1,
    "flags": [
        {
            "id": FLAG,
            "description": "Benchmark probe flag; changes nothing.",
            "owner": "ops-team",
            "created": date(2024, 1, 1),
            "expires": date(2099, 12, 31),
            "lifecycle": "active",
            "safe_default": False,
            "trading_behaviour": False,
        }
    ],
}


def quantiles(xs: list[float]) -> tuple[float, float]:
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


async def run(n: int, admit_repeats: int, flag_repeats: int, root: Path) -> dict[str, float]:
    registry_path = root / "feature-flags.yaml"
    registry_path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = FlagRegistry.load(registry_path)
    clock = SystemClock()
    ids = [f"n{i}" for i in range(1, n + 1)]
    site = Site(root, ids)
    await site.astart()
    try:
        plane = await site.connect("alice")
        release = LocalRelease(root, registry_path)
        await asyncio.to_thread(release.build)
        assert release.trust is not None
        admission = await site.connect("admission")
        roster = TrustStore(site.kit.anchor)
        await AdmissionService(
            admission, release.trust, release.registry, clock=clock, roster=roster
        ).start()
        await release.set_target(plane, site.signer("alice"), site.signer("bob"), clock.time_ns())
        inputs = {i: await asyncio.to_thread(release.deploy, i) for i in ids}
        procs = NodeProcesses([site.url], root, policy=LeasePolicy(), trust_dir=site.trust_dir)
        admit_ms: list[float] = []
        flag_ms: list[float] = []
        try:
            for r in range(admit_repeats):
                t0 = clock.monotonic_ns()
                for i in ids:
                    procs.spawn(i, inputs[i])
                await wait_admitted(plane, ids, clock, timeout_s=60)
                admit_ms.append((clock.monotonic_ns() - t0) / 1e6)
                print(f"admit {r + 1}/{admit_repeats}: {admit_ms[-1]:.0f} ms", flush=True)
                if r + 1 < admit_repeats:
                    await asyncio.to_thread(procs.stop)
            waiter = AppliedWaiter(plane, clock)
            await waiter.start()
            store = PlaneFlagStore(plane, clock)
            # signed by alice, as `knightwatch flags set` signs: nodes refuse an unsigned change
            sealer = FlagSealer(site.signer("alice"), roster.roster)
            for r in range(flag_repeats):
                view = await fleet_snapshot(plane, clock)
                gate = ActivationGate(registry, view, store, clock, sealer=sealer)
                request = ActivationRequest(FLAG, r % 2 == 0, "alice", "probe", "fleet_bench")
                t0 = clock.monotonic_ns()
                result = await asyncio.to_thread(gate.apply, request)
                assert result.accepted and result.state is not None, result.detail
                latencies, missing = await waiter.wait(FLAG, result.state.revision, ids, t0, 5.0)
                assert not missing, f"not confirmed: {missing}"
                flag_ms.append(max(latencies.values()))
        finally:
            await asyncio.to_thread(procs.stop)
            await plane.close()
            await admission.close()
    finally:
        site.stop()
    admit_p50, admit_p99 = quantiles(admit_ms)
    flag_p50, flag_p99 = quantiles(flag_ms)
    return {
        "nodes": n,
        "admit_repeats": admit_repeats,
        "flag_repeats": flag_repeats,
        "admit_all_p50_ms": admit_p50,
        "admit_all_p99_ms": admit_p99,
        "flag_set_confirmed_p50_ms": flag_p50,
        "flag_set_confirmed_p99_ms": flag_p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--admit-repeats", type=int, default=5)
    parser.add_argument("--flag-repeats", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kw-fleet-bench-") as tmp:
        figures = asyncio.run(run(args.nodes, args.admit_repeats, args.flag_repeats, Path(tmp)))
    for key, value in figures.items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
