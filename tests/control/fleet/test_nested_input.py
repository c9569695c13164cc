"""A stored record nested deeper than msgspec decodes is refused with its reason, never a
traceback. msgspec raises `RecursionError` (not a `DecodeError`) for such JSON inside a
field a record skips; before, it escaped the freeze check on a target change, the
known-good record's reader and the rollout driver, where every other undecodable record
is refused or held tight."""

from __future__ import annotations

import pytest

from knightwatch.clock import SystemClock
from knightwatch.control.fleet.freeze import FrozenByKill, known_good, refuse_target_if_frozen
from knightwatch.control.fleet.rollout import RolloutDriver, RolloutError
from knightwatch.control.plane.protocol import Bucket
from knightwatch.control.plane.wire import TARGET_KEY
from knightwatch.control.site import Site
from knightwatch.flags.registry import FlagRegistry
from knightwatch.state import Scope

from ...identities import switch, trust


def deep(head: bytes) -> bytes:
    """A record of the right shape with an unknown field nested 5000 deep."""
    return b"{" + head + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


async def test_a_deep_target_record_while_frozen_refuses_the_target_change(
    nats_server: Site,
) -> None:
    """During a kill a target change passes only back to the release stored as the target;
    one nested too deep names none, so every change is refused (before: RecursionError)."""
    clock = SystemClock()
    plane = await nats_server.connect("alice")
    writer = await nats_server.connect("admission")
    try:
        await switch(plane, clock).kill(Scope.FLEET, "", "runaway", timeout_s=0.1, targets=[])
        await writer.put_record(Bucket.RELEASE, TARGET_KEY, deep(b'"release_id": "r1"'))
        with pytest.raises(FrozenByKill, match="none known-good"):
            await refuse_target_if_frozen(plane, "r1", "0" * 64, trust())
    finally:
        await writer.close()
        await plane.close()


async def test_a_deep_known_good_record_reads_as_none(nats_server: Site) -> None:
    plane = await nats_server.connect("alice")
    try:
        await plane.put_record(Bucket.INCIDENT, "known_good", deep(b'"release_id": "r1"'))
        assert await known_good(plane) is None
    finally:
        await plane.close()


async def test_a_deep_rollout_record_is_a_rollout_error_naming_it(nats_server: Site) -> None:
    clock = SystemClock()
    plane = await nats_server.connect("alice")
    try:
        flag = "trading.smars.rlp_enabled"
        await plane.put_record(Bucket.ROLLOUTS, flag, deep(b'"flag_id": "x"'))
        driver = RolloutDriver(
            plane, FlagRegistry.from_definitions((), "none"), clock, switch(plane, clock)
        )
        with pytest.raises(RolloutError, match="cannot be read"):
            await driver.load(flag)
    finally:
        await plane.close()
