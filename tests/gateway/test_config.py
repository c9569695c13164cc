"""The gateway's TOML: every problem named with the file, the key and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from knightwatch.gateway.config import (
    ClientSession,
    GatewayConfig,
    VenueSession,
    acceptor_settings,
)
from knightwatch.gateway.engine import GatewayError

GOOD = """
listen_port = 9878
node = "gw1"
assume_flat = true
[venue]
port = 9880
market_data = ["L000"]
[[clients]]
comp_id = "OMS1"
strategy = "desk-a"
[[clients]]
comp_id = "OMS2"
cancel_on_disconnect = false
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    p = tmp_path / "gw.toml"
    p.write_text(GOOD)
    cfg = GatewayConfig.from_toml(p)
    assert cfg.node == "gw1" and cfg.venue.port == 9880
    assert [c.strategy_name for c in cfg.clients] == ["desk-a", "OMS2"]
    assert cfg.clients[0].allowed_remote_addresses == ("127.0.0.1",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            GOOD.replace("port = 9880", 'port = "x"'),
            "Expected `int`, got `str` - at `$.venue.port`",
        ),
        (GOOD + "bogus = 1\n", "unknown field `bogus`"),
        (
            GOOD.replace("listen_port = 9878", "listen_port = 70000"),
            "listen_port: must be a TCP port",
        ),
        (
            GOOD.replace('comp_id = "OMS2"', 'comp_id = "OMS1"'),
            "comp_id 'OMS1' is listed more than once",
        ),
        (GOOD.replace("assume_flat = true", ""), "does not arm on unknown positions"),
        ("listen_port = 1\nclients = []\n[venue]\nport = 2\n", "at least one client session"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_files_name_file_key_and_rule(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    with pytest.raises(GatewayError) as err:
        GatewayConfig.from_toml(p)
    assert str(p) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (('comp_id = "OMS2"', 'comp_id = "OMS2\\nSocketAcceptPort=1"'), "clients[1].comp_id"),
        (('comp_id = "OMS2"', 'comp_id = "OMS:2"'), "clients[1].comp_id: must be"),
        (('comp_id = "OMS2"', 'comp_id = "OMS2"\nallowed_remote_addresses = ["1.2.3.4\\n[X]"]'),
         "allowed_remote_addresses[0]: must be a host"),
        (('node = "gw1"', 'node = "gw1"\ncomp_id = "KW\\rGW"'), "comp_id: must be 1-64"),
        (("port = 9880", 'port = 9880\nhost = "h\\nSocketConnectPort=1"'), "venue.host: must be"),
        (("port = 9880", 'port = 9880\ncomp_id = "V\\u0001"'), "venue.comp_id: must be"),
        (('market_data = ["L000"]', 'market_data = ["L0\\u000100"]'), "market_data[0]: must be"),
    ],
)  # fmt: skip
def test_a_value_written_into_the_fix_settings_cannot_inject_one(
    tmp_path: Path, edit: tuple[str, str], needle: str
) -> None:
    """The QuickFIX settings are generated from the config: a newline in a CompID or host
    would add a setting or a session of its own (a port, an address allowed to log on)."""
    p = tmp_path / "gw.toml"
    p.write_text(GOOD.replace(*edit, 1))
    with pytest.raises(GatewayError) as err:
        GatewayConfig.from_toml(p)
    assert str(p) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD + "[drop_copy]\nport = 70000\n", "drop_copy.port: must be a TCP port 1..65535"),
        (GOOD + '[drop_copy]\nport = 9881\nsender_comp_id = "KWGW"\n',
         "drop_copy: sender_comp_id and comp_id name the venue session (KWGW -> VENUE)"),
        (GOOD.replace("port = 9880", "port = 9880\nreconnect_s = 0"),
         "venue.reconnect_s: must be in 1..3600 (got 0)"),
    ],
)  # fmt: skip
def test_the_drop_copy_and_reconnect_settings_are_checked(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Before, a drop-copy port out of range was written into the settings (a session that
    never connects: no drop copy, and nothing said), a drop copy naming the venue session
    failed inside QuickFIX without naming the key, and reconnect_s = 0 retried a venue
    that is down in a tight loop."""
    p = tmp_path / "gw.toml"
    p.write_text(text)
    with pytest.raises(GatewayError) as err:
        GatewayConfig.from_toml(p)
    assert str(p) in str(err.value) and needle in str(err.value)


def test_fix42_cannot_claim_mass_cancel() -> None:
    with pytest.raises(GatewayError, match=r"FIX\.4\.2 has no OrderMassCancelRequest"):
        GatewayConfig(
            listen_port=1,
            venue=VenueSession(port=2),
            clients=(ClientSession("A"),),
            begin_string="FIX.4.2",
            assume_flat=True,
        )


def test_generated_settings_pin_the_safety_choices(tmp_path: Path) -> None:
    text = acceptor_settings(
        tmp_path,
        comp_id="KWGW",
        port=9878,
        clients=[("OMS1", ("127.0.0.1",))],
        begin_string="FIX.4.4",
    )
    for line in (
        "UseDataDictionary=Y",
        "AllowedRemoteAddresses=127.0.0.1",
        f"FileStorePath={tmp_path / 'store'}",
        "TargetCompID=OMS1",
        "SocketAcceptPort=9878",
    ):
        assert line in text.splitlines()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD.replace("assume_flat = true", "assume_flat = true\nheartbeat_s = 10000000000"),
         "heartbeat_s: must be in 1..300 (got 10000000000)"),
        (GOOD.replace("port = 9880", "port = 9880\nreconnect_s = 1000000000000"),
         "venue.reconnect_s: must be in 1..3600 (got 1000000000000)"),
        (GOOD.replace("assume_flat = true", "assume_flat = true\nparent_tag = 50010000000"),
         "parent_tag: must be a FIX tag number 1..2147483647 (got 50010000000)"),
        (GOOD.replace('"OMS2"', '"OMS2"\nallowed_remote_addresses = ["10.1.2.3"]'),
         "clients[1].allowed_remote_addresses[0]: loopback_only = true allows only 127.0.0.1"),
        ("loopback_only = false\n"
         + GOOD.replace('"OMS2"', '"OMS2"\nallowed_remote_addresses = ["localhost"]'),
         "clients[1].allowed_remote_addresses[0]: must be an IPv4 address (got 'localhost')"),
    ],
)  # fmt: skip
def test_values_the_engine_or_the_listener_cannot_take_are_refused_at_load(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Before, these files loaded: a heartbeat or reconnect interval past QuickFIX's range
    failed at start with the engine's own ConfigError (a traceback, no file or key named);
    a parent tag no FIX message can carry left every child's parent unread, silently; an
    address the listener's filter cannot take (or loopback_only refuses) failed only once
    the node was starting, naming neither the file nor the entry."""
    p = tmp_path / "gw.toml"
    p.write_text(text)
    with pytest.raises(GatewayError) as err:
        GatewayConfig.from_toml(p)
    assert str(p) in str(err.value) and needle in str(err.value)
