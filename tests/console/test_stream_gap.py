"""A page that falls behind its event stream is told so, never fed a silently shortened one.

Each open `/api/events` holds up to `STREAM_QUEUE` events for a reader that is slow to take
them. Past that, the events were dropped without a word: the page went on showing a fleet
older than it knew (a kill after the gap never reached its halts panel) while beats kept it
LIVE. Here a second console runs in this process on the shared fleet (`second.py`), its
real app is driven over ASGI by a reader that stops taking the stream after the first
snapshot, and the real watch rebuilds the real fleet's snapshot past the limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from starlette.types import Message

from knightwatch.console.app import GAP_REASON, STREAM_QUEUE, Console, build_app
from knightwatch.console.local import ConsoleProc

from .second import second_console, signed_in


def _events(chunks: list[bytes]) -> list[tuple[str, str]]:
    """The (event, data) pairs of the stream's body, in order."""
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], fields.get("data", "")))
    return out


async def _stalled_reader(second: Console, behind: int, read_s: float) -> tuple[list[bytes], bool]:
    """Open carol's stream on `second`, take its first snapshot, then stop reading while
    the watch rebuilds the snapshot `behind` times; then read on for up to `read_s`. The
    body read, and whether the console ended the stream by itself."""
    async with signed_in(second, "carol") as [(http, _)]:
        cookie = f"{second.cookie}={http.cookies[second.cookie]}"
    app = build_app(second)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/events",
        "raw_path": b"/api/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    chunks: list[bytes] = []
    reading = asyncio.Event()  # cleared: the reader takes nothing more
    gone = asyncio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if any(b"event: snapshot" in c for c in chunks):
                await reading.wait()

    served = asyncio.create_task(app(scope, receive, send))
    try:
        async with asyncio.timeout(10):
            while not any(b"event: snapshot" in c for c in chunks):
                await asyncio.sleep(0.01)
        for _ in range(behind):
            await second.watch.refresh()
        reading.set()
        ended = True
        try:
            await asyncio.wait_for(asyncio.shield(served), read_s)
        except TimeoutError:
            ended = False
        return chunks, ended
    finally:
        gone.set()
        served.cancel()
        await asyncio.gather(served, return_exceptions=True)


async def test_a_reader_that_falls_behind_is_told_and_the_stream_ends(
    console: ConsoleProc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="knightwatch.console.app")
    async with second_console(console, tmp_path) as second:
        # the end is awaited generously: it comes as soon as the queue is read
        chunks, ended = await _stalled_reader(second, STREAM_QUEUE + 20, read_s=15.0)
        gaps = second.stream_gaps
    events = _events(chunks)
    names = [e for e, _ in events]
    assert "gap" in names, f"missed events were dropped without a word: {names[:3]}..{names[-3:]}"
    assert ended and names[-1] == "gap", names[-3:]
    # nothing after the first snapshot but the gap: what was queued is older than the miss
    assert names == ["snapshot", "gap"], names
    told = json.loads(events[-1][1])
    assert told["reason"] == GAP_REASON and told["dropped"] >= 20, told
    assert gaps == 1
    assert "fell 256 events behind" in caplog.text


async def test_a_reader_behind_by_less_than_the_limit_misses_nothing(
    console: ConsoleProc, tmp_path: Path
) -> None:
    """The gap is for a reader past the limit only: one within it gets every event."""
    async with second_console(console, tmp_path) as second:
        # that the stream goes on: a negative, so a short wait (a longer one only costs time)
        chunks, ended = await _stalled_reader(second, STREAM_QUEUE // 2, read_s=3.0)
        gaps = second.stream_gaps
    names = [e for e, _ in _events(chunks)]
    assert not ended and "gap" not in names and gaps == 0, names[-3:]
    assert names.count("snapshot") >= 1 + STREAM_QUEUE // 2, len(names)
