"""A stream opened while the console cannot rebuild the fleet view says so at once.

Its first event is the last snapshot the console built; with the view broken (the control
plane out of reach) a page that opened its stream then (a reload, a new stream after a
gap) got that snapshot and beats, and nothing saying it was not the fleet now, until the
next failed rebuild. The `problem` follows the snapshot now. A second console in this
process on the shared fleet, its real app driven over ASGI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from starlette.types import Message

from knightwatch.console.app import build_app
from knightwatch.console.local import ConsoleProc

from .second import second_console, signed_in
from .test_stream_gap import _events


async def test_a_stream_opened_while_the_view_is_broken_starts_with_the_problem(
    console: ConsoleProc, tmp_path: Path
) -> None:
    async with second_console(console, tmp_path) as second:
        async with signed_in(second, "carol") as [(http, _)]:
            cookie = f"{second.cookie}={http.cookies[second.cookie]}"
        await second.watch.stop()  # no rebuild clears it while the stream opens
        second.watch.error = "control plane: no servers available for connection"
        chunks: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/api/events",
            "raw_path": b"/api/events", "root_path": "", "query_string": b"",
            "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        served = asyncio.create_task(build_app(second)(scope, receive, send))
        try:
            async with asyncio.timeout(10):
                while len(_events(chunks)) < 2:
                    await asyncio.sleep(0.01)
        finally:
            gone.set()
            served.cancel()
            await asyncio.gather(served, return_exceptions=True)
    events = _events(chunks)
    assert [e for e, _ in events[:2]] == ["snapshot", "problem"], events[:2]
    assert "no servers available" in json.loads(events[1][1])["error"]
