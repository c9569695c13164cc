"""The names a gateway config gives the fleet and the Guard: its node id and its strategies.

Both leave the FIX settings: the node id names the node's directories and its place in
the fleet, a client's strategy is what its orders count against in the Guard, what the
limits' `[strategy.X]` overrides and `kill --strategy X` name. A name neither can carry
loaded silently before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.gateway.config import GatewayConfig
from knightwatch.gateway.engine import GatewayError

GOOD = """
listen_port = 9878
node = "gw1"
assume_flat = true
[venue]
port = 9880
[[clients]]
comp_id = "OMS1"
strategy = "desk-a"
[[clients]]
comp_id = "OMS2"
"""


def _refused(tmp_path: Path, text: str) -> str:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    with pytest.raises(GatewayError) as err:
        GatewayConfig.from_toml(p)
    assert str(p) in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("strategy", "rule"),
    [
        ("desk-a ", "must not start or end with whitespace"),
        (" desk-a", "must not start or end with whitespace"),
        ("  ", "must not be blank"),
        ("desk\\u0007a", "must not contain control characters"),
        ("desk\\ta", "must not contain control characters"),
        ("desk/a", "must not contain '/'"),
        ("d" * 65, "must be at most 64 characters"),
    ],
)
def test_a_strategy_no_order_or_limits_override_can_carry_is_refused(
    tmp_path: Path, strategy: str, rule: str
) -> None:
    """`strategy = "desk-a "` loaded: the session's orders counted against a strategy the
    limits cannot name (they refuse a padded `[strategy.X]`), so the desk's strategy limits
    never applied to it and `kill --strategy desk-a` missed its orders; '/' or more than 64
    characters loaded and then refused every order at the Guard."""
    text = GOOD.replace('strategy = "desk-a"', f'strategy = "{strategy}"')
    assert f'strategy = "{strategy}"' in text
    out = _refused(tmp_path, text)
    assert f"clients[0].strategy: {rule}" in out


@pytest.mark.parametrize("strategy", ["desk-a", "desk a", "Desk.A_1", "d" * 64, ""])
def test_a_strategy_an_order_can_carry_loads(tmp_path: Path, strategy: str) -> None:
    p = tmp_path / "gw.toml"
    p.write_text(GOOD.replace('strategy = "desk-a"', f'strategy = "{strategy}"'))
    cfg = GatewayConfig.from_toml(p)
    assert cfg.clients[0].strategy_name == (strategy or "OMS1")


@pytest.mark.parametrize("node", ["", "../x", "./gw1", "gw/1", "gw.1", "gw 1", "a\\nb", "n" * 65])
def test_a_node_id_the_fleet_cannot_carry_is_refused(tmp_path: Path, node: str) -> None:
    """`knightwatch node --id` holds a node id to 1-64 letters, digits, - or _; the gateway
    took its id from the file unchecked: "../x" put its recorder and FIX stores outside
    the state directory, and "./gw1" shared gw1's FIX stores (sequence numbers)."""
    out = _refused(tmp_path, GOOD.replace('node = "gw1"', f'node = "{node}"'))
    assert "node: must be 1-64 letters, digits, - or _" in out


def test_every_bad_name_is_named_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('node = "gw1"', 'node = "../gw"').replace('"desk-a"', '"desk-a "')
    text += '[[clients]]\ncomp_id = "OMS3"\nstrategy = "a/b"\n'
    out = _refused(tmp_path, text)
    assert "node: must be" in out
    assert "clients[0].strategy: must not start or end" in out
    assert "clients[2].strategy: must not contain '/'" in out


@pytest.mark.parametrize(
    ("gateway", "venue", "sender", "target"),
    [("KWGW", "DC-VENUE", "KWGW-DC", "VENUE"), ("KW-GW", "V", "KW", "GW-V")],
)
def test_a_drop_copy_whose_fix_files_are_the_venue_sessions_is_refused(
    tmp_path: Path, gateway: str, venue: str, sender: str, target: str
) -> None:
    """QuickFIX names a session's store and log files BeginString-Sender-Target, so the
    venue session KWGW -> DC-VENUE and a drop copy KWGW-DC -> VENUE shared one set of
    files: each wrote its sequence numbers over the other's."""
    text = (
        GOOD.replace('node = "gw1"', f'node = "gw1"\ncomp_id = "{gateway}"').replace(
            "port = 9880", f'port = 9880\ncomp_id = "{venue}"'
        )
        + f'[drop_copy]\nport = 9881\nsender_comp_id = "{sender}"\ncomp_id = "{target}"\n'
    )
    out = _refused(tmp_path, text)
    assert "drop_copy: sender_comp_id-comp_id" in out and "share one FIX store" in out
    p = tmp_path / "ok.toml"  # a drop copy of its own spelling loads
    p.write_text(text.replace(f'sender_comp_id = "{sender}"', 'sender_comp_id = "DCX"'))
    assert GatewayConfig.from_toml(p).drop_copy is not None


def test_a_client_session_that_is_the_drop_copys_session_is_refused(tmp_path: Path) -> None:
    """With the drop copy sent under the gateway's own CompID, a client whose CompID is
    the drop copy's comp_id had the drop copy's session (KWGW -> DC both ways): QuickFIX
    took both, and every message of that client was read as a drop-copy report (its
    orders never answered) and every answer to it sent on whichever session the engine
    held under that id."""
    text = (
        GOOD.replace('comp_id = "OMS2"', 'comp_id = "DC"')
        + '[drop_copy]\nport = 9881\nsender_comp_id = "KWGW"\ncomp_id = "DC"\n'
    )
    out = _refused(tmp_path, text)
    assert "clients[1].comp_id: 'DC' is the drop copy's session (KWGW -> DC)" in out
    p = tmp_path / "ok.toml"  # the drop copy under a CompID of its own: no shared session
    p.write_text(text.replace('sender_comp_id = "KWGW"', 'sender_comp_id = "KWGW-DC"'))
    assert GatewayConfig.from_toml(p).drop_copy is not None
