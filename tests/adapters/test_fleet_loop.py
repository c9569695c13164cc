"""The loop thread a synchronous host runs the node runtime on (`LoopThread`)."""

from __future__ import annotations

import asyncio

import pytest

from knightwatch.adapters.fleet import LoopThread

WAIT_S = 15.0


def test_a_run_that_times_out_is_cancelled_not_left_running() -> None:
    """`GuardedExchange.join(timeout_s)` raised TimeoutError while the join went on running
    on the loop: it could take the lease and arm the Guard after `join` had raised (and
    its cleanup had stopped the runtime). The coroutine given up on is now cancelled."""
    loop = LoopThread("test-loop")
    finished: list[str] = []
    release = asyncio.Event()

    async def slow_join() -> None:
        await release.wait()  # the plane answers only after the caller gave up
        finished.append("armed")

    async def answer() -> None:
        release.set()
        for _ in range(3):  # let a waiter woken by the event run first
            await asyncio.sleep(0)

    try:
        with pytest.raises(TimeoutError):
            loop.run(slow_join(), 0.05)
        loop.run(answer(), WAIT_S)
        assert finished == [], "the timed-out join went on and armed"
        assert loop.run(asyncio.sleep(0, result=7), WAIT_S) == 7  # the loop still serves
    finally:
        loop.close()
