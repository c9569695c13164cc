"""A preflight whose stores cannot be read fails the items that need them, by name.

The preflight's promise: every item passes or says what to fix. A store it reads that
the control plane cannot serve (its stream lost, a permission withdrawn) raised out of
the whole preflight: `resume` and `approve` printed one line naming a bucket (exit 2),
no checklist, no item, nothing of the checks that could still run.
"""

from __future__ import annotations

from pathlib import Path

from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import MEMBERS_BUCKET, STATE_BUCKET
from knightwatch.incident.preflight import CHECKS, PreflightConfig, run_preflight
from knightwatch.state import Scope

from .fixtures import site_and_admin

# stream deleted -> the items that must fail, naming that store
LOST = {
    f"KV_{STATE_BUCKET}": ("kill-state", {"halted", "flags", "alerts", "cause"}),
    f"KV_{MEMBERS_BUCKET}": ("membership", {"guard"}),
    "KV_kw_incident": ("incident", {"crash_loop"}),
    "KV_kw_admission": ("admission", {"release", "flags"}),
    "KV_kw_flags": ("flags", {"flags"}),
    "KV_kw_release": ("release", {"release"}),
}


async def test_each_store_that_cannot_be_read_fails_its_items_naming_it(
    tmp_path: Path,
) -> None:
    async with site_and_admin(tmp_path) as (site, admin, alice):
        await site.killswitch(alice, "alice").kill(Scope.FLEET, "", "runaway", timeout_s=0.2)
        js = admin._require_js()
        lost: set[str] = set()
        for stream, (store, failing) in LOST.items():
            await js.delete_stream(stream)
            lost.add(store)
            checklist = await run_preflight(
                alice, Scope.FLEET, "", clock=SystemClock(), config=PreflightConfig(listen_s=0.1)
            )
            assert [i.name for i in checklist.items] == list(CHECKS)
            assert not checklist.passed
            named = f"the {store} store could not"
            said = {i.name for i in checklist.failures if named in i.detail}
            assert failing <= said, (stream, checklist.summary())
            for item in checklist.items:  # an item naming a lost store never passes
                assert not (
                    item.ok and any(f"the {s} store could not" in item.detail for s in lost)
                ), item
