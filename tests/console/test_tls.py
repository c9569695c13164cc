"""The console served over TLS (`--tls-cert/--tls-key`): its cookies are `Secure`.

A real `console serve` process with a self-signed certificate made here for
127.0.0.1, and a client that verifies it: the session and device cookies a
login sets must never be sent back over plain HTTP, and a session opened over
TLS works as one opened over HTTP does (its CSRF and origin checks included).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from knightwatch.console.local import PASSWORD, ConsoleProc, Fleet, running_console

from .conftest import KILL_TIMEOUT_S
from .test_api import kill_body


def self_signed(where: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = where / "console.crt", where / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Served:
    console: ConsoleProc
    trusted: ssl.SSLContext
    """Trusts the test's own certificate, and checks it names 127.0.0.1."""


@pytest.fixture(scope="module")
def tls(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(where)
    # a state directory of its own (its record: the shared console appends to the fleet's),
    # on the fleet's users and roster
    own = ("--state-dir", str(where), "--users", str(fleet.state / "console-users.toml"),
           "--anchor", str(fleet.state / "trust" / "anchor.toml"),
           "--kill-timeout", str(KILL_TIMEOUT_S))  # fmt: skip
    with running_console(fleet, "--tls-cert", str(cert), "--tls-key", str(key), *own) as c:
        yield Served(c, ssl.create_default_context(cafile=str(cert)))


def _cookies(answer: httpx.Response) -> dict[str, list[str]]:
    """Each Set-Cookie header's attributes (lower-cased) by its cookie's name."""
    out = {}
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        out[name] = [a.strip().lower() for a in rest.split(";")[1:]]
    return out


def test_the_session_and_device_cookies_are_secure_over_tls(tls: Served) -> None:
    """The session cookie is Secure and `__Host-` prefixed (the browser keeps it only as
    Secure, Path=/ and without Domain), the device cookie Secure; a session over TLS kills
    as one over HTTP does, and its logout clears the cookie it set."""
    assert tls.console.url.startswith("https://")
    with httpx.Client(base_url=tls.console.url, verify=tls.trusted, timeout=20) as http:
        answer = http.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        cookies = _cookies(answer)
        assert "kw_session" not in cookies, cookies
        session = cookies["__Host-kw_session"]
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(session), session
        assert not any(a.startswith("domain") for a in session), session
        assert {"secure", "httponly", "samesite=strict"} <= set(cookies["kw_device"])
        page = http.get("/").text
        csrf = page.split('data-csrf="', 1)[1].split('"', 1)[0]
        kill = http.post(
            "/api/kill",
            content=json.dumps(kill_body("tls-s1")),
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf,
                     "Origin": tls.console.url},
        )  # fmt: skip
        assert kill.status_code == 200 and kill.json()["ok"], kill.text
        out = http.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303, out.text
        assert "secure" in _cookies(out)["__Host-kw_session"]
        assert http.get("/api/whoami").status_code == 401


def test_an_origin_over_plain_http_is_refused_by_a_tls_console(tls: Served) -> None:
    """Without Fetch Metadata, `Origin` was matched on host and port alone: a page served
    over plain HTTP on the console's name and port (which anyone on the path can write)
    passed as the console's own origin."""
    with httpx.Client(base_url=tls.console.url, verify=tls.trusted, timeout=20) as http:
        assert http.post("/login", data={"name": "alice", "password": PASSWORD}).is_redirect
        csrf = http.get("/").text.split('data-csrf="', 1)[1].split('"', 1)[0]
        plain = "http://" + tls.console.url.removeprefix("https://")
        kill = http.post(
            "/api/kill",
            content=json.dumps(kill_body("tls-o1")),
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf,
                     "Origin": plain},
        )  # fmt: skip
        assert kill.status_code == 403, kill.text
        assert "Origin" in kill.json()["error"]
        halts = {(h["scope"], h["key"]) for h in http.get("/api/snapshot").json()["halts"]}
        assert ("strategy", "tls-o1") not in halts
