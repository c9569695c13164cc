"""Kill propagation benchmark: command -> confirmation by all N node processes.

Side by side, in the same run and interleaved in blocks so both see the same
machine load, with the floor: a raw NATS core publish to N echo processes and
their N replies (the least any request-and-confirm protocol over this server
can cost on the same machine). Each kill is a real `KillSwitch.kill` (fast-path
announcement, durable store write, confirmations) handled by real
`knightwatch node` processes, each applying it to its Guard before confirming.
`--nodes 8,16,32` measures each fleet size in turn (a fresh server, fleet and
echo set per size) and prints one table. The server runs with authorization on,
every client logs in with its key, each kill is signed by the operator and each
node verifies the signature and the signer's role before applying it; the
floor's echo processes log in too.

Pacing: each kill and each probe starts `--gap` seconds after the previous one
was answered (default 0.05 s), longer than a node keeps a confirmed kill's
record and log line waiting (`REPORT_DELAY_S`, 0.02 s), so each kill meets a
fleet that has finished with the one before, as a real kill does. `--gap
0.002` fires them back to back instead: a stress pattern in which one kill's
bookkeeping lands in a later kill's (or probe's) window.

Each size also prints the CPU one node process
spends per kill against what one echo process spends per probe (Linux /proc; both
include what runs meanwhile, such as heartbeats): on a machine with fewer cores
than processes, latency follows the fleet's total CPU per command.

    .venv/bin/python bench/kill_bench.py [--kills 200] [--nodes 8,16,32] [--gap 0.05] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from knightwatch.cli.memory import serve_reads_from_heap
from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.plane.wire import FLEET_KEY
from knightwatch.control.site import Site
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.state import Scope
from knightwatch.trust.identity import load_signer
from knightwatch.trust.roster import Role

BLOCK = 25
FLOOR_SUBJECT = "kw.venue.orders"
"""A subject the echoes (venue identity) may read and answer and the prober (a node) may send."""


def cpu_ms(pids: list[int]) -> float:
    """User + system CPU the processes have used so far, in ms (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


async def echo(url: str, ident: str, key: str) -> None:
    """Floor subscriber: reply to every probe at once, as cheaply as the client allows (its
    socket reads served from the heap, as a node's are)."""
    serve_reads_from_heap()
    nc = await connect_as(load_signer(Path(key)), [url], name=f"echo-{ident}")
    payload = ident.encode()

    async def on_probe(msg: Msg) -> None:
        await nc.publish(msg.reply, payload)

    await nc.subscribe(FLOOR_SUBJECT, cb=on_probe)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def measure(n_nodes: int, n_kills: int, gap: float, console: Console) -> dict[str, float]:
    clock = SystemClock()
    with tempfile.TemporaryDirectory(prefix="kill-bench-") as tmp:
        state = Path(tmp)
        site = Site(state, [f"n{i}" for i in range(1, n_nodes + 1)])
        site.kit.add("bench", [Role.OPERATOR])
        site.kit.add("floor", [Role.NODE])  # may publish probes on the venue's subject
        site.kit.write(site.trust_dir, private=list(site.kit.signers))
        site.server.roster = site.kit.roster
        url = await site.astart()
        nodes = NodeProcesses([url], state, trust_dir=site.trust_dir)
        echoes: list[subprocess.Popen[bytes]] = []
        plane = site.plane("bench")
        try:
            ids = nodes.spawn_many(n_nodes)
            for i in range(n_nodes):
                p = subprocess.Popen(
                    [sys.executable, __file__, "--echo", url, f"e{i}", str(site.key_path("venue"))],
                    stdout=subprocess.PIPE,
                )
                echoes.append(p)
            for p in echoes:
                assert p.stdout is not None
                p.stdout.readline()
            await plane.connect()
            await wait_admitted(plane, ids, clock, timeout_s=30 + 2 * n_nodes)
            ks = site.killswitch(plane, "bench")
            await ks.start()

            nc = await connect_as(site.signer("floor"), [url], name="floor")
            inbox = nc.new_inbox()
            got: list[int] = []
            done = asyncio.Event()

            async def on_reply(msg: Msg) -> None:
                got.append(1)
                if len(got) == n_nodes:
                    done.set()

            await nc.subscribe(inbox, cb=on_reply)
            await nc.flush()

            async def floor_once() -> float:
                got.clear()
                done.clear()
                t0 = clock.monotonic_ns()
                await nc.publish(FLOOR_SUBJECT, b"x", reply=inbox)
                await asyncio.wait_for(done.wait(), 2)
                return (clock.monotonic_ns() - t0) / 1e6

            async def kill_once() -> float:
                r = await ks.kill(Scope.FLEET, FLEET_KEY, "bench", timeout_s=2.0, targets=ids)
                if r.missing or r.revision is None:
                    raise RuntimeError(f"kill not confirmed by {r.missing} / {r.durable_error}")
                return max(r.latencies_ms.values())

            for _ in range(20):  # warm-up, not measured
                await floor_once()
                await kill_once()
                await asyncio.sleep(gap)
            kills: list[float] = []
            floors: list[float] = []
            node_pids = [p.pid for p in nodes.procs.values()]
            echo_pids = [p.pid for p in echoes]
            node_cpu, echo_cpu = cpu_ms(node_pids), cpu_ms(echo_pids)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("kills", total=n_kills)
                while len(kills) < n_kills:
                    for _ in range(BLOCK):
                        floors.append(await floor_once())
                        await asyncio.sleep(gap)
                    for _ in range(min(BLOCK, n_kills - len(kills))):
                        kills.append(await kill_once())
                        progress.advance(task)
                        await asyncio.sleep(gap)
            node_cpu = (cpu_ms(node_pids) - node_cpu) / n_nodes / len(kills)
            echo_cpu = (cpu_ms(echo_pids) - echo_cpu) / n_nodes / len(floors)
            await nc.close()
        finally:
            await plane.close()
            for p in echoes:
                p.kill()
                p.wait()
            nodes.stop()
            site.stop()
    return {
        "nodes": n_nodes,
        "kills": len(kills),
        "floor_samples": len(floors),
        "kill_p50_ms": round(statistics.median(kills), 3),
        "kill_p99_ms": round(percentile(kills, 99), 3),
        "kill_p999_ms": round(percentile(kills, 99.9), 3),
        "kill_max_ms": round(max(kills), 3),
        "floor_p50_ms": round(statistics.median(floors), 3),
        "floor_p99_ms": round(percentile(floors, 99), 3),
        "floor_p999_ms": round(percentile(floors, 99.9), 3),
        "floor_max_ms": round(max(floors), 3),
        # per process and command, with the background both kinds run meanwhile (heartbeats)
        "node_cpu_ms_per_kill": round(node_cpu, 3),
        "echo_cpu_ms_per_probe": round(echo_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--kills", type=int, default=200, help="measured kills per size (>= 200 for the target)"
    )
    parser.add_argument("--nodes", default="8", help="fleet sizes, comma-separated (8,16,32)")
    parser.add_argument(
        "--gap", type=float, default=0.05, help="seconds between one answer and the next command"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--echo", nargs=3, metavar=("URL", "ID", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        asyncio.run(echo(*args.echo))
        return
    try:
        sizes = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        parser.error(f"--nodes: must be comma-separated integers (got {args.nodes!r})")
    if args.kills < 1 or min(sizes) < 1:
        parser.error("--kills and --nodes: must be >= 1")
    if not 0 <= args.gap <= 10:
        parser.error(f"--gap: must be between 0 and 10 seconds (got {args.gap})")
    console = Console()
    results = []
    for n in sizes:
        result = asyncio.run(measure(n, args.kills, args.gap, console))
        result["gap_s"] = args.gap
        result["p50_ratio"] = round(result["kill_p50_ms"] / result["floor_p50_ms"], 2)
        result["p99_ratio"] = round(result["kill_p99_ms"] / result["floor_p99_ms"], 2)
        result["p999_ratio"] = round(result["kill_p999_ms"] / result["floor_p999_ms"], 2)
        results.append(result)
        console.print(
            f"{n} nodes: kill p50 {result['kill_p50_ms']} ms p99 {result['kill_p99_ms']} ms; "
            f"floor p50 {result['floor_p50_ms']} ms p99 {result['floor_p99_ms']} ms; "
            f"CPU per node process and kill {result['node_cpu_ms_per_kill']} ms, "
            f"per echo process and probe {result['echo_cpu_ms_per_probe']} ms"
        )
    table = Table(
        title=f"kill (signed, verified by each node) -> confirmed by every node process "
        f"({args.kills} kills per size, {args.gap:g} s apart)"
    )
    for col in (
        "nodes",
        "kill p50 ms",
        "kill p99 ms",
        "kill max ms",
        "floor p50 ms",
        "floor p99 ms",
        "kill/floor p50",
        "kill/floor p99",
        "kill/floor p99.9",
        "target p99 <= x2.0",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r["nodes"]),
            str(r["kill_p50_ms"]),
            str(r["kill_p99_ms"]),
            str(r["kill_max_ms"]),
            str(r["floor_p50_ms"]),
            str(r["floor_p99_ms"]),
            f"x{r['p50_ratio']:.2f}",
            f"x{r['p99_ratio']:.2f}",
            f"x{r['p999_ratio']:.2f}",
            "MET" if r["p99_ratio"] <= 2.0 else "MISSED",
        )
    console.print(table)
    console.print(
        "floor = a raw NATS core publish to as many echo processes and their replies, "
        "interleaved with the kills in blocks of 25"
    )
    if args.json:
        out = results[0] if len(results) == 1 else {"sizes": results}
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(out)))


if __name__ == "__main__":
    main()
