"""The listener is reachable from allowed source addresses only, though QuickFIX binds 0.0.0.0."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest

from knightwatch.control.plane.server import free_port
from knightwatch.gateway.config import ClientSession, GatewayConfig, VenueSession
from knightwatch.gateway.containment import ContainmentError, restrict_listener, source_filter
from knightwatch.gateway.engine import GatewayError
from knightwatch.gateway.venue import FixVenue

from .conftest import WAIT_S, Rig


def _connects(source: str, port: int, target: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """A connection from `source` is taken within `timeout_s` (a dropped SYN: never)."""
    with socket.socket() as c:
        c.settimeout(timeout_s)
        c.bind((source, 0))
        try:
            c.connect((target, port))
        except OSError:  # a dropped SYN: timeout
            return False
        return True


def _host_address() -> str | None:
    """This host's own non-loopback address, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            addr: str = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_the_engine_binds_every_interface_and_the_filter_keeps_it_to_loopback(
    tmp_path: Path,
) -> None:
    port = free_port()
    venue = FixVenue(tmp_path, port=port, sessions=["KWGW"], store="memory", log_messages=False)
    venue.start()  # QuickFIX listens on 0.0.0.0: the venue attaches the filter itself
    try:
        assert _connects("127.0.0.1", port, timeout_s=WAIT_S)  # expected: time for a loaded host
        assert not _connects("127.0.0.2", port)  # another source address, same host
        host = _host_address()
        if host is not None:  # the host's own external address (always present in CI VMs)
            assert not _connects(host, port, target=host)
    finally:
        venue.stop()


def test_a_plain_listener_is_restricted_and_refused_without_one() -> None:
    with socket.socket() as lst:
        lst.bind(("0.0.0.0", 0))
        lst.listen()
        port = lst.getsockname()[1]
        assert _connects("127.0.0.2", port)  # unrestricted: anyone gets in
        assert restrict_listener(port, ["127.0.0.1"]) == 1
        assert not _connects("127.0.0.2", port)
        assert _connects("127.0.0.1", port, timeout_s=WAIT_S)  # expected: time for a loaded host
    with pytest.raises(ContainmentError, match="no listening socket"):
        restrict_listener(free_port(), ["127.0.0.1"])


def test_allowed_addresses_must_be_ipv4() -> None:
    with pytest.raises(ContainmentError, match="not an IPv4 address"):
        source_filter(["::1"])
    assert len(source_filter(["127.0.0.1", "10.0.0.5"])) == 8 * 5


def test_loopback_only_refuses_a_session_open_to_other_hosts(tmp_path: Path) -> None:
    from knightwatch.audit import FlightRecorder, MemorySink
    from knightwatch.clock import SystemClock
    from knightwatch.gateway.gateway import Gateway
    from knightwatch.guard import LockedGuard

    open_cfg = GatewayConfig(
        listen_port=free_port(),
        venue=VenueSession(port=free_port()),
        clients=(ClientSession("OMS1", allowed_remote_addresses=("10.1.2.3",)),),
        assume_flat=True,
        loopback_only=False,
    )
    # the config itself refuses it, naming the entry (before: only the Gateway, at start)
    with pytest.raises(GatewayError, match=r"loopback_only = true allows only 127\.0\.0\.1"):
        msgspec.structs.replace(open_cfg, loopback_only=True)
    cfg = msgspec.structs.replace(open_cfg)
    msgspec.structs.force_setattr(cfg, "loopback_only", True)  # the Gateway checks it again
    clock = SystemClock()
    guard = LockedGuard(clock=clock, recorder=FlightRecorder(None, clock=clock, sink=MemorySink()))
    with pytest.raises(GatewayError, match=r"loopback_only = true allows only 127\.0\.0\.1"):
        Gateway(cfg, guard, tmp_path)


def test_only_listed_comp_ids_log_on(rig: Rig) -> None:
    rogue = rig.client("ROGUE", start=False)
    rogue.start()
    try:
        assert not rogue.logged_on.wait(1.0)  # QuickFIX knows no session for it: disconnected
    finally:
        rogue.stop()
    assert rig.oms.logged_on.is_set()
