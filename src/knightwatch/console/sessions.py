"""Server-side console sessions and the login throttle.

A session is a random 256-bit id in a cookie; everything else (who, their
unlocked key, the CSRF token) stays in this process, so a cookie can be revoked
at once (logout, `disable`) and a stolen cookie cannot be edited into more
power. A session ends 15 minutes after its last use and 12 hours after login,
whatever its use. The unlocked signer is what lets a logged-in operator kill
without typing a password again: the stop direction is never slowed; approvals
unwrap the key afresh from a re-entered password instead.

The throttle slows password guessing per name and per client address
independently (an attacker spreading guesses over many names from one address,
or over many addresses at one name, is slowed either way) with a bounded table,
so a flood of made-up names cannot grow it without end. An attempt takes its
place in the count before its password is verified (`reserve`), in one step
with the check: verification is slow (argon2, in a worker thread), and a count
raised only after it let a burst of concurrent guesses all pass the check while
the first ones were still being verified.

A success clears its name's count, and only that name's share of its address's:
when it cleared the whole address, anyone with an account of their own (an
insider, one stolen low-privilege login) logged in between guesses and sprayed
passwords across every other name from one address with fresh free tries each
time. Other names' failures at an address are forgotten only with time
(`forget_s` after each name's last one), and one name adds at most `free + 1` to
its address: hammering one name is that name's own count's to slow, so a person
(or a stranger) failing under one name behind a shared address (a proxy, a
floor's NAT) costs everyone else there at most the first wait.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from knightwatch.trust.identity import Signer

Clock = Callable[[], float]

NAME_KEY_MAX = 128
"""A name is counted under its first this many characters: no user's name is longer (64),
and a made-up name as long as a login body (64 KiB) held whole in each of the table's
10,000 entries let a login flood grow the console, the kill's own process, by 640 MB."""

ADDRESS_NAMES = 8
"""An address keeps each of this many names' failures apart (a success clears its own);
the failures of names beyond them are pooled, which only time clears."""


@dataclass(slots=True)
class Session:
    """One logged-in browser. Times are the monotonic clock's seconds."""

    id: str
    name: str
    signer: Signer = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float
    reauth_at: float
    """When the person last typed their password (login or a step-up)."""
    ip: str
    user_agent: str
    credential: str = field(default="", repr=False)
    """The user's standing when they logged in (their password hash and how many times they
    were disabled): a password change, an admin reset (another process, `console user
    passwd`) or a disable changes it, which ends the session, even after an `enable`."""


