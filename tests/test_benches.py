"""Every benchmark under bench/ still runs: each one, cut to a few seconds, must finish
and print its headline figure.

The benchmarks are how the README's numbers are reproduced, and two had stopped
starting without anyone noticing (the gateway bench once the gateway needed an
enrolled key, the fleet bench once nodes refused unsigned flag changes). These runs
check that they work, not what they measure: the figures come from full runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

CASES = {
    "guard": (["guard_bench.py", "--n", "20000", "--repeats", "1"], "ratio_p50"),
    "audit": (
        ["audit_bench.py", "--records", "2000", "--runs", "1", "--crashes", "2"],
        "files intact 2/2",
    ),
    "audit_readback": (
        [
            *("audit_bench.py", "--records", "1000", "--runs", "1", "--crashes", "0"),
            *("--readback", "3000"),
        ],
        "3,000 accepted ids, ",
    ),
    "kill": (["kill_bench.py", "--nodes", "2", "--kills", "5"], "kill p50"),
    "fleet": (
        ["fleet_bench.py", "--nodes", "1", "--admit-repeats", "1", "--flag-repeats", "2"],
        "flag_set_confirmed_p50_ms",
    ),
    "gateway": (
        ["gateway_bench.py", "--orders", "100", "--rounds", "1", "--warmup", "20"],
        "gateway / direct p50",
    ),
    "gateway_book": (["gateway_bench.py", "--book", "20000"], "kill/disconnect scan"),
    "orderids": (["orderids_bench.py", "--held", "20000", "--adds", "60000"], "max:"),
    "adapters": (
        ["adapters_bench.py", "--quotes", "2000", "--orders", "200", "--repeats", "1"],
        "ccxt+knightwatch",
    ),
    "console_auth": (["console_auth_bench.py", "--n", "3"], "authenticate_token"),
    "console": (
        [
            "console_bench.py",
            *("--samples", "2", "--warmup", "1", "--nodes", "1", "--screenshot", "shot.png"),
        ],
        "screenshot: shot.png",
    ),
    "replay": (["replay_bench.py", "--repeats", "1"], "events/wall-s"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_benchmark_runs_and_prints_its_figure(case: str, tmp_path: Path) -> None:
    args, headline = CASES[case]
    done = subprocess.run(
        [sys.executable, str(BENCH / args[0]), *args[1:]],
        cwd=tmp_path,  # nothing a bench writes by default lands in the repository
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert headline in out, out[-3000:]
