"""Once a long-running command has started, socket reads come from the heap (a read of a
few hundred bytes into asyncio's 256 KiB request leaves no mapped block behind) and a full
garbage collection no longer walks the code it loaded."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest

from knightwatch.cli import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Ten reads as asyncio makes them (`recv(256 KiB)` of a 300-byte message), each result
# kept alive; prints how many more blocks glibc holds as mappings afterwards.
PROBE = textwrap.dedent(
    """
    import ctypes, socket, sys

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    if sys.argv[1] == "tuned":
        from knightwatch.cli.memory import serve_reads_from_heap
        assert serve_reads_from_heap()
    a, b = socket.socketpair()
    before = libc.mallinfo2().hblks
    kept = []
    for _ in range(10):
        a.send(b"x" * 300)
        kept.append(b.recv(256 * 1024))
    assert all(len(k) == 300 for k in kept)
    print(libc.mallinfo2().hblks - before)
    """
)


def _mapped_blocks_after_reads(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_reads_leave_no_mapping_behind_once_set() -> None:
    if not GLIBC:  # another C library: nothing is set, and it says so
        assert memory.serve_reads_from_heap() is False
        return
    # the probe sees the problem: by default each read's block is a mapping of its own
    assert _mapped_blocks_after_reads("default") == 10
    assert _mapped_blocks_after_reads("tuned") == 0


def test_set_only_where_the_c_library_is_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    if GLIBC:
        assert memory.serve_reads_from_heap() is True
        assert memory.serve_reads_from_heap() is True  # idempotent
    called: list[object] = []

    def no_libc(*args: object) -> object:
        called.append(args)
        raise AssertionError("another C library's allocator must not be touched")

    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert memory.serve_reads_from_heap() is False
    assert called == []


FREEZE = textwrap.dedent(
    """
    import gc
    import knightwatch.cli.app  # every command's code
    from knightwatch.cli.memory import freeze_startup_objects

    before = len(gc.get_objects())
    frozen = freeze_startup_objects()
    left = len(gc.get_objects())
    cycle = []
    cycle.append(cycle)  # made after the freeze: still the collector's
    del cycle
    print(before, frozen, left, gc.collect())
    """
)


def test_a_full_collection_skips_what_was_loaded_at_start() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True
    ).stdout.split()
    before, frozen, left, collected = map(int, out)
    assert before > 20_000 and frozen >= 0.9 * before  # the code's objects (less garbage)
    assert left < 100, "a full collection now visits almost nothing"
    assert collected >= 1, "what is made afterwards is still collected"


def test_serving_commands_set_both_and_others_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_run` is the funnel the node, gateway and supervisor commands start through; a
    command that ends (kill, status) changes nothing in the process that runs it."""
    from knightwatch.cli import fleet

    calls: list[str] = []

    def heap() -> bool:
        calls.append("heap")
        return True

    def freeze() -> int:
        calls.append("freeze")
        return 0

    monkeypatch.setattr(memory, "serve_reads_from_heap", heap)
    monkeypatch.setattr(memory, "freeze_startup_objects", freeze)

    async def command() -> str:
        calls.append("ran")
        return "done"

    assert fleet._run(command, serves=True) == "done"
    assert calls == ["heap", "freeze", "ran"]
    calls.clear()
    assert fleet._run(command) == "done"
    assert calls == ["ran"]
