"""Contract for durable records, plain messages and request/reply on both backends.

Each connection is the identity whose role may do what it does on an authorized
server (tests/trust checks that the others are refused)."""

from __future__ import annotations

import time

import pytest

from knightwatch.control.plane.protocol import (
    ABSENT,
    Bucket,
    ControlPlaneUnavailable,
    Record,
    RevisionConflict,
)

from ..conftest import Backend
from ..helpers import eventually


async def test_records_round_trip_with_compare_and_swap(backend: Backend) -> None:
    a = await backend.plane("alice")
    b = await backend.plane("bob")
    admission = await backend.plane("admission")
    assert await a.get_record(Bucket.FLAGS, "state.trading.x") == (None, ABSENT)
    rev = await a.put_record(Bucket.FLAGS, "state.trading.x", b"one", expected_revision=ABSENT)
    with pytest.raises(RevisionConflict):
        await b.put_record(Bucket.FLAGS, "state.trading.x", b"two", expected_revision=ABSENT)
    rev2 = await b.put_record(Bucket.FLAGS, "state.trading.x", b"two", expected_revision=rev)
    with pytest.raises(RevisionConflict):
        await a.put_record(Bucket.FLAGS, "state.trading.x", b"three", expected_revision=rev)
    assert await a.get_record(Bucket.FLAGS, "state.trading.x") == (b"two", rev2)
    await admission.put_record(Bucket.ADMISSION, "n1", b"v")
    assert await b.records(Bucket.FLAGS) == {"state.trading.x": (b"two", rev2)}
    assert set(await b.records(Bucket.ADMISSION)) == {"n1"}


async def test_record_subscribers_see_every_store(backend: Backend) -> None:
    writer = await backend.plane("admission")
    reader = await backend.plane("carol")
    seen: list[Record] = []

    async def on_record(record: Record) -> None:
        seen.append(record)

    await reader.subscribe_records(Bucket.RELEASE, on_record)
    rev = await writer.put_record(Bucket.RELEASE, "target", b"env")
    await writer.put_record(Bucket.ADMISSION, "n1", b"v")  # another bucket: not delivered
    await eventually(lambda: len(seen) >= 1)
    assert seen == [Record(Bucket.RELEASE, "target", b"env", rev)]


async def test_request_reply_and_plain_messages(backend: Backend) -> None:
    server = await backend.plane("admission")
    client = await backend.plane("n1")
    listener = await backend.plane("alice")
    with pytest.raises(ControlPlaneUnavailable):
        await client.request("admission.challenge", b"n1", timeout_s=0.5)

    async def echo(payload: bytes) -> bytes:
        return payload.upper()

    await server.serve("admission.challenge", echo)
    assert await client.request("admission.challenge", b"n1", timeout_s=10.0) == b"N1"
    heard: list[bytes] = []

    async def on_message(payload: bytes) -> None:
        heard.append(payload)

    await listener.subscribe("flags.applied", on_message)
    await client.publish("flags.applied", b"r3")
    await eventually(lambda: heard == [b"r3"])


async def test_record_stored_ns_is_the_store_s_write_time(backend: Backend) -> None:
    """When the store wrote a record (a roster version is judged then at a start, not at
    the date its signers chose): the server's time; None for another key's write or a
    revision the store does not hold."""
    plane = await backend.plane("admission")
    assert plane.keeps_write_times
    before = time.time_ns()
    rev = await plane.put_record(Bucket.ADMISSION, "n1", b"v")
    other = await plane.put_record(Bucket.ADMISSION, "n2", b"v")
    stored = await plane.record_stored_ns(Bucket.ADMISSION, "n1", rev)
    assert stored is not None and before - 1_000_000 <= stored <= time.time_ns()
    assert await plane.record_stored_ns(Bucket.ADMISSION, "n1", other) is None
    assert await plane.record_stored_ns(Bucket.ADMISSION, "n1", other + 100) is None
    assert await plane.record_stored_ns(Bucket.ADMISSION, "n1", 0) is None
