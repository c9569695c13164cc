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

A page whose post fails (the webhook down, a 5xx, a redirect, no answer in time, the
pager busy) is tried again off the caller's path, `retries` times at most, waiting
`backoff_s` and twice as long each time after (at most `BACKOFF_MAX_S`): each failed try is
logged (`PAGE_FAILED ... attempt=1/4 ...; retrying in 1 s`) and counted (`failed`), and a
page no try delivered is logged once more (`PAGE_GAVE_UP`) and counted (`given_up`).
Before, one failed post was the end of the page: a webhook restarting for a second when
the supervisor halted a node lost that page, and nobody was paged. The caller waits for
the first try only, as before (the halt is never held by a retry); at most
`max_retrying` pages wait for a retry at once, a page beyond them is given up at once.

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

BACKOFF_MAX_S = 60.0
"""The longest wait between two tries of one page."""


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
        self,
        webhook_url: str | None = None,
        timeout_s: float = 2.0,
        max_inflight: int = 4,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_retrying: int = 64,
    ) -> None:
        if webhook_url is not None:
            _check_url(webhook_url)
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s: must be > 0 and finite (got {timeout_s!r})")
        if max_inflight < 1:
            raise ValueError(f"max_inflight: must be >= 1 (got {max_inflight!r})")
        if not 0 <= retries <= 10:
            raise ValueError(f"retries: must be 0 to 10 (got {retries!r})")
        if not 0 < backoff_s <= BACKOFF_MAX_S:
            raise ValueError(f"backoff_s: must be > 0 and <= {BACKOFF_MAX_S:g} (got {backoff_s!r})")
        if max_retrying < 1:
            raise ValueError(f"max_retrying: must be >= 1 (got {max_retrying!r})")
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.max_inflight = max_inflight
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_retrying = max_retrying
        self.sent = 0
        """Pages the webhook took (on any try)."""
        self.failed = 0
        """Tries that failed (a page retried twice and then delivered counts two)."""
        self.given_up = 0
        """Pages no try delivered: the person was not paged by the webhook."""
        self._retrying: set[asyncio.Task[None]] = set()
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
    def retrying(self) -> int:
        """Pages that failed and wait for their next try."""
        return len(self._retrying)

    @property
    def webhook(self) -> str:
        """The webhook as logs may name it (`redacted`: no path, query or credentials)."""
        return redacted(self.webhook_url) if self.webhook_url is not None else "-"

    async def page(self, action: Action, outcome: str = "") -> None:
        """Log the page and post it to the webhook; never raises, never waits past
        `timeout_s` (the post goes on in its thread; its result is then ignored). A
        failed post is tried again in the background (`retries`), never on this call."""
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
        if await self._try(action, body, 1, self.backoff_s):
            return
        if self.retries == 0:
            self._give_up(action, "no retries configured")
        elif len(self._retrying) >= self.max_retrying:
            self._give_up(
                action, f"{len(self._retrying)} pages already wait for a retry (max_retrying)"
            )
        else:
            task = asyncio.create_task(self._retry(action, body))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)

    async def _try(self, action: Action, body: bytes, attempt: int, delay_s: float) -> bool:
        """One post of the page, within `timeout_s`; True if the webhook took it. A failure
        is counted and logged with the try's number and the wait before the next."""
        try:
            await asyncio.wait_for(self._posted(body), self.timeout_s)
        except Exception as exc:  # a page that fails must never stop a halt
            self.failed += 1
            why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            after = f"retrying in {delay_s:g} s" if attempt <= self.retries else "no retry left"
            log.error(
                "PAGE_FAILED webhook=%s rule=%s key=%s attempt=%d/%d error=%s: %s; %s",
                self.webhook,
                action.rule.value,
                action.key,
                attempt,
                self.retries + 1,
                type(exc).__name__,
                why or "(no detail)",
                after,
            )
            return False
        self.sent += 1
        if attempt > 1:
            log.warning(
                "PAGE_SENT webhook=%s rule=%s key=%s attempt=%d/%d (after %d failed)",
                self.webhook,
                action.rule.value,
                action.key,
                attempt,
                self.retries + 1,
                attempt - 1,
            )
        return True

    async def _retry(self, action: Action, body: bytes) -> None:
        """The page's further tries, `backoff_s` apart and twice as far each time (at most
        `BACKOFF_MAX_S`); given up, logged, once none is left or the loop stops."""
        delay = self.backoff_s
        try:
            for attempt in range(2, self.retries + 2):
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                if await self._try(action, body, attempt, delay):
                    return
        except asyncio.CancelledError:
            self._give_up(action, "its retries were cancelled (the process is stopping)")
            raise
        self._give_up(action, f"all {self.retries + 1} attempts failed")

    def _give_up(self, action: Action, why: str) -> None:
        """Count and log a page the webhook never took: the person must be told another way."""
        self.given_up += 1
        log.critical(
            "PAGE_GAVE_UP webhook=%s rule=%s key=%s: %s; nobody was paged by the webhook for "
            "this action",
            self.webhook,
            action.rule.value,
            action.key,
            why,
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
