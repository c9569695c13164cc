"""The pager: a webhook that misbehaves is logged and counted, never raised, never waited on.

A page is sent after a halt (the supervisor's, a ramp's trip, a crash loop's), and the
halts after it wait on it; so whatever the receiver does, the page returns within its
timeout, says `PAGE_FAILED` naming the error, and raises nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.state import Scope, TradingState

ACTION = Action(Rule.ERRORS_BEFORE_ARMING, Scope.NODE, "n2", TradingState.HALTED, "why", 1)


def _garbage(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")  # http.client.BadStatusLine


def _short(conn: socket.socket) -> None:
    conn.recv(65536)  # a body shorter than its Content-Length: IncompleteRead
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")


def _drip(conn: socket.socket) -> None:
    conn.recv(65536)  # every byte well within the socket timeout, the whole answer never
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    servers: list[socket.socket] = []

    def start(answer: Callable[[socket.socket], None]) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                with conn:
                    answer(conn)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/page"

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("answer", [_garbage, _short, _drip], ids=["garbage", "short", "drip"])
async def test_a_webhook_that_misbehaves_is_a_logged_failure_within_the_timeout(
    receiver: Callable[[Callable[[socket.socket], None]], str],
    answer: Callable[[socket.socket], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, an answer that is not HTTP (or a body cut short) raised out of `page`
    (http.client's errors are neither URLError nor OSError): the supervisor took its
    confirmed halt for failed and issued it again, and a ramp trip or a crash-loop halt
    after it was never reported. A receiver dripping its answer held the page for as
    long as it dripped (the socket timeout is per read)."""
    pager = Pager(receiver(answer), timeout_s=0.5, retries=0)  # one try: its failure
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR):
        await pager.page(ACTION)
    took = loop.time() - started
    assert took < 1.5, f"page took {took:.2f} s"
    assert (pager.sent, pager.failed) == (0, 1)
    assert any("PAGE_FAILED" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://", "must name a host"),
        ("http://host:port/x", "not a valid URL"),
        ("http://host:99999/x", "not a valid URL"),
        ("ftp://host/x", "must start with http"),
    ],
)
def test_a_webhook_url_that_cannot_be_posted_to_is_refused_at_once(url: str, rule: str) -> None:
    """Before, a URL with no host or a port that is not one was accepted and failed at
    every page (a port that is not a number raised out of `page` as InvalidURL)."""
    with pytest.raises(ValueError, match=f"webhook_url: {rule}"):
        Pager(url)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_that_bounds_nothing_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s: must be > 0 and finite"):
        Pager("http://127.0.0.1:1/page", timeout_s=timeout_s)


async def test_a_page_carries_its_outcome(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.CRITICAL):
        await Pager().page(ACTION, outcome="NOT confirmed by n2")
    assert any("outcome='NOT confirmed by n2'" in r.getMessage() for r in caplog.records)


async def test_a_webhook_that_holds_its_posts_never_starves_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many pages to a webhook that holds every post (it drips its answer for ever).
    Before, each post held a worker of the event loop's default executor past its page's
    timeout: 40 pages took every worker, and the process's own host-name lookups (nats-py's
    reconnect to a control plane named by host) and every other `to_thread` waited on the
    webhook (and the process's exit joined those workers). Now a post holds a daemon thread
    of its own, at most `max_inflight` at once; a page beyond them fails at once, logged."""
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0), backlog=64)

    def hold(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                if stop.wait(0.05):
                    return
                conn.sendall(bytes([byte]))

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=hold, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    pager = Pager(f"http://127.0.0.1:{server.getsockname()[1]}/page", timeout_s=0.3, retries=0)
    loop = asyncio.get_running_loop()
    try:
        with caplog.at_level(logging.ERROR):
            started = loop.time()
            await asyncio.gather(*(pager.page(ACTION) for _ in range(40)))
            assert loop.time() - started < 1.5
            assert (pager.sent, pager.failed) == (0, 40)
            # the loop's default executor answers at once, the webhook still holding
            assert await asyncio.wait_for(asyncio.to_thread(lambda: 7), 1.0) == 7
            assert pager.inflight == pager.max_inflight
            started = loop.time()
            await pager.page(ACTION)  # beyond max_inflight: refused at once
            assert loop.time() - started < 0.1
        assert pager.failed == 41
        assert any("webhook busy" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        server.close()


async def test_a_webhook_that_answers_is_paged_and_frees_its_thread() -> None:
    answered = threading.Event()

    def ok(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        answered.set()

    server = socket.create_server(("127.0.0.1", 0))
    try:

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                with conn:
                    ok(conn)

        threading.Thread(target=serve, daemon=True).start()
        pager = Pager(f"http://127.0.0.1:{server.getsockname()[1]}/page", timeout_s=2.0)
        await pager.page(ACTION)
        assert (pager.sent, pager.failed, pager.inflight) == (1, 0, 0)
        assert answered.is_set()
    finally:
        server.close()
