"""The evidence holds every write the kill-state store keeps of a slot, not only its last.

A halt stored over another hides it: the supervisor halts n1 for its order rate, then
an operator kills n1 by hand; the slot's latest write is the operator's. The snapshot
took `states()` alone, so the supervisor's halt (who first stopped n1, when, and why)
was not in the sealed evidence, while the store still held it. Now `kill/history.json`
holds each slot's earlier writes, oldest first, as the store keeps them, and a slot
whose history cannot be read is named in `incomplete.json`.
"""

from __future__ import annotations

import json

import pytest

from knightwatch.control.plane.memory import MemoryControlPlane
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.wire import slot_of
from knightwatch.incident.snapshot import take_snapshot, verify_snapshot
from knightwatch.release.keys import SigningKey
from knightwatch.state import Scope

from .fixtures import fleet
from .test_snapshot import members


async def test_a_halt_stored_over_another_keeps_the_first_in_the_evidence() -> None:
    f = await fleet("n1")
    try:
        plane = await f.plane()
        supervisor = await f.killswitch("supervisor")
        await supervisor.kill(Scope.NODE, "n1", "supervisor_order_rate: 900/s", timeout_s=1.0)
        await (await f.killswitch()).kill(Scope.NODE, "n1", "operator: stop n1", timeout_s=1.0)
        data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="alice",
                                   reason="evidence", listen_s=0.1)  # fmt: skip
        assert verify_snapshot(data, source="s.tar").ok
        files = members(data)
        latest = json.loads(files["kill/entries.json"])[slot_of(Scope.NODE, "n1")]
        assert latest["entry"]["reason"] == "operator: stop n1"
        # before: no kill/history.json, and the supervisor's halt nowhere in the evidence
        history = json.loads(files["kill/history.json"])[slot_of(Scope.NODE, "n1")]
        assert [(w["entry"]["actor"], w["entry"]["reason"]) for w in history] == [
            ("supervisor", "supervisor_order_rate: 900/s")
        ]
        assert history[0]["revision"] < latest["revision"]
        assert not [g for g in json.loads(files["incomplete.json"]) if g.startswith("kill/")]
    finally:
        await f.stop()


async def test_a_slot_whose_history_cannot_be_read_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = await fleet("n1")
    try:
        plane = await f.plane()
        alice = await f.killswitch()
        await alice.kill(Scope.FLEET, "", "runaway", timeout_s=1.0)
        await alice.kill(Scope.NODE, "n1", "runaway", timeout_s=1.0)
        asked: list[str] = []

        async def down(self: MemoryControlPlane, scope: Scope, key: str, _: int) -> None:
            asked.append(key)
            raise ControlPlaneUnavailable("get_msg: timeout")

        monkeypatch.setattr(plane, "state_history", down.__get__(plane))
        data = await take_snapshot(plane, f.clock, SigningKey.generate(), actor="alice",
                                   reason="evidence", listen_s=0.1)  # fmt: skip
        files = members(data)
        gaps = json.loads(files["incomplete.json"])
        slot = slot_of(Scope.FLEET, "fleet")
        assert (
            f"kill/history.json: the earlier writes of {slot} and 1 more slot(s) could not be "
            "read (get_msg: timeout)" in gaps
        ), gaps
        history = json.loads(files["kill/history.json"])
        assert (
            history[slot]
            == history[slot_of(Scope.NODE, "n1")]
            == {"unavailable": "get_msg: timeout"}
        )
        assert asked == ["fleet"], "a store that does not answer is not asked slot by slot"
        assert b'"reason": "runaway"' in files["kill/entries.json"]  # the rest is still there
    finally:
        await f.stop()
