"""`status` on a ramp says whose rules trip it, and what is left when its driver is gone.

A ramp is watched by the `approve` that applied its resume, by the trip rules of that
approve's `--config` `[ramp]` table; no record keeps them. `status` printed "trips on"
with the default plan's rules for every ramping record: for a ramp whose `approve` used
other rules, and for one whose `approve` was gone (the laptop closed, the process
killed), where nothing trips it at all and the scope stays at the stage it reached, the
table showed a watched ramp with rules no one applied.
"""

from __future__ import annotations

import io

import msgspec
from rich.console import Console

from knightwatch.cli.incident import ramp_rows
from knightwatch.control.plane.wire import RampRecord
from knightwatch.incident.ramp import RampPlan
from knightwatch.state import Scope

from ..identities import ALICE, KIT

S = 1_000_000_000


def _shown(record: RampRecord, now_ns: int | None = None) -> str:
    out = io.StringIO()
    Console(file=out, width=1000, color_system=None).print(
        ramp_rows([record], RampPlan(), KIT.roster, now_ns=now_ns or record.since_ns)
    )
    return " ".join(out.getvalue().split())


def _record(status: str, trip_reason: str = "") -> RampRecord:
    return RampRecord(
        Scope.STRATEGY, "alpha", "r" * 12, 0, (0.1, 0.5, 1.0), 0.1, status, "alice+bob",
        "fixed", 10**18, trip_reason,
    ).signed(ALICE.key)  # fmt: skip


def test_a_ramping_record_says_its_rules_are_its_drivers_and_what_is_left_without_it() -> None:
    shown = _shown(_record("ramping"))
    # the default rules are not shown as the ramp's own: they are named as the defaults
    assert (
        "while the `approve` that runs it is up: any halt in the scope, or a block-rate "
        "spike by that approve's --config [ramp] rules (not recorded; by default >= 20 "
        "blocked orders on one node in one interval, >= 100/s and >= 50% of its orders)"
    ) in shown, shown
    assert (
        "with that process gone, nothing trips it and the scope stays at this stage: "
        "kill the scope to end it"
    ) in shown, shown


def test_a_tripped_record_shows_why_and_a_done_one_nothing() -> None:
    assert "runaway on n1" in _shown(_record("tripped", "runaway on n1"))
    assert "approve" not in _shown(_record("done"))


def _dated(since_ns: int) -> RampRecord:
    return msgspec.structs.replace(_record("ramping"), since_ns=since_ns).signed(ALICE.key)


def test_a_ramp_whose_driver_stopped_writing_is_shown_silent_since_its_last_write() -> None:
    """A ramp whose `approve` died looked like one still ramping; its record, written by that
    `approve` every few seconds, now says when it was last heard."""
    last = 1_800_000_000 * S  # 2027-01-15 08:00:00 UTC
    shown = _shown(_dated(last), now_ns=last + 31 * S)
    assert "ramping, driver silent" in shown, shown
    assert (
        "driver silent since 2027-01-15 08:00:00 UTC (the `approve` that runs it writes this "
        "record every 5 s): nothing trips this ramp and the scope stays at this stage: kill "
        "the scope to end it"
    ) in shown, shown


def test_a_ramp_written_lately_says_when_its_driver_was_last_heard() -> None:
    last = 1_800_000_000 * S
    shown = _shown(_dated(last), now_ns=last + 2 * S)
    assert "driver last heard 2027-01-15 08:00:00 UTC" in shown, shown
    assert "silent" not in shown, shown
