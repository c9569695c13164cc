"""Console sessions (idle and absolute expiry, revocation) and the login throttle, on an
injected clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knightwatch.console.sessions import ADDRESS_NAMES, LoginThrottle, Sessions
from knightwatch.release.keys import SigningKey
from knightwatch.trust.identity import Signer

from .second import Hands


@pytest.fixture
def clock() -> Hands:
    return Hands()


@pytest.fixture
def signer() -> Signer:
    return Signer("alice", SigningKey.generate())


def test_a_session_is_random_and_keeps_its_key_out_of_repr(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(clock=clock)
    a = sessions.open("alice", signer, "127.0.0.1", "firefox")
    b = sessions.open("alice", signer, "127.0.0.1", "firefox")
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) == 43  # 256 bits, urlsafe base64
    assert sessions.get(a.id) is a and a.signer is signer
    text = repr(a)
    assert "alice" in text and "signer" not in text and "Signer" not in text
    assert a.csrf not in text and signer.key.key_id[:16] not in text
    assert a.created == a.last_seen == a.reauth_at == 1000.0


def test_idle_expiry_restarts_on_use(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(idle_s=900, absolute_s=43200, clock=clock)
    s = sessions.open("alice", signer, "ip", "ua")
    clock.now += 899
    assert sessions.get(s.id) is s and s.last_seen == clock.now
    clock.now += 899
    assert sessions.get(s.id) is s
    clock.now += 900
    assert sessions.get(s.id) is None
    assert sessions.count() == 0


def test_absolute_expiry_ends_even_a_busy_session(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(idle_s=900, absolute_s=3600, clock=clock)
    s = sessions.open("alice", signer, "ip", "ua")
    for _ in range(7):
        clock.now += 500
        assert sessions.get(s.id) is s
    clock.now += 100  # 3600 s after login, used 100 s ago
    assert sessions.get(s.id) is None


def test_close_and_close_user(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(clock=clock)
    a1 = sessions.open("alice", signer, "ip", "ua")
    a2 = sessions.open("alice", signer, "ip2", "ua")
    b = sessions.open("bob", Signer("bob", SigningKey.generate()), "ip", "ua")
    assert sessions.count() == 3
    assert sessions.close(b.id) and not sessions.close(b.id)
    assert sessions.close_user("alice") == 2
    assert sessions.get(a1.id) is None and sessions.get(a2.id) is None
    assert sessions.count() == 0 and sessions.get("made-up") is None


def test_trim_ends_the_oldest_of_that_person_only(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(clock=clock)
    opened = []
    for _ in range(5):
        clock.now += 1
        opened.append(sessions.open("alice", signer, "ip", "ua").id)
    bob = sessions.open("bob", Signer("bob", SigningKey.generate()), "ip", "ua").id
    assert sessions.trim("alice", 3) == opened[:2]
    assert sorted(sessions.ids()) == sorted([*opened[2:], bob])
    assert sessions.trim("alice", 3) == []


def test_a_look_without_touch_leaves_the_idle_clock_alone(signer: Signer, clock: Hands) -> None:
    """An open stream re-checks its session without keeping it alive: a page left open
    still idles out."""
    sessions = Sessions(idle_s=900, absolute_s=43200, clock=clock)
    s = sessions.open("alice", signer, "ip", "ua")
    for _ in range(2):
        clock.now += 400
        assert sessions.get(s.id, touch=False) is s and s.last_seen == s.created
    clock.now += 400
    assert sessions.get(s.id, touch=False) is None  # 1200 s without a request of hers


def test_reauthentication_is_recorded(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(clock=clock)
    s = sessions.open("alice", signer, "ip", "ua")
    clock.now += 400
    sessions.reauthenticated(s.id)
    assert s.reauth_at == clock.now and s.created == 1000.0


def test_expired_sessions_are_swept_when_others_open(signer: Signer, clock: Hands) -> None:
    sessions = Sessions(idle_s=10, absolute_s=100, clock=clock)
    for _ in range(50):
        sessions.open("alice", signer, "ip", "ua")
    clock.now += 11
    sessions.open("alice", signer, "ip", "ua")
    assert len(sessions._by_id) == 1


def test_session_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        Sessions(idle_s=100, absolute_s=10)


# --- throttle ---------------------------------------------------------------------------------


def test_backoff_arithmetic() -> None:
    t = LoginThrottle(base_s=0.5, max_s=30.0)
    assert [t.delay_after(n) for n in range(0, 11)] == [
        0,
        0,
        0,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert t.delay_after(10_000) == 30.0


@given(st.integers(0, 500), st.integers(0, 500))
def test_backoff_never_shrinks_with_more_failures_and_is_capped(a: int, b: int) -> None:
    t = LoginThrottle(base_s=0.25, max_s=60.0)
    lo, hi = sorted((a, b))
    assert 0 <= t.delay_after(lo) <= t.delay_after(hi) <= 60.0


def _fail(t: LoginThrottle, clock: Hands, name: str, ip: str, device: str | None = None) -> None:
    """One failed attempt, made as soon as the throttle lets it be (a wrong password is
    counted by its reservation)."""
    clock.now += max(t.wait_s(name, ip, device), 0.0)
    assert t.reserve(name, ip, device) == 0.0


def test_waits_follow_the_clock(clock: Hands) -> None:
    t = LoginThrottle(clock=clock)
    for _ in range(2):
        _fail(t, clock, "alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 0.0  # two typos are free
    _fail(t, clock, "alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 0.5
    clock.now += 0.3
    assert t.wait_s("alice", "10.0.0.1") == pytest.approx(0.2)
    clock.now += 0.2
    assert t.wait_s("alice", "10.0.0.1") <= 0.0
    _fail(t, clock, "alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 1.0


def test_name_and_address_are_throttled_independently(clock: Hands) -> None:
    t = LoginThrottle(clock=clock)
    for _ in range(5):
        _fail(t, clock, "alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 2.0
    assert t.wait_s("alice", "10.9.9.9") == 2.0  # the name is slowed from any address
    # the address is slowed for any name, by at most free + 1 of one name's failures: a
    # name hammered from a shared address is its own count's to slow (it was 2.0 here)
    assert t.wait_s("bob", "10.0.0.1") == 0.5
    assert t.wait_s("bob", "10.9.9.9") == 0.0
    t.succeeded("alice", "10.0.0.1")
    assert t.wait_s("alice", "10.9.9.9") == 0.0 and t.wait_s("bob", "10.0.0.1") == 0.0


def test_a_known_device_is_counted_alone_so_others_cannot_lock_its_person_out(
    clock: Hands,
) -> None:
    t = LoginThrottle(clock=clock)
    for _ in range(8):  # someone else fails under alice's name, from alice's own address
        _fail(t, clock, "alice", "127.0.0.1")
    assert t.wait_s("alice", "127.0.0.1") == 16.0
    assert t.wait_s("alice", "127.0.0.1", device="d1") == 0.0  # her browser logs in
    for _ in range(3):  # and its own failures still slow it
        _fail(t, clock, "alice", "127.0.0.1", device="d1")
    assert t.wait_s("alice", "127.0.0.1", device="d1") == 0.5
    assert t.wait_s("alice", "127.0.0.1", device="d2") == 0.0
    t.succeeded("alice", "127.0.0.1", device="d1")
    assert t.wait_s("alice", "127.0.0.1", device="d1") == 0.0
    assert t.wait_s("alice", "127.0.0.1") == 16.0  # the name's count is not its to clear


def test_a_spray_over_many_names_is_slowed_by_address(clock: Hands) -> None:
    t = LoginThrottle(clock=clock)
    for i in range(6):
        _fail(t, clock, f"user{i}", "10.0.0.1")
    assert t.wait_s("user99", "10.0.0.1") == 4.0
    assert t.wait_s("user0", "10.0.0.2") == 0.0  # each name failed once


def test_memory_is_bounded_and_the_newest_are_kept(clock: Hands) -> None:
    t = LoginThrottle(max_entries=100, clock=clock)
    for _ in range(3):
        _fail(t, clock, "target", "10.0.0.1")
    for i in range(1000):
        _fail(t, clock, f"made-up-{i}", f"10.1.{i // 256}.{i % 256}")
        clock.now += 0.001
    assert len(t) == 100
    assert t.wait_s("made-up-999", "x") == 0.0  # one failure: free, but tracked
    assert ("user", "made-up-999") in t._table and ("user", "target") not in t._table


def test_a_made_up_name_of_any_length_is_held_under_a_bounded_key(clock: Hands) -> None:
    """A login's name can be as long as its body (64 KiB): it was the table's key whole, so
    10,000 of them held 640 MB. No user's name is longer than 64 characters."""
    t = LoginThrottle(clock=clock)
    long = "x" * 60_000
    for i in range(3):
        _fail(t, clock, f"{long}{i}", f"10.0.0.{i}")
    assert max(len(key) for _, key in t._table) <= 128
    assert t.wait_s(long + "9", "10.9.9.9") == 0.5  # one made-up name's count, as it should
    assert t.wait_s("alice", "10.9.9.9") == 0.0


