"""Console kill benchmark: what the browser adds to a kill, against the CLI, in one run.

The console is only worth having if its red button is not slower than the
command line by anything a person could notice. This measures both on ONE
fleet (`knightwatch up`, N node processes, started with the harness in
`knightwatch.console.local`), interleaved (browser, CLI, browser, CLI, ...)
so both see the same machine noise. Every sample kills a NEW strategy
(`bench-b-<i>` from the browser, `bench-c-<i>` from the CLI), so every node
applies and confirms it; nothing is reused or cached.

Browser (the distribution's chromium, headless, driven by Playwright's async
API; one logged-in page for the whole run): the panel is filled and the
confirmation dialog opened by Playwright, then, before the click, a small
script is installed in the page. It records the click's own `event.timeStamp`
(the time chromium received the input, on the `performance.now()` clock) from
a capturing listener, and a MutationObserver on the kill result records when
the title says the kill's outcome and every node's row carries its latency;
it then waits for the next animation frame plus one task (the frame that
paints those rows) and records that too. The figure reported as
"browser click -> last row shown" is painted-frame minus click, all measured
inside the page: Playwright's round trips (before the click and while Python
waits for the result) are not counted. The POST's JSON (the console server's
per-node latencies) is captured from the response, outside the timing.

Console server: the max over nodes of the latencies the kill POST returns:
the console's `KillSwitch.kill` from signing the command to the last node's
confirmation (the same code and clock the CLI uses).

CLI: `knightwatch kill --strategy bench-c-<i> --reason bench` as a subprocess
with alice's key, the fleet's NATS URL and trust anchor in the environment.
"CLI kill -> last confirmation" is the max over the per-node latencies it
prints (its own measure, from signing to the last confirmation, without
Python start-up or connecting); "CLI process wall" is the subprocess's wall
time from spawn to exit, start-up and connection included, reported apart.
Each CLI kill is the first one of a fresh process (cold code paths, and its
own start-up still competing for the CPU), while the console's kill switch is
warm; so "browser p50 - console server p50" is printed too: what HTTP, the
page's script and the paint add over the same kill.

The machine is small and shared; read the medians. With the default 30
samples p99 is within one sample of the max.

    .venv/bin/python bench/console_bench.py [--samples 30] [--warmup 3] [--nodes 3]
        [--json FILE] [--screenshot docs/images/console-kill.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright, expect
from rich.console import Console
from rich.table import Table

from knightwatch.console.local import (
    PASSWORD,
    ConsoleProc,
    Fleet,
    running_console,
    running_fleet,
)

TARGET_MS = 100.0
"""What the browser may add over the CLI's own measure, at the median."""

CHROMIUM_ENV = "KW_CHROMIUM"
LATENCY = re.compile(r"(\d+(?:\.\d+)?) ms\b")

# Installed before each click. Resolves with the click's time and the times the
# kill's outcome was in the DOM and painted (all on the page's performance.now() clock).
ARM = """
([key, nodes]) => {
  const out = { click: null, clickSeen: null, dom: null, painted: null, title: "", cells: [] };
  window.__kwBench = new Promise((resolve) => {
    document.getElementById("kill-now").addEventListener("click", (e) => {
      out.click = e.timeStamp;
      out.clickSeen = performance.now();
    }, { capture: true, once: true });
    const done = () => {
      // each kill draws its own panel on the click: the newest holds these ids
      const title = document.getElementById("kill-result-title");
      const table = document.getElementById("kill-rows");
      if (title === null || table === null) return false;
      const rows = table.tBodies[0];
      const t = title.textContent;
      if (!t.includes(` ${key}: `)) return false;
      const outcome = t.includes("confirmed (") || t.startsWith("refused");
      if (!outcome) return false;
      const cells = Array.from(rows.rows, (r) => r.cells[1] ? r.cells[1].textContent : "");
      const final = cells.filter((c) => c.endsWith(" ms") || c.startsWith("NOT CONFIRMED"));
      if (!t.startsWith("refused") && (cells.length < nodes || final.length < cells.length)) {
        return false;
      }
      out.title = t;
      out.cells = cells;
      return true;
    };
    const observer = new MutationObserver(() => {
      if (out.dom !== null || !done()) return;
      out.dom = performance.now();
      observer.disconnect();
      requestAnimationFrame(() => {
        const channel = new MessageChannel();
        channel.port1.onmessage = () => { out.painted = performance.now(); resolve(out); };
        channel.port2.postMessage(null);
      });
    });
    observer.observe(document.getElementById("kill-result"),
                     { subtree: true, childList: true, characterData: true });
  });
}
"""


