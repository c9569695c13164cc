"""Server answers injected onto the live subjects nodes listen on halt nothing, and scale
nothing.

Publish permissions judge a message's subject, never its reply subject, and JetStream
answers every request on the reply its sender named, published by the server into the
sender's account (`authz.STORE_ACCOUNT` keeps it from being stored, not from being
delivered). Any identity, a node's key or a viewer's, sent `$JS.API.INFO` with the reply
`kw.state` or `kw.repub.state.fleet.fleet` and every node held the JSON answer as an
undecodable halt of the fleet; with `kw.repub.ramp.<key>` every node traded at the
tightest ramp stage (10 %); with `kw.repub.release.target` a node without an attestor
read a target release set and dropped out of admission (and one with an attestor
attested again at every answer). Now an undecodable announcement is read in the store first
(`NatsControlPlane._consult`) and a message the store did not republish is dropped
(`nats._republished`), while a real kill still halts and is confirmed. Real nats-server,
authorization on; the rogue is a raw client logged in with the node's or the viewer's key.
"""

from __future__ import annotations

import logging

import pytest

from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.nats import connect_as
from knightwatch.control.site import Site
from knightwatch.state import Scope, TradingState

from ..helpers import eventually
from ..node.test_undecodable_announcement import joined

REPLIES = {
    "kw.state": "ANNOUNCEMENT_UNDECODABLE read in the store",
    "kw.repub.state.fleet.fleet": "not republished by the store",
    "kw.repub.state.node.n1": "not republished by the store",
    "kw.repub.ramp.fleet.fleet": "not republished by the store",
    "kw.repub.ramp.node.n1": "not republished by the store",
    "kw.repub.release.target": "not republished by the store",
}
"""Each live subject a node listens on, and the line that says the node's plane judged
the injected answer (the condition the test waits for)."""


def untouched(node: NodeRuntime) -> bool:
    return (
        node.guard.trading_state(Scope.FLEET) is TradingState.ACTIVE
        and node.guard.trading_state(Scope.NODE, "n1") is TradingState.ACTIVE
        and node.guard.halts() == {}
        and "@" not in node.guard.limits.version  # no ramp stage scales it
        and node.release_admitted  # no target release set (n1 has no attestor)
    )


@pytest.mark.parametrize("reply", list(REPLIES))
@pytest.mark.parametrize("name", ["n1", "carol"])
async def test_a_server_answer_on_a_live_subject_halts_and_scales_nothing(
    site: Site, caplog: pytest.LogCaptureFixture, name: str, reply: str
) -> None:
    """n1 (a node) or carol (a viewer) asks the JetStream API with a live subject as the
    reply. Before: the fleet halted (`kw.state`, `kw.repub.state.*`), n1 traded at 10 %
    of its limits (`kw.repub.ramp.*`) or left admission (`kw.repub.release.target`).
    Then alice's real kill of n1 halts it, confirmed."""
    caplog.set_level(logging.WARNING, logger="knightwatch.control.plane.nats")
    node = await joined(site)
    rogue = await connect_as(site.signer(name), [site.url], name=name, allow_reconnect=False)
    alice = site.killswitch(await site.connect("alice"), "alice")
    try:
        assert untouched(node)
        await rogue.publish("$JS.API.INFO", b"", reply=reply)
        await rogue.publish("$JS.API.STREAM.INFO.KV_kw_state", b"", reply=reply)
        await rogue.flush(timeout=10)
        await eventually(
            lambda: (
                any(REPLIES[reply] in r.getMessage() for r in caplog.records) or not untouched(node)
            ),
            what=f"n1's plane judged the answers on {reply}",
        )
        assert untouched(node)
        await alice.start()
        kill = await alice.kill(Scope.NODE, "n1", "real", timeout_s=10)
        assert kill.ok, kill
        assert node.guard.trading_state(Scope.NODE, "n1") is TradingState.HALTED
    finally:
        await rogue.close()
        await alice.plane.close()
        await node.stop()
        await node.plane.close()
