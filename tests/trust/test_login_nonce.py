"""A NATS login signs only a nonce: never bytes that count as a signed command or approval.

The identity key that answers the server's login challenge is the key whose DSSE
signatures count on resumes, approvals and roster versions. A server that sent a
DSSE pre-authentication encoding as its nonce got that signature: bob's CLI,
logging in to a rogue server, co-signed alice's resume as its approver.
"""

from __future__ import annotations

import asyncio
import base64
import json

import msgspec
import pytest

from knightwatch.control.plane.nats import connect_as
from knightwatch.release.dsse import pae
from knightwatch.state import Scope, TradingState
from knightwatch.trust.approval import APPROVAL_PAYLOAD_TYPE, Approval, ApprovalKind
from knightwatch.trust.command import COMMAND_PAYLOAD_TYPE, StateCommand, command_envelope
from knightwatch.trust.roster import ROSTER_PAYLOAD_TYPE, TrustError, roster_envelope
from knightwatch.trust.target import TARGET_PAYLOAD_TYPE

from ..identities import ALICE, BOB, KIT

NOW = 10**18
HOUR = 3600 * 10**9

RESUME = StateCommand(
    Scope.FLEET,
    "fleet",
    TradingState.ACTIVE,
    "resume",
    "alice",
    "c" * 32,
    NOW,
    NOW + HOUR,
    supersedes="k" * 32,
    decided_on=2,
)
APPROVAL = Approval(ApprovalKind.FLAG, "f", True, None, "alice", "r", NOW, NOW + HOUR)


@pytest.mark.parametrize(
    "message",
    [
        pae(COMMAND_PAYLOAD_TYPE, command_envelope(RESUME).payload_bytes()),
        pae(APPROVAL_PAYLOAD_TYPE, msgspec.json.encode(APPROVAL)),
        pae(ROSTER_PAYLOAD_TYPE, roster_envelope(KIT.roster).payload_bytes()),
        pae(TARGET_PAYLOAD_TYPE, b'{"release_id":"r"}'),
        b"DSSEv1 0  0 ",
    ],
    ids=["resume", "approval", "roster", "target", "empty"],
)
def test_a_login_nonce_that_is_a_dsse_encoding_is_not_signed(message: bytes) -> None:
    with pytest.raises(TrustError, match="NATS login nonce"):
        BOB.sign_nonce(message.decode())


@pytest.mark.parametrize(
    "nonce", ["", "short", "a b c d e f g h", "x" * 129, "abcdefgh\n", "abcdefgh\u00e9"]
)
def test_a_login_nonce_not_of_base64_characters_is_not_signed(nonce: str) -> None:
    with pytest.raises(TrustError, match="NATS login nonce"):
        ALICE.sign_nonce(nonce)


def test_a_nats_servers_nonce_is_signed_and_verifies() -> None:
    nonce = "H2lXprbTIizdIhI"  # one a nats-server sent: 15 base64url characters
    raw = base64.b64decode(ALICE.sign_nonce(nonce))
    assert ALICE.key.public.verify(raw, nonce.encode())


async def test_a_rogue_server_sending_a_resume_as_its_nonce_gets_no_signature() -> None:
    """Over a real socket: a server whose INFO nonce is the encoding of alice's resume
    gets no CONNECT carrying bob's signature (which would count as his approval)."""
    nonce = pae(COMMAND_PAYLOAD_TYPE, command_envelope(RESUME).payload_bytes()).decode()
    connects: list[dict[str, object]] = []
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "rogue", "version": "2.10.0", "max_payload": 1 << 20}
        info |= {"auth_required": True, "nonce": nonce, "proto": 1, "headers": True}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        line = await reader.readline()
        if line.startswith(b"CONNECT "):
            connects.append(json.loads(line[len(b"CONNECT ") :]))
        writer.close()  # a signed CONNECT was read: hang up

    def rogue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(serve(reader, writer)))

    server = await asyncio.start_server(rogue, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        try:  # refused before a CONNECT is sent (or, signed, the rogue hangs up)
            client = await connect_as(
                BOB,
                [f"nats://127.0.0.1:{port}"],
                allow_reconnect=False,
                connect_timeout=10,
                max_reconnect_attempts=0,
            )
        except Exception:  # any refusal will do: what was sent is asserted below
            client = None
        if client is not None:
            await client.close()
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
    assert handlers, "the client never reached the server"
    assert not [c for c in connects if c.get("sig")], connects