@dataclass
class Series:
    browser_ms: list[float] = field(default_factory=list)
    browser_dom_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    cli_ms: list[float] = field(default_factory=list)
    cli_wall_ms: list[float] = field(default_factory=list)
    click_lag_ms: list[float] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs), 3),
        "p90_ms": round(percentile(xs, 90), 3),
        "p99_ms": round(percentile(xs, 99), 3),
        "max_ms": round(max(xs), 3),
    }


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        sys.exit(f"error: no browser at {path}: install chromium or set {CHROMIUM_ENV}")
    return path


async def login(browser: Browser, console: ConsoleProc, name: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(console.url + "/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await page.wait_for_url(console.url + "/")
    return page


async def browser_kill(page: Page, key: str, nodes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One strategy kill through the panel; (in-page times, the POST's JSON)."""
    await page.select_option("#kill-scope", "strategy")
    await page.fill("#kill-key", key)
    await page.fill("#kill-reason", "bench")
    await page.click("#kill-button")
    await page.fill("#kill-confirm", key)
    await page.evaluate(ARM, [key, nodes])
    async with page.expect_response(lambda r: r.url.endswith("/api/kill")) as answer:
        await page.click("#kill-now")
    times: dict[str, Any] = await page.evaluate("window.__kwBench")
    response = await answer.value
    body: dict[str, Any] = await response.json()
    await response.finished()
    times["http"] = response.request.timing["responseEnd"]
    return times, body


async def cli_kill(fleet: Fleet, key: str) -> tuple[float, list[float], int, str]:
    """One strategy kill by the CLI; (wall ms, printed per-node ms, exit code, output)."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "knightwatch", "kill", "--strategy", key, "--reason", "bench",
        env=fleet.cli_env("alice"), cwd=fleet.state,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    wall = (time.perf_counter() - t0) * 1000
    text = out.decode(errors="replace")
    return wall, [float(m) for m in LATENCY.findall(text)], proc.returncode or 0, text


def record_browser(
    s: Series, key: str, nodes: int, times: dict[str, Any], body: dict[str, Any]
) -> None:
    lat = body.get("latencies_ms") or {}
    if not body.get("ok") or len(lat) != nodes or "every live node confirmed" not in times["title"]:
        s.odd.append(f"browser {key}: {times['title']!r} missing={body.get('missing')}")
        return
    s.browser_ms.append(times["painted"] - times["click"])
    s.browser_dom_ms.append(times["dom"] - times["click"])
    s.click_lag_ms.append(times["clickSeen"] - times["click"])
    s.server_ms.append(max(lat.values()))
    if times["http"] > 0:
        s.http_ms.append(times["http"])


def record_cli(s: Series, key: str, nodes: int, got: tuple[float, list[float], int, str]) -> None:
    wall, lat, code, text = got
    if code != 0 or len(lat) != nodes:
        s.odd.append(f"cli {key}: exit {code}, {len(lat)} of {nodes} confirmed: {text[-300:]!r}")
        return
    s.cli_ms.append(max(lat))
    s.cli_wall_ms.append(wall)


async def run(
    console: ConsoleProc, nodes: int, samples: int, warmup: int, shot: Path | None, out: Console
) -> Series:
    s = Series()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            page = await login(browser, console, "alice")
            # A locator, not wait_for_function: the console's CSP forbids eval, which
            # Playwright's string predicates use once they have to poll.
            await expect(page.locator("#nodes tbody tr")).to_have_count(nodes, timeout=30_000)
            for w in range(warmup):
                await browser_kill(page, f"bench-wb-{w}", nodes)
                if w == 0 and shot is not None:
                    await page.locator("#halts tbody tr", has_text=f"bench-wb-{w}").wait_for()
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(shot), full_page=True)
                await cli_kill(console.fleet, f"bench-wc-{w}")
            for i in range(samples):
                times, body = await browser_kill(page, f"bench-b-{i}", nodes)
                record_browser(s, f"bench-b-{i}", nodes, times, body)
                record_cli(s, f"bench-c-{i}", nodes, await cli_kill(console.fleet, f"bench-c-{i}"))
                if (i + 1) % 10 == 0 or i + 1 == samples:
                    out.print(f"  {i + 1}/{samples} samples of each", highlight=False)
        finally:
            await browser.close()
    return s


def report(s: Series, nodes: int, samples: int, out: Console) -> dict[str, Any]:
    rows = [
        ("browser click -> last row shown (painted frame)", s.browser_ms),
        ("  of which: click -> rows in the DOM", s.browser_dom_ms),
        ("  of which: POST /api/kill round trip (chromium's timing)", s.http_ms),
        ("console server kill -> last confirmation", s.server_ms),
        ("CLI kill -> last confirmation (its own measure)", s.cli_ms),
        ("CLI process wall (Python start + connect + kill)", s.cli_wall_ms),
    ]
    table = Table(title=f"kill of a new strategy scope, {nodes} nodes, {samples} samples each")
    table.add_column("measure")
    for col in ("n", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    figures: dict[str, Any] = {}
    for name, xs in rows:
        f = summary(xs)
        figures[name.strip()] = f
        if f["n"]:
            table.add_row(
                name,
                str(f["n"]),
                *(f"{f[k]:.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            )
        else:
            table.add_row(name, "0", "-", "-", "-", "-")
    out.print(table)
    verdict: dict[str, Any] = {"target_ms": TARGET_MS}
    if s.browser_ms and s.cli_ms:
        added = statistics.median(s.browser_ms) - statistics.median(s.cli_ms)
        ok = added < TARGET_MS
        verdict |= {"browser_p50_minus_cli_p50_ms": round(added, 3), "pass": ok}
        out.print(
            f"browser p50 - CLI p50 = {added:.1f} ms (target: browser adds < {TARGET_MS:.0f} ms "
            f"at p50): {'[green]PASS[/green]' if ok else '[red]MISS[/red]'}",
            highlight=False,
        )
    if s.browser_ms and s.server_ms:
        over = statistics.median(s.browser_ms) - statistics.median(s.server_ms)
        verdict["browser_p50_minus_server_p50_ms"] = round(over, 3)
        out.print(
            f"browser p50 - console server p50 = {over:.1f} ms (HTTP, page script and paint over "
            "the same warm kill switch; the CLI's own measure is a cold process's first kill)",
            highlight=False,
        )
    if s.click_lag_ms:
        lag = statistics.median(s.click_lag_ms)
        out.print(
            f"click event timeStamp -> its listener: p50 {lag:.2f} ms (in the browser figure)",
            highlight=False,
        )
    for line in s.odd:
        out.print(f"[yellow]not counted:[/yellow] {line}", highlight=False)
    return {
        "nodes": nodes,
        "samples": samples,
        "figures": figures,
        "verdict": verdict,
        "not_counted": s.odd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=30, help="counted kills of each kind")
    parser.add_argument("--warmup", type=int, default=3, help="uncounted kills of each kind")
    parser.add_argument("--nodes", type=int, default=3, help="node processes in the fleet")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--screenshot",
        type=Path,
        default=Path("docs/images/console-kill.png"),
        help="full-page PNG of the fleet page right after the first kill",
    )
    args = parser.parse_args()
    if args.samples < 1 or args.warmup < 1 or args.nodes < 1:
        parser.error("--samples, --warmup and --nodes must be at least 1")
    out = Console(width=120)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="console-bench-")))
        out.print(f"starting a fleet of {args.nodes} nodes and the console...")
        fleet = stack.enter_context(running_fleet(tmp / "fleet", nodes=args.nodes))
        console = stack.enter_context(running_console(fleet))
        series = asyncio.run(
            run(console, args.nodes, args.samples, args.warmup, args.screenshot, out)
        )
    result = report(series, args.nodes, args.samples, out)
    if args.screenshot is not None:
        out.print(f"screenshot: {args.screenshot}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
