"""The embedded server's helpers: ports picked for listeners that start later."""

from __future__ import annotations

from knightwatch.control.plane.server import free_port


def test_ports_picked_before_anyone_listens_are_never_the_same() -> None:
    """A venue's port and a gateway's (or a cluster's client and route ports) are picked
    before either listens: the bind test alone finds the first pick free again (with 500
    picks a repeat is near certain)."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p < 32_000 for p in ports)
