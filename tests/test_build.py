"""The build in use is the one asked for; the compiled Guard decides and records as the pure one.

`make test` runs this suite twice: on the editable, pure package (.venv) and
on the mypyc-compiled one (.venv-mypyc, with KNIGHTWATCH_EXPECT_BUILD=mypyc).
The equivalence test runs one scripted session (accepted, blocked and odd
orders, halts, fills, cancels, prices, a duplicate window) in two processes,
one on the pure source tree and one on the installed package, and compares
every decision and every flight-recorder byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from knightwatch import build

SRC = Path(__file__).parents[1] / "src"

SESSION = textwrap.dedent(
    """
    import msgspec, sys
    from knightwatch import build
    from knightwatch.audit import FlightRecorder
    from knightwatch.clock import SimClock
    from knightwatch.guard import Guard
    from knightwatch.limits import Limits
    from knightwatch.order import Fill, Order, Side
    from knightwatch.state import Scope, TradingState

    clock = SimClock(1_343_828_400_000_000_000)
    rec = FlightRecorder(None, clock=clock, batch_size=7)
    limits = Limits(
        max_order_qty=500, max_position_qty=800, max_orders_per_s_symbol=3,
        max_child_orders_per_parent=4, duplicate_id_window_s=2.0,
        max_tracked_order_ids=100_000, lease_timeout_s=None, max_loss=5_000.0,
    )
    g = Guard(limits, node="n1", clock=clock, recorder=rec)
    g.set_context(release_id="rel-1", flag_snapshot_id="fs-1")
    out = []
    def check(o):
        d = g.check(o)
        out.append((ascii(getattr(o, "id", o)), d.accepted, d.reason.value, ascii(d.detail)))
    check(Order("early", "s", "IBM", Side.BUY, 1, 100.0))          # not armed
    g.arm("t")
    check(Order("noref", "s", "IBM", Side.BUY, 1, 100.0))          # no reference price
    g.on_price("IBM", 100.0); g.on_price("MSFT", 50.0)
    g.register_parent("P", 1_000)
    for i in range(12):
        clock.advance(100_000_000)
        side = Side.BUY if i % 3 else Side.SELL
        sym = "IBM" if i % 4 else "MSFT"
        px = (100.0 if sym == "IBM" else 50.0) + i / 10
        check(Order(f"o{i}", "s", sym, side, 50 + 50 * i, px,
                    "P" if i % 2 else None))
    check(Order("o3", "s", "IBM", Side.BUY, 1, 100.0))              # duplicate in window
    check(Order("int-price", "s", "IBM", Side.BUY, 1, 100))         # an int price is valid
    clock.advance(3_000_000_000)
    check(Order("o3", "s", "IBM", Side.BUY, 1, 100.0))              # after the window
    odd = msgspec.convert({"id": "x", "strategy": "s", "symbol": "IBM", "side": "buy",
                           "qty": 5}, Order)
    msgspec.structs.force_setattr(odd, "qty", 2.5)
    for thing in (None, 42, {"id": "d"}, odd, Order("a\\ud800", "s", "IBM", Side.BUY, 1, 1.0)):
        check(thing)
    g.on_fill(Fill("o1", "IBM", Side.BUY, 90, 101.0))               # customer (within parent P)
    g.on_fill(Fill("o2", "IBM", Side.SELL, 10, 99.0))               # side mismatch: halts
    check(Order("after-mismatch", "s", "IBM", Side.BUY, 1, 100.0))
    g.resume("node", "n1", "reconciled", "ops")
    g.halt("symbol", "MSFT", "drill", "ops", state=TradingState.REDUCING)
    check(Order("m1", "s", "MSFT", Side.BUY, 1, 50.0))
    g.halt("fleet", "", "kill", "ops")
    check(Order("k1", "s", "IBM", Side.BUY, 1, 100.0))
    g.resume("fleet", "", "over", "ops")
    g.on_cancel("o5"); g.on_cancel("nope")
    g.on_fill(Fill("o2", "IBM", Side.BUY, 100, 100.2))              # principal (no parent)
    for bad in (("planet", "x"), ("symbol", None), ("symbol", " ")):
        try:
            g.halt(bad[0], bad[1], "r", "a")
        except ValueError as exc:
            out.append(("halt", False, type(exc).__name__, str(exc)))
    g.on_price("IBM", 10.0)                                          # loss stop
    check(Order("after-loss", "s", "IBM", Side.BUY, 1, 10.0))
    rec.flush()
    sys.stdout.buffer.write(msgspec.json.encode(
        {"build": build.describe(), "decisions": out, "lines": [l.decode() for l in rec.lines]}
    ))
    """
)


def run_session(pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pure:
        env["PYTHONPATH"] = str(SRC)  # the source tree ahead of whatever is installed
    out = subprocess.run(
        [sys.executable, "-c", SESSION], capture_output=True, env=env, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr.decode()
    import msgspec

    result: dict[str, object] = msgspec.json.decode(out.stdout)
    return result


def test_the_build_in_use_is_the_one_asked_for() -> None:
    want = os.environ.get("KNIGHTWATCH_EXPECT_BUILD", "pure")
    if want == "mypyc":
        assert build.compiled(), build.describe()
        assert build.describe() == f"compiled with mypyc ({len(build.HOT_PATH)} hot-path modules)"
    else:
        assert build.compiled_modules() == () and build.describe() == "pure Python"


def test_compiled_and_pure_decide_and_record_alike() -> None:
    pure, installed = run_session(pure=True), run_session(pure=False)
    assert pure["build"] == "pure Python"
    assert installed["build"] == build.describe()
    assert installed["decisions"] == pure["decisions"]
    assert installed["lines"] == pure["lines"]
    decisions = pure["decisions"]
    assert isinstance(decisions, list) and len(decisions) > 20
    assert {d[2] for d in decisions} >= {
        "ok", "duplicate_order_id", "invalid_order", "halted", "reducing_only", "rate_symbol",
        "max_order_qty", "fill_mismatch", "loss_limit", "not_armed",
    }  # fmt: skip
