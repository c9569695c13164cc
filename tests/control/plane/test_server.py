"""The embedded server's helpers (ports picked for listeners that start later), and what
listens beside the client port: a cluster's route port admits only the cluster's members."""

from __future__ import annotations

import json
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

from knightwatch.control.plane.server import (
    ClusterMember,
    LoopbackCluster,
    free_port,
    nats_server_binary,
)


def test_ports_picked_before_anyone_listens_are_never_the_same() -> None:
    """A venue's port and a gateway's (or a cluster's client and route ports) are picked
    before either listens: the bind test alone finds the first pick free again (with 500
    picks a repeat is near certain)."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p < 32_000 for p in ports)


def _rogue_route(root: Path, member: ClusterMember, cluster_name: str) -> subprocess.Popen[bytes]:
    """A nats-server nobody vouched for, asking to join `member`'s cluster as a route. Its own
    client (no login at all) would publish and read everything the fleet's permissions
    refuse: routed messages are trusted, permissions bind client connections only."""
    root.mkdir(parents=True)
    monitor = free_port()
    conf = root / "rogue.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{free_port()}\nhttp: 127.0.0.1:{monitor}\n"
        'accounts: {"KNIGHTWATCH": {"users": [{"user": "rogue", "password": "rogue"}]}}\n'
        f"cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{free_port()}\n"
        f"  routes: [nats-route://127.0.0.1:{member.cluster_port}]\n}}\n"
    )
    log = (root / "rogue.log").open("ab")
    try:
        proc = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()
    (root / "monitor").write_text(str(monitor))
    return proc


def _routed_to(root: Path) -> set[str]:
    """The servers the rogue one holds routes to (none while its monitor does not answer)."""
    port = (root / "monitor").read_text()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/routez", timeout=1) as answer:
            return {str(r.get("remote_name", "")) for r in json.load(answer)["routes"] or []}
    except OSError:
        return set()


def test_a_server_nobody_vouched_for_cannot_join_the_cluster_as_a_route(
    nats_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """Permissions bind client connections; a route is trusted with every message of the
    account. The cluster ports listened with no authorization, so any process on the host
    started a nats-server routing to one and, through a client of its own without a login,
    wrote the kill state and read every node's records. The members now refuse a route
    that does not present the cluster's route credentials, held only by the process that
    started them; their own routes still work (the fixture provisioned three replicas)."""
    member = nats_cluster.members[0]
    root = tmp_path / "rogue"
    rogue = _rogue_route(root, member, nats_cluster.name)
    members = {m.name for m in nats_cluster.members}
    try:
        deadline = time.monotonic() + 30.0
        while True:
            refused = b"Authorization Violation" in (root / "rogue.log").read_bytes()
            joined = _routed_to(root) >= members  # the others it learned of through n1
            if refused or joined:
                break
            assert time.monotonic() < deadline, "the member neither took nor refused the route"
            time.sleep(0.1)
        assert (refused, joined) == (True, False)
        assert not _routed_to(root) & (members - {member.name})
        conf = member.server.state_dir / "nats-server.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds the route credentials
    finally:
        rogue.terminate()
        rogue.wait()
