"""Paging: every automatic action reaches a person now, not in a mailbox before the open.

Knight's system sent 97 "Power Peg disabled" emails that nobody read. A page
here is a log line (always) plus a JSON POST to a webhook (when configured),
sent off the event loop so a slow receiver never delays the next halt. A page
never raises and never waits longer than `timeout_s`: whatever the webhook does
(refuses, answers garbage, drips its answer a byte at a time), the failure is
logged (`PAGE_FAILED`) and counted, and the caller's halt goes on. A page may
carry the outcome of the action (`outcome`: who did not confirm, what was not
stored), so the person learns whether the halt took, not only that one was tried.

A post runs on a thread of its own (a daemon), never on the event loop's default
executor: a webhook that holds its posts (an answer dripped a byte at a time, a host
name whose lookup hangs) outlives the page's timeout in its thread, and on the shared
executor a few such posts took every worker the process's own host-name lookups need
(nats-py's reconnect to a control plane named by host among them), and held the
process's exit until the webhook let go. At most `max_inflight` posts are held at once;
a page beyond them fails at once, logged (`PAGE_FAILED ... webhook busy`) and counted.

A page is delivered only by the webhook's own answer (2xx). A redirect is a failed page
(`PAGE_FAILED ... redirect`), never followed: urllib followed a 301, 302 or 303 answer to
the POST as a GET without the body, so the page reached nobody while it was counted as sent
and no line said otherwise (a webhook moved to https, or to a new path). The URL it
redirects to is not logged (it may carry the new token): configure it as the webhook.

A webhook's URL is its secret (a token in its path, query or credentials): log lines and
errors name only its scheme, host and port (`redacted`). A URL no post can use (spaces,
letters outside ASCII, `user:password@`) is refused when the pager is made, not found
out at every page of an incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import logging
import math
import threading
import urllib.parse
import urllib.request
from typing import IO

import msgspec

from knightwatch.control.fleet.supervisor import Action

log = logging.getLogger(__name__)


def redacted(url: str) -> str:
    """`url` as a log line or an error may show it: scheme, host and port only. A webhook
    carries its secret in its path, query or credentials (a chat service's
    `/services/T0/B0/<token>`, `?token=`, `user:password@`): every failed page logged it."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not parts.scheme:
        return "(not shown: no host read from it)"
    shown = f"[{host}]" if ":" in host else host
    if port is not None:
        shown += f":{port}"
    more = parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{shown}" + ("/\u2026" if more else "")


def _check_url(url: str) -> None:
    """ValueError, naming the rule (and the URL `redacted`), for a webhook URL no page can
    be posted to: every page would fail at the incident, logged, and reach nobody."""
    shown = redacted(url)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"webhook_url: must start with http:// or https:// (got {shown!r})")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        # urllib refuses them at each post (InvalidURL, UnicodeEncodeError): percent-encode
        raise ValueError(
            f"webhook_url: must be printable ASCII without spaces, percent-encoded (got {shown!r})"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"webhook_url: not a valid URL ({exc}): {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"webhook_url: must name a host (got {shown!r})")
    if "@" in parts.netloc:
        # urllib posts to the host `user:password@host` (its name lookup fails): a
        # webhook's credentials go in its path or query, as its service issues it
        raise ValueError(f"webhook_url: must not carry user:password@ credentials (got {shown!r})")


class PagerBusy(Exception):
    """A page not posted because earlier posts still hold `max_inflight` threads."""


class PageRedirected(Exception):
    """The webhook answered the page with a redirect: it did not take the page."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Every redirect is a failed page (`PageRedirected`): urllib's own handler re-sent a
    POST answered 301, 302 or 303 as a GET without its body, the page lost."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: email.message.Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        fp.close()
        raise PageRedirected(
            f"the webhook answered {code} {msg[:64]} (a redirect): the page was not delivered; "
            "configure the URL it redirects to as the webhook"
        )


class Pager:
    def __init__(
        self, webhook_url: str | None = None, timeout_s: float = 2.0, max_inflight: int = 4
    ) -> None:
        if webhook_url is not None:
            _check_url(webhook_url)
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s: must be > 0 and finite (got {timeout_s!r})")
        if max_inflight < 1:
            raise ValueError(f"max_inflight: must be >= 1 (got {max_inflight!r})")
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.max_inflight = max_inflight
        self.sent = 0
        self.failed = 0
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self._lock = threading.Lock()
        self._inflight = 0
        """Posts whose thread has not returned yet (some past their page's timeout)."""

    @property
    def inflight(self) -> int:
        """Posts still held by the webhook (their threads have not returned)."""
        with self._lock:
            return self._inflight

    @property
    def webhook(self) -> str:
        """The webhook as logs may name it (`redacted`: no path, query or credentials)."""
        return redacted(self.webhook_url) if self.webhook_url is not None else "-"

    async def page(self, action: Action, outcome: str = "") -> None:
        """Log the page and post it to the webhook; never raises, never waits past
        `timeout_s` (the post goes on in its thread; its result is then ignored)."""
        log.critical(
            "PAGE rule=%s scope=%s key=%s state=%s reason=%r%s",
            action.rule.value,
            action.scope.value,
            action.key,
            action.state.name,
            action.reason,
            f" outcome={outcome!r}" if outcome else "",
        )
        if self.webhook_url is None:
            return
        fields: dict[str, object] = {
            "rule": action.rule.value,
            "scope": action.scope.value,
            "key": action.key,
            "state": action.state.name,
            "reason": action.reason,
            "at_ns": action.at_ns,
        }
        if outcome:
            fields["outcome"] = outcome
        body = msgspec.json.encode(fields)
        try:
            await asyncio.wait_for(self._posted(body), self.timeout_s)
            self.sent += 1
        except Exception as exc:  # a page that fails must never stop a halt
            self.failed += 1
            why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.error(
                "PAGE_FAILED webhook=%s rule=%s key=%s error=%s: %s",
                self.webhook,
                action.rule.value,
                action.key,
                type(exc).__name__,
                why or "(no detail)",
            )

    def _posted(self, body: bytes) -> asyncio.Future[None]:
        """The post of `body` on a daemon thread of its own, as a future of this loop;
        refused at once (`PagerBusy`) while `max_inflight` posts are still held."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._inflight >= self.max_inflight:
                done.set_exception(
                    PagerBusy(
                        f"webhook busy: {self._inflight} earlier posts still held by it "
                        f"(max_inflight {self.max_inflight}); this page was not posted"
                    )
                )
                return done
            self._inflight += 1

        def settle(error: BaseException | None) -> None:
            if done.done():  # timed out meanwhile: its result is ignored
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def run() -> None:
            error: BaseException | None = None
            try:
                self._post(body)
            except BaseException as exc:  # handed to the page, which logs it
                error = exc
            finally:
                with self._lock:
                    self._inflight -= 1
            # the loop may have closed: nobody waits for this post any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=run, name="pager-post", daemon=True).start()
        return done

    def _post(self, body: bytes) -> None:
        assert self.webhook_url is not None
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(request, timeout=self.timeout_s) as response:
            response.read()
