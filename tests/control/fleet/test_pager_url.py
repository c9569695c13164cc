"""The pager's webhook URL: its secret never reaches a log line, and one no page can be
posted to is refused at once.

A webhook carries its secret in its URL (a chat service's `/services/T0/B0/<token>`, a
`?token=`): every failed page logged the whole URL (`PAGE_FAILED webhook=...`), so the
log shipping of a bad night handed the token to whoever reads the logs. And a URL urllib
cannot post (credentials before the host, a space, a letter outside ASCII) was accepted
and failed at every page: the person learned of it at the incident, from a log nobody
was paged about.
"""

from __future__ import annotations

import logging
import socket

import pytest

from knightwatch.control.fleet.pager import Pager
from knightwatch.control.fleet.supervisor import Action, Rule
from knightwatch.state import Scope, TradingState

from ..helpers import eventually

ACTION = Action(Rule.ERRORS_BEFORE_ARMING, Scope.NODE, "n2", TradingState.HALTED, "why", 1)
SECRET = "XoXb7s3cr3tT0k3n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "tail",
    [f"/services/T0/B0/{SECRET}", f"/hook?token={SECRET}", f"/hook#{SECRET}"],
    ids=["path", "query", "fragment"],
)
async def test_a_failed_page_names_the_webhooks_host_never_its_secret(
    tail: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    pager = Pager(f"http://127.0.0.1:{port}{tail}", timeout_s=5.0, retries=1, backoff_s=0.05)
    with caplog.at_level(logging.DEBUG):
        await pager.page(ACTION)
        await eventually(lambda: pager.given_up == 1, what="the page given up")
    assert (pager.sent, pager.failed) == (0, 2)  # its retry's lines name no secret either
    failed = [r.getMessage() for r in caplog.records if "PAGE_FAILED" in r.getMessage()]
    assert failed and f"webhook=http://127.0.0.1:{port}/" in failed[0], failed
    assert not any(SECRET in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (f"https://hook:{SECRET}@127.0.0.1:1/x", "must not carry user:password@ credentials"),
        (f"https://{SECRET}@127.0.0.1:1/x", "must not carry user:password@ credentials"),
        (f"https://127.0.0.1:1/a b/{SECRET}", "must be printable ASCII"),
        (f"https://127.0.0.1:1/caf\u00e9/{SECRET}", "must be printable ASCII"),
        (f"https://127.0.0.1:1/x\n{SECRET}", "must be printable ASCII"),
        (f"https://127.0.0.1:1/x\t{SECRET}", "must be printable ASCII"),
        (f"ftp://127.0.0.1/{SECRET}", "must start with http"),
        (f"http://127.0.0.1:port/{SECRET}", "not a valid URL"),
    ],
)
def test_a_webhook_url_no_page_can_be_posted_to_is_refused_without_its_secret(
    url: str, rule: str
) -> None:
    with pytest.raises(ValueError, match=f"webhook_url: {rule}") as refused:
        Pager(url)
    assert SECRET not in str(refused.value) and "\n" not in str(refused.value)
