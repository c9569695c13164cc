"""A stored record nested too deep is named on the page as undecodable; the page still serves.

msgspec raises `RecursionError` (not a `DecodeError`) for JSON nested deeper than it
decodes inside a field a record skips. Before, one such rollout record (the bucket is
operator-writable) made every snapshot a 500: the console showed no fleet, no halt and
no kill button while it stood. Its own fleet (`knightwatch up`, one node) and console,
because the record stays in the store and the session's shared fleet must not show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from knightwatch.console.local import PASSWORD, ConsoleProc
from knightwatch.control.plane.protocol import Bucket

from .conftest import own_console, put_as

FLAG = "trading.smars.rlp_enabled"
DEEP = b'{"flag_id": "x", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    with own_console(tmp_path_factory, "nested") as console:
        asyncio.run(put_as(console.fleet, "alice", Bucket.ROLLOUTS, FLAG, DEEP))
        yield console


def test_a_deep_rollout_record_is_named_and_the_console_still_serves(deep: ConsoleProc) -> None:
    with httpx.Client(base_url=deep.url, follow_redirects=False, timeout=20) as http:
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        page = http.get("/")
        assert page.status_code == 200, page.text
        snapshot = http.get("/api/snapshot")
        assert snapshot.status_code == 200, snapshot.text
        body = snapshot.json()
        assert f"rollouts {FLAG}: undecodable state" in body["problems"], body["problems"]
        assert [n["node"] for n in body["nodes"]] == ["n1"]  # the fleet is still shown
