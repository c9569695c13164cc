"""A page whose post fails is tried again, off the caller's path, a bounded number of times.

Before, one failed post was the end of a page: a webhook restarting when the supervisor
halted a node (a 503 for a second, its port closed while it came back) lost that page,
logged once as `PAGE_FAILED`, and the person was never paged. Now each failed try is
logged and counted, the page is posted again after a growing wait, and a page no try
delivered says so (`PAGE_GAVE_UP`). The caller (the halt's reporter) waits for the
first try only.
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
from collections.abc import Iterator

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.state import Scope, TradingState

from ..helpers import eventually

ACTION = Action(Rule.ERRORS_BEFORE_ARMING, Scope.NODE, "n2", TradingState.HALTED, "why", 1)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` posts with `code` (a 503: the webhook restarting; a
    302: moved for its maintenance), every later one with 200; records each post's body."""

    bodies: list[bytes]
    failures = 0
    code = 503

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append(self.rfile.read(length))
        failing = len(self.bodies) <= self.failures
        self.send_response(self.code if failing else 200)
        if failing and 300 <= self.code < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[bytes]]]:
    """A webhook that fails its first posts (`request.param`: how many, with which code)."""
    failures, code = request.param
    bodies: list[bytes] = []
    handler = type("Handler", (_Flaky,), {"bodies": bodies, "failures": failures, "code": code})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/page", bodies
    finally:
        server.shutdown()
        server.server_close()


def _lines(caplog: pytest.LogCaptureFixture, tag: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(tag)]


@pytest.mark.parametrize(
    ("webhook", "failing"),
    [((2, 503), 2), ((1, 302), 1)],
    indirect=["webhook"],
    ids=["503", "302"],
)
async def test_a_page_that_fails_is_retried_until_the_webhook_takes_it(
    webhook: tuple[str, list[bytes]], failing: int, caplog: pytest.LogCaptureFixture
) -> None:
    url, bodies = webhook
    pager = Pager(url, timeout_s=5.0, retries=3, backoff_s=0.05)
    with caplog.at_level(logging.WARNING):
        await pager.page(ACTION, "n2 halted, confirmed")
        # the caller waited for the first try only: the retry is still to come
        assert (len(bodies), pager.sent, pager.failed, pager.retrying) == (1, 0, 1, 1)
        await eventually(lambda: pager.sent == 1, what="the page delivered on a retry")
        await eventually(lambda: pager.retrying == 0, what="the retry task ended")
    assert len(bodies) == failing + 1  # tried until taken, then no more
    assert (pager.sent, pager.failed, pager.given_up) == (1, failing, 0)
    assert all(b"n2 halted, confirmed" in body for body in bodies), bodies
    failed = _lines(caplog, "PAGE_FAILED")
    assert len(failed) == failing, failed
    assert "attempt=1/4" in failed[0] and "retrying in 0.05 s" in failed[0], failed[0]
    (sent,) = _lines(caplog, "PAGE_SENT")
    assert f"attempt={failing + 1}/4" in sent, sent
    assert not _lines(caplog, "PAGE_GAVE_UP")


@pytest.mark.parametrize("webhook", [(99, 503)], indirect=True, ids=["503"])
async def test_a_page_no_try_delivers_is_given_up_after_its_retries(
    webhook: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    url, bodies = webhook
    pager = Pager(url, timeout_s=5.0, retries=2, backoff_s=0.05)
    with caplog.at_level(logging.WARNING):
        await pager.page(ACTION)
        await eventually(lambda: pager.given_up == 1, what="the page given up")
    assert len(bodies) == 3  # one try and two retries, no more
    assert (pager.sent, pager.failed, pager.retrying) == (0, 3, 0)
    failed = _lines(caplog, "PAGE_FAILED")
    assert [line.split("attempt=")[1].split()[0] for line in failed] == ["1/3", "2/3", "3/3"]
    assert "retrying in 0.1 s" in failed[1] and "no retry left" in failed[2], failed
    (gave_up,) = _lines(caplog, "PAGE_GAVE_UP")
    assert "all 3 attempts failed" in gave_up and "rule=supervisor_errors_before_arming" in gave_up


@pytest.mark.parametrize("webhook", [(99, 503)], indirect=True, ids=["503"])
async def test_pages_beyond_max_retrying_are_given_up_at_once(
    webhook: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """The retries are bounded in number too: a webhook down for an incident of many halts
    holds at most `max_retrying` pages, each with its tries. A retry cancelled (the
    process stopping) is a page given up, and says so."""
    url, bodies = webhook
    pager = Pager(url, timeout_s=5.0, retries=1, backoff_s=60.0, max_retrying=1)
    with caplog.at_level(logging.WARNING):
        await pager.page(ACTION)
        await pager.page(ACTION)  # the first waits a minute for its retry
        assert (pager.retrying, pager.given_up, len(bodies)) == (1, 1, 2)
        (waiting,) = pager._retrying
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert (pager.retrying, pager.given_up, pager.sent, len(bodies)) == (0, 2, 0, 2)
    gave_up = _lines(caplog, "PAGE_GAVE_UP")
    assert "1 pages already wait for a retry (max_retrying)" in gave_up[0], gave_up
    assert "retries were cancelled" in gave_up[1], gave_up


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("retries", -1, "retries: must be 0 to 10"),
        ("retries", 11, "retries: must be 0 to 10"),
        ("backoff_s", 0.0, "backoff_s: must be > 0"),
        ("backoff_s", float("nan"), "backoff_s: must be > 0"),
        ("backoff_s", 61.0, "backoff_s: must be > 0 and <= 60"),
        ("max_retrying", 0, "max_retrying: must be >= 1"),
    ],
)
def test_retry_options_that_bound_nothing_are_refused(option: str, value: float, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        Pager("http://127.0.0.1:1/page", **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("webhook", [(1, 503)], indirect=True, ids=["503"])
async def test_a_page_the_webhook_refused_once_reaches_it_with_the_defaults(
    webhook: tuple[str, list[bytes]],
) -> None:
    """The pager as `supervise` and `incident` make it (`Pager(webhook)`): before, the 503
    was the end of the page."""
    url, bodies = webhook
    pager = Pager(url)
    await pager.page(ACTION)
    await eventually(lambda: pager.sent == 1, what="the page delivered on its retry")
    assert (pager.failed, pager.given_up, len(bodies)) == (1, 0, 2)
