"""The control plane over TLS: a real nats-server with a certificate, clients that verify it.

The server here runs with `handshake_first`, as `tls://` clients expect: TLS from the
first byte, so neither the server nor anyone in between can talk a client into plain
text. Node processes connect over it, verify the kill and confirm it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from knightwatch.clock import SystemClock
from knightwatch.control.plane.nats import TLS_CA_ENV, NatsControlPlane, tls_options
from knightwatch.control.plane.protocol import ControlPlaneUnavailable
from knightwatch.control.plane.server import EmbeddedNatsServer
from knightwatch.control.site import Site
from knightwatch.sim.drill.processes import NodeProcesses, wait_admitted
from knightwatch.state import FLEET_KEY, Scope, TradingState
from knightwatch.trust.roster import Roster


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pki(root: Path, *, hosts: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for `hosts`: (ca.pem, server.pem, server.key)."""
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("desk test CA"))
        .issuer_name(_name("desk test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("nats"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(_pem(ca))
    (root / "server.pem").write_bytes(_pem(cert))
    (root / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (root / "server.key").chmod(0o600)
    return root / "ca.pem", root / "server.pem", root / "server.key"


class TlsServer(EmbeddedNatsServer):
    """The embedded server with a `tls` block: clients must start with the TLS handshake."""

    def __init__(self, state_dir: Path, *, roster: Roster, cert: Path, key: Path) -> None:
        super().__init__(state_dir, roster=roster)
        self.cert, self.key = cert, key

    def _config(self) -> str:
        return (
            f"{super()._config()}\ntls {{\n  cert_file: {json.dumps(str(self.cert))}\n"
            f"  key_file: {json.dumps(str(self.key))}\n  handshake_first: true\n}}\n"
        )

    def start(self) -> str:
        self.url = "tls://" + super().start().split("://", 1)[1]
        return self.url


@pytest.fixture
async def tls_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    ca, cert, key = pki(tmp_path / "pki")
    monkeypatch.setenv(TLS_CA_ENV, str(ca))  # node processes inherit it
    site = Site(tmp_path / "site", ("n1", "n2"))
    site.server = TlsServer(tmp_path / "site" / "nats", roster=site.kit.roster, cert=cert, key=key)
    await site.astart()
    assert site.url.startswith("tls://127.0.0.1:")
    return site


async def test_a_fleet_over_tls_kills_and_every_node_confirms(tls_site: Site) -> None:
    site = tls_site
    nodes = NodeProcesses([site.url], site.root, trust_dir=site.trust_dir)
    plane = site.plane("alice")
    try:
        ids = nodes.spawn_many(2)
        await plane.connect()
        await wait_admitted(plane, ids, SystemClock(), timeout_s=30)
        ks = site.killswitch(plane, "alice")
        result = await ks.kill(Scope.FLEET, FLEET_KEY, "over tls", timeout_s=15.0, targets=ids)
        assert result.missing == [] and sorted(result.latencies_ms) == ids
        entry, _ = await plane.get_state(Scope.FLEET, FLEET_KEY)
        assert entry is not None and entry.state is TradingState.HALTED
    finally:
        await plane.close()
        nodes.stop()
        site.stop()


async def test_a_server_certificate_the_ca_did_not_sign_is_refused(
    tls_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_ca, _, _ = pki(tmp_path / "other")
    monkeypatch.setenv(TLS_CA_ENV, str(other_ca))
    try:
        refused = "unreachable at tls://.*certificate verify failed"
        with pytest.raises(ControlPlaneUnavailable, match=refused):
            await tls_site.plane("alice").connect()
        monkeypatch.delenv(TLS_CA_ENV)  # the system's CAs do not know it either
        with pytest.raises(ControlPlaneUnavailable, match=refused):
            await tls_site.plane("alice").connect()
    finally:
        tls_site.stop()


async def test_no_plain_text_either_way(tls_site: Site, tmp_path: Path) -> None:
    """A nats:// client gets nothing from the TLS server, and a tls:// client does not follow
    a server (or someone in between) that answers in plain text."""
    plain = Site(tmp_path / "plain", ("n1",))
    await plain.astart()
    try:
        plaintext = NatsControlPlane(
            tls_site.url.replace("tls://", "nats://"), signer=tls_site.signer("alice")
        )
        with pytest.raises(ControlPlaneUnavailable):
            await plaintext.connect()
        downgraded = NatsControlPlane(
            plain.url.replace("nats://", "tls://"), signer=plain.signer("alice")
        )
        with pytest.raises(ControlPlaneUnavailable, match="unreachable at tls://"):
            await downgraded.connect()
        ok = plain.plane("alice")  # the plain server itself still serves nats://
        await ok.connect()
        await ok.close()
    finally:
        plain.stop()
        tls_site.stop()


def test_mixed_schemes_and_an_unreadable_ca_file_are_refused_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ControlPlaneUnavailable, match="tls:// and nats:// mixed"):
        tls_options(["tls://a:4222", "nats://b:4222"])
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    monkeypatch.setenv(TLS_CA_ENV, str(bad))
    with pytest.raises(
        ControlPlaneUnavailable, match=re.escape(f"{TLS_CA_ENV}={bad}: not a readable PEM")
    ):
        tls_options(["tls://a:4222"])
    monkeypatch.setenv(TLS_CA_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(ControlPlaneUnavailable, match=r"missing\.pem: not a readable PEM"):
        tls_options(["tls://a:4222"])


def test_plain_text_beyond_this_machine_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "knightwatch.control.plane.nats"):
        quiet = ["nats://127.0.0.1:4222", "nats://localhost:1", "nats://[::1]:2", "nats://[::1]"]
        assert tls_options(quiet) == {}
        assert not caplog.records
        assert tls_options(["nats://10.1.2.3:4222"]) == {}
    assert [r.getMessage() for r in caplog.records] == [
        "control plane at nats://10.1.2.3:4222 is not encrypted (commands are signed, but "
        "audit lines and metrics cross the network in clear); use tls://"
    ]
