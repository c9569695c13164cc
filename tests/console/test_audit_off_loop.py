"""A disk that hangs stalls the console's record, never its kills.

The console wrote each request's record on the server's event loop: a write that hung
(a slow or stuck disk) held the loop, and every request after it, kills included,
waited for the disk. A second console runs in this process on the shared fleet
(`tests/console/second.py`: the real app over ASGI) with its recorder writing to a
sink that hangs until the test lets it go: a kill is answered and confirmed by every
node while the record of the login before it is still being written, and once the
disk answers, every record is there in the order the requests were made.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from knightwatch.audit.read import decode_record
from knightwatch.audit.record import EventRecord
from knightwatch.audit.sink import MemorySink
from knightwatch.clock import SystemClock
from knightwatch.console.app import Console
from knightwatch.console.audit import DROPPED, KIND, ConsoleAudit
from knightwatch.console.local import ConsoleProc

from .second import post, second_console, signed_in
from .test_api import kill_body

VALVE_S = 60.0
"""A write hung this long lets the disk go by itself (so a console that waits for it ends
the test with a failure instead of hanging it); far longer than the kill takes."""


class HangingDisk(MemorySink):
    """A sink whose writes hang until `answer` is set (or the valve sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = threading.Event()

    def write(self, data: bytes) -> None:
        if not self.answer.wait(VALVE_S):
            self.answer.set()
        super().write(data)


async def test_a_kill_is_answered_while_the_record_hangs_on_the_disk(
    console: ConsoleProc, tmp_path: Path
) -> None:
    disk = HangingDisk()

    def hanging(second: Console) -> None:
        second.audit.close()
        second.audit = ConsoleAudit(second.settings.audit, second.clock, sink=disk)

    async with second_console(console, tmp_path, hanging) as second:
        try:
            # alice's login record hangs on the disk
            async with signed_in(second, "alice") as [(a, csrf)]:
                kill = await post(a, csrf, "/api/kill", kill_body("console-hung-disk"))
                answered_while_hung = not disk.answer.is_set()
                assert kill.status_code == 200 and kill.json()["ok"], kill.text
                assert answered_while_hung, "the kill waited for the disk"
                disk.answer.set()
                await second.audit.settled()
        finally:
            disk.answer.set()
        records = [decode_record(line) for line in disk.lines]
        actions = [r.data["action"] for r in records if isinstance(r, EventRecord)]
        assert actions == ["login", "page:fleet", "kill"], actions


async def test_records_past_the_queue_bound_are_counted_and_put_on_the_record(
    tmp_path: Path,
) -> None:
    """While the disk hangs, at most `max_queued` records wait (before, the queue had no
    bound: a stuck disk made the console hold every request's record). Past it a record
    is dropped and counted, never waited for, and the count goes on the record after the
    records that waited (lifting a kill is judged after it)."""
    disk = HangingDisk()
    audit = ConsoleAudit(tmp_path / "audit.jsonl", SystemClock(), sink=disk, max_queued=3)
    try:
        futures = [audit.record(action=f"a{i}") for i in range(6)]
        dropped = audit.dropped
        assert dropped in (2, 3), dropped  # 3 wait; the first may already be on the disk
        assert sum(f.done() for f in futures) == dropped  # dropped at once, not waited for
        disk.answer.set()
        assert await audit.writable() == (True, "")  # judged after the count is written
        await asyncio.wrap_future(audit.record(action="after"))
    finally:
        disk.answer.set()
        audit.close()
    records = [r for r in map(decode_record, disk.lines) if isinstance(r, EventRecord)]
    kinds = [(r.kind, r.data.get("action", r.data.get("count"))) for r in records]
    assert kinds == [
        *((KIND, f"a{i}") for i in range(6 - dropped)),
        (DROPPED, dropped),
        (KIND, "after"),
    ], kinds