class Sessions:
    """Sessions in memory: idle and absolute expiry, revoked by id or by user."""

    def __init__(
        self, *, idle_s: float = 900.0, absolute_s: float = 43200.0, clock: Clock = time.monotonic
    ) -> None:
        if not 0 < idle_s <= absolute_s:
            raise ValueError(f"idle_s {idle_s} must be > 0 and <= absolute_s {absolute_s}")
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.last_seen >= self.idle_s or now - s.created >= self.absolute_s

    def _sweep(self, now: float) -> None:
        for sid in [sid for sid, s in self._by_id.items() if self._expired(s, now)]:
            del self._by_id[sid]

    def open(
        self, name: str, signer: Signer, ip: str, user_agent: str, credential: str = ""
    ) -> Session:
        now = self._clock()
        self._sweep(now)
        session = Session(
            id=secrets.token_urlsafe(32),
            name=name,
            signer=signer,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
            reauth_at=now,
            ip=ip,
            user_agent=user_agent,
            credential=credential,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session, or None if unknown or expired. `touch`: its idle clock restarts
        (a person's request); an open stream re-checking its session does not touch it, so
        a page left open still idles out."""
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._by_id[session_id]
            return None
        if touch:
            session.last_seen = now
        return session

    def reauthenticated(self, session_id: str) -> None:
        """The person just typed their password again (a step-up)."""
        session = self.get(session_id)
        if session is not None:
            session.reauth_at = self._clock()

    def close(self, session_id: str) -> bool:
        return self._by_id.pop(session_id, None) is not None

    def close_user(self, name: str) -> int:
        """End every session of `name` (disable, password change); the number ended."""
        ended = [sid for sid, s in self._by_id.items() if s.name == name]
        for sid in ended:
            del self._by_id[sid]
        return len(ended)

    def trim(self, name: str, keep: int) -> list[str]:
        """End the oldest sessions of `name` beyond the newest `keep`; their ids. Each holds
        an unlocked key and a connection to the control plane: unbounded, one person's
        logins in a loop (a viewer's too) opened connections until the console's ran out."""
        mine = sorted((s for s in self._by_id.values() if s.name == name), key=lambda s: s.created)
        ended = [s.id for s in mine[: max(0, len(mine) - keep)]]
        for sid in ended:
            del self._by_id[sid]
        return ended

    def ids(self) -> list[str]:
        """The ids of the sessions still open (expired ones swept first)."""
        self._sweep(self._clock())
        return list(self._by_id)

    def count(self) -> int:
        self._sweep(self._clock())
        return len(self._by_id)


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


@dataclass(slots=True)
class _Address:
    """An address's failures by name (newest last), and the pooled ones of names beyond
    `ADDRESS_NAMES`: a success takes back only its own name's share."""

    names: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)
    pooled: _Failures | None = None

    def prune(self, now: float, forget_s: float) -> None:
        for name in [n for n, f in self.names.items() if now - f.last >= forget_s]:
            del self.names[name]
        if self.pooled is not None and now - self.pooled.last >= forget_s:
            self.pooled = None

    def wait(self, now: float, cap: int, delay: Callable[[int], float]) -> float:
        held = list(self.names.values()) + ([self.pooled] if self.pooled else [])
        if not held:
            return 0.0
        count = sum(min(f.count, cap) for f in self.names.values())
        count += self.pooled.count if self.pooled else 0  # pooled already capped per name
        return max(f.last for f in held) + delay(count) - now

    def step(self, name: str, now: float, step: int, cap: int) -> None:
        f = self.names.pop(name, None)
        count = (f.count if f else 0) + step
        if count > 0:
            self.names[name] = _Failures(count, now if step > 0 or f is None else f.last)
        while len(self.names) > ADDRESS_NAMES:
            _, old = self.names.popitem(last=False)
            p = self.pooled
            self.pooled = _Failures(
                (p.count if p else 0) + min(old.count, cap), max(p.last if p else 0.0, old.last)
            )


class LoginThrottle:
    """Exponential backoff after consecutive failures, per name and per client address,
    or per device.

    The first `free` failures cost nothing (typos); after failure `free + k + 1`
    the next try waits `base_s * 2**k` seconds, capped at `max_s`. A success
    clears the name's count and that name's share of the address's. An address
    counts each name's failures up to `free + 1` (one name's are its own count's
    to slow) and forgets a name's `forget_s` after its last failure; no success
    under another name clears them.

    A login or a step-up calls `reserve` before it verifies the password: the check
    and the count are one step under a lock, so of any number of concurrent tries
    only as many are verified as sequential ones would be; the wait runs from when
    the attempt began. A success then clears the count (`succeeded`); an attempt
    that proved nothing about the password (the users file unreadable, a key not on
    the roster) gives its place back (`release`).

    A name's count slows a guesser from any address, and an address's count one who
    sprays names; but anyone can fail under someone else's name, and everyone behind
    one address (127.0.0.1, a proxy) shares its count. So a client that proves it
    logged in as that person before (`device`: the console's signed device cookie,
    or the session itself for a step-up) is counted on its own key alone: others'
    failures never lock the real person out of the kill, and its own still slow it.
    """

    def __init__(
        self,
        *,
        base_s: float = 0.5,
        max_s: float = 30.0,
        free: int = 2,
        max_entries: int = 10_000,
        forget_s: float = 900.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not forget_s > max_s:
            raise ValueError(f"forget_s {forget_s} must be > max_s {max_s}")
        self.base_s = base_s
        self.max_s = max_s
        self.free = free
        self.max_entries = max_entries
        self.forget_s = forget_s
        self._clock = clock
        self._table: OrderedDict[tuple[str, str], _Failures | _Address] = OrderedDict()
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """The wait after `failures` consecutive failures."""
        if failures <= self.free:
            return 0.0
        k = failures - self.free - 1
        return self.max_s if k >= 64 else min(self.base_s * 2**k, self.max_s)

    @staticmethod
    def _keys(name: str, ip: str, device: str | None) -> tuple[tuple[str, str], ...]:
        if device is not None:
            return (("device", device),)
        return ("user", name[:NAME_KEY_MAX]), ("ip", ip)

    def wait_s(self, name: str, ip: str, device: str | None = None) -> float:
        """Seconds until `name` from `ip` (or that `device`) may try again; 0.0: now."""
        with self._lock:
            return self._wait(name, ip, device, self._clock())

    def _wait(self, name: str, ip: str, device: str | None, now: float) -> float:
        wait = 0.0
        for key in self._keys(name, ip, device):
            f = self._table.get(key)
            if isinstance(f, _Address):
                f.prune(now, self.forget_s)
                wait = max(wait, f.wait(now, self.free + 1, self.delay_after))
            elif f is not None:
                wait = max(wait, f.last + self.delay_after(f.count) - now)
        return wait

    def reserve(self, name: str, ip: str, device: str | None = None) -> float:
        """Take an attempt's place before its password is verified: 0.0 and the attempt
        already counted as a failure, or the wait still due (nothing counted)."""
        with self._lock:
            now = self._clock()
            wait = self._wait(name, ip, device, now)
            if wait > 0:
                return wait
            self._count(name, ip, device, now, +1)
            return 0.0

    def release(self, name: str, ip: str, device: str | None = None) -> None:
        """Give back a reserved place: the attempt proved nothing about the password."""
        with self._lock:
            self._count(name, ip, device, self._clock(), -1)

    def _count(self, name: str, ip: str, device: str | None, now: float, step: int) -> None:
        for key in self._keys(name, ip, device):
            if key[0] == "ip":
                self._count_address(key, name[:NAME_KEY_MAX], now, step)
                continue
            popped = self._table.pop(key, None)
            f = popped if isinstance(popped, _Failures) else None  # only "ip" keys hold _Address
            count = (f.count if f else 0) + step
            if count > 0:
                # newest last; a release keeps the time the attempt it gives back set
                self._table[key] = _Failures(count, now if step > 0 or f is None else f.last)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)

    def _count_address(self, key: tuple[str, str], name: str, now: float, step: int) -> None:
        a = self._table.pop(key, None)
        if not isinstance(a, _Address):
            a = _Address()
        a.prune(now, self.forget_s)
        a.step(name, now, step, self.free + 1)
        if a.names or a.pooled is not None:
            self._table[key] = a  # newest last

    def succeeded(self, name: str, ip: str, device: str | None = None) -> None:
        """Clear the name's count and its share of the address's (others' stay: their
        failures are not this success's to forgive)."""
        with self._lock:
            for key in self._keys(name, ip, device):
                a = self._table.get(key)
                if isinstance(a, _Address):
                    a.names.pop(name[:NAME_KEY_MAX], None)
                    if not a.names and a.pooled is None:
                        del self._table[key]
                else:
                    self._table.pop(key, None)

    def __len__(self) -> int:
        return len(self._table)