def test_an_attempt_takes_its_place_before_it_is_verified(clock: Hands) -> None:
    t = LoginThrottle(clock=clock)
    assert [t.reserve("alice", "10.0.0.1") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert t.wait_s("alice", "10.0.0.1") == 0.5  # three counted before any verdict
    clock.now += 0.5
    assert t.reserve("alice", "10.0.0.1") == 0.0
    assert t.wait_s("alice", "10.9.9.9") == 1.0  # the name, from anywhere
    t.succeeded("alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 0.0


def test_a_released_attempt_gives_its_place_back(clock: Hands) -> None:
    """An attempt that learnt nothing about the password (the users file unreadable, a key
    not on the roster) is not a failure."""
    t = LoginThrottle(clock=clock)
    for _ in range(3):
        assert t.reserve("alice", "10.0.0.1") == 0.0
    t.release("alice", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 0.0 and t.reserve("alice", "10.0.0.1") == 0.0
    t.succeeded("alice", "10.0.0.1")
    t.release("alice", "10.0.0.1")  # after a success cleared it: nothing to give back
    assert len(t) == 0


def test_concurrent_reservations_get_no_more_tries_than_sequential_ones(clock: Hands) -> None:
    """However many threads try at once, only `free + 1` pass before the first wait."""
    t = LoginThrottle(clock=clock)
    start = threading.Barrier(64)
    passed: list[float] = []

    def attempt(i: int) -> None:
        start.wait()
        wait = t.reserve("alice" if i % 2 else f"user{i}", "10.0.0.1")
        if wait == 0.0:
            passed.append(wait)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(64)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(passed) == t.free + 1  # the address's count, shared by every name


def test_a_success_takes_back_only_its_own_names_share_of_the_address(clock: Hands) -> None:
    """carol's success cleared the whole address: with an account of her own she sprayed
    guesses over every other name, each round with fresh free tries."""
    t = LoginThrottle(clock=clock)
    _fail(t, clock, "carol", "10.0.0.1")  # her own typo
    _fail(t, clock, "alice", "10.0.0.1")
    _fail(t, clock, "bob", "10.0.0.1")
    assert t.wait_s("carol", "10.0.0.1") == 0.5
    clock.now += 0.5
    assert t.reserve("carol", "10.0.0.1") == 0.0
    t.succeeded("carol", "10.0.0.1")
    assert t.wait_s("dave", "10.0.0.1") == 0.0  # her two are gone, alice's and bob's not
    _fail(t, clock, "dave", "10.0.0.1")
    assert t.wait_s("erin", "10.0.0.1") == 0.5  # before: 0.0, the address cleared by carol
    t.release("dave", "10.0.0.1")  # a place given back is dave's share, not anyone else's
    assert t.wait_s("erin", "10.0.0.1") == 0.0
    clock.now += t.forget_s - 0.5
    assert t.wait_s("carol", "10.9.9.9") == 0.0 and len(t) == 3  # alice, bob, the address
    clock.now += 0.5
    assert t.reserve("erin", "10.0.0.1") == 0.0 and t.reserve("frank", "10.0.0.1") == 0.0
    assert t.wait_s("grace", "10.0.0.1") == 0.0  # alice's and bob's forgotten with time


def test_names_beyond_those_an_address_keeps_apart_are_pooled_and_no_success_clears_them(
    clock: Hands,
) -> None:
    t = LoginThrottle(clock=clock)
    sprayed = [f"user{i}" for i in range(ADDRESS_NAMES + 4)]
    for name in sprayed:
        _fail(t, clock, name, "10.0.0.1")
    for name in sprayed:
        t.succeeded(name, "10.9.9.9")  # each name logged in elsewhere: its own count goes
        t.succeeded(name, "10.0.0.1")  # and its share here, but the pooled four stay
    _fail(t, clock, "someone", "10.0.0.1")
    assert t.wait_s("other", "10.0.0.1") == t.delay_after(5)  # the pooled four, and this one
    clock.now += t.forget_s
    assert t.wait_s("other", "10.0.0.1") == 0.0


def test_forgetting_must_outlast_the_longest_wait() -> None:
    with pytest.raises(ValueError, match="forget_s"):
        LoginThrottle(max_s=30.0, forget_s=30.0)
