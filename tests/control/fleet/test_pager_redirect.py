"""A webhook that answers a page with a redirect has not received it.

urllib follows a 301, 302 or 303 answer to a POST as a GET without the body: the page
(rule, scope, key, reason, outcome) reached nobody, the receiver's next answer (a 200
for the GET) counted it as sent, and no `PAGE_FAILED` line said otherwise. A webhook
moved to https, or to a new path, is exactly the URL nobody re-reads before an incident.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.state import Scope, TradingState

ACTION = Action(Rule.ERRORS_BEFORE_ARMING, Scope.NODE, "n2", TradingState.HALTED, "why", 1)


class _Moved(http.server.BaseHTTPRequestHandler):
    """`/page` moved (its answer names `/moved`, with the secret token in its query);
    every request is recorded: method, path, body."""

    seen: list[tuple[str, str, bytes]]
    code = 301

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.rfile.read(length)))

    def do_POST(self) -> None:
        self._record()
        if self.path.startswith("/page"):
            self.send_response(self.code)
            self.send_header("Location", "/moved?token=s3cret")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def moved(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, list[tuple[str, str, bytes]], int]]:
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Moved,), {"seen": seen, "code": request.param})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/page", seen, request.param
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("moved", [301, 302, 303, 307, 308], indirect=True)
async def test_a_webhook_that_answers_with_a_redirect_is_a_failed_page(
    moved: tuple[str, list[tuple[str, str, bytes]], int], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a 301, 302 or 303 was followed as a GET without the page, counted as sent,
    and nothing was logged as failed: the person was never paged."""
    url, seen, status = moved
    pager = Pager(url, timeout_s=2.0, retries=0)  # one try (test_pager_retry retries)
    with caplog.at_level(logging.ERROR):
        await pager.page(ACTION, "n2 halted, confirmed")
    assert (pager.sent, pager.failed) == (0, 1), seen
    assert [(method, path) for method, path, _ in seen] == [("POST", "/page")]
    assert b"n2 halted, confirmed" in seen[0][2]
    (line,) = [r.getMessage() for r in caplog.records if "PAGE_FAILED" in r.getMessage()]
    assert _code(line) == status, line
    assert "redirect" in line and "s3cret" not in line and "/moved" not in line, line


def _code(line: str) -> int:
    """The HTTP status a PAGE_FAILED line names (`HTTP Error 301` or `answered 301`)."""
    for word in line.replace(":", " ").split():
        if word.isdigit() and 300 <= int(word) < 400:
            return int(word)
    return 0
