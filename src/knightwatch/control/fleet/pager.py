"""Paging: every automatic action reaches a person now, not in a mailbox before the open.

Knight's system sent 97 "Power Peg disabled" emails that nobody read. A page
here is a log line (always) plus a JSON POST to a webhook (when configured),
sent off the event loop so a slow receiver never delays the next halt.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import msgspec

from knightwatch.control.fleet.supervisor import Action

log = logging.getLogger(__name__)


class Pager:
    def __init__(self, webhook_url: str | None = None, timeout_s: float = 2.0) -> None:
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ValueError(
                f"webhook_url: must start with http:// or https:// (got {webhook_url!r})"
            )
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0

    async def page(self, action: Action) -> None:
        log.critical(
            "PAGE rule=%s scope=%s key=%s state=%s reason=%r",
            action.rule.value,
            action.scope.value,
            action.key,
            action.state.name,
            action.reason,
        )
        if self.webhook_url is None:
            return
        body = msgspec.json.encode(
            {
                "rule": action.rule.value,
                "scope": action.scope.value,
                "key": action.key,
                "state": action.state.name,
                "reason": action.reason,
                "at_ns": action.at_ns,
            }
        )
        try:
            await asyncio.to_thread(self._post, body)
            self.sent += 1
        except (urllib.error.URLError, OSError) as exc:
            self.failed += 1
            log.error("PAGE_FAILED webhook=%s error=%s", self.webhook_url, exc)

    def _post(self, body: bytes) -> None:
        assert self.webhook_url is not None
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()
