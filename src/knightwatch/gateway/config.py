"""What the gateway is told: its sessions, the venue, and the policies a FIX proxy needs.

One TOML file, validated in full before anything connects, because a typo in
a session table is the kind of quiet mistake that lets flow around the Guard:
unknown keys, wrong types and impossible combinations are errors naming the
file, the key and the rule.

The QuickFIX settings are generated from it (never hand-written), with the
choices that make the gateway safe fixed here: persistent stores on both
sides, data-dictionary validation, `AllowedRemoteAddresses` per client
session (loopback by default), and the same BeginString on a client session
as on the venue session, since a transparent proxy forwards the client's
message unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import msgspec

from knightwatch.gateway.engine import GatewayError, spec_path
from knightwatch.inputs import NAME_RULE, InputFileError, is_name, load_toml
from knightwatch.order import MAX_ID_LEN

BeginString = Literal["FIX.4.2", "FIX.4.4"]
_COMP_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A CompID: what QuickFIX's settings and session ids can carry unambiguously (a newline
would start a setting of its own in the generated file, ':' splits a session id)."""
_HOST = re.compile(r"[A-Za-z0-9.:-]{1,253}")
"""A host name or IPv4/IPv6 address, as written into the generated settings."""
_SYMBOL = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ID_SOURCE = re.compile(r"[A-Za-z0-9]{1,4}")
MAX_HEARTBEAT_S = 300
"""The longest FIX heartbeat: a lost client session is found within about two of them."""
MAX_RECONNECT_S = 3600
MAX_TAG = 2**31 - 1
"""The largest tag number a FIX engine reads (a signed 32-bit int)."""


def _strategy_problem(name: str) -> str | None:
    """Why a client's `strategy` is one no Guard order or limits override can carry, or None.

    The limits refuse such a name for `[strategy.X]` (padded, a control character, a '/',
    longer than an order's field), so a session counting against it got none of the desk's
    strategy limits and a `kill --strategy` of the desk's name missed its orders; a '/' or
    a name too long made every order fail at the Guard instead of at load."""
    if not name.strip():
        return "must not be blank (leave it out to count against the comp_id)"
    if name != name.strip():
        return "must not start or end with whitespace"
    if not name.isprintable():
        return "must not contain control characters"
    if len(name) > MAX_ID_LEN:
        return f"must be at most {MAX_ID_LEN} characters (no order's strategy is longer)"
    if "/" in name:
        return "must not contain '/' (no order's strategy can)"
    return None


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


class ClientSession(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One OMS/EMS session accepted by the gateway.

    `comp_id` is the client's SenderCompID (the gateway's TargetCompID); only
    listed CompIDs can log on. `strategy` is the Guard strategy its orders
    count against (default: the CompID). With `cancel_on_disconnect` the
    gateway cancels the session's working orders at the venue when the
    session is lost; an order with ExecInst containing `Q` (FIX 4.4: cancel on
    system failure) or `o` (FIX 5.0: cancel on connection loss) is cancelled on
    disconnect whatever the session policy.
    """

    comp_id: str
    strategy: str = ""
    cancel_on_disconnect: bool = True
    allowed_remote_addresses: tuple[str, ...] = ("127.0.0.1",)

    @property
    def strategy_name(self) -> str:
        return self.strategy or self.comp_id


class VenueSession(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The session out to the venue; `mass_cancel` and `mass_status` say what it supports."""

    port: int
    host: str = "127.0.0.1"
    comp_id: str = "VENUE"
    mass_cancel: bool = True
    mass_status: bool = True
    market_data: tuple[str, ...] = ()
    """Symbols to subscribe to for reference prices (MarketDataRequest); empty: none. Each
    snapshot's mid is filed under the identifier orders are checked by (`instrument`): with
    `security_id`, the SecurityID(48) the snapshot names (one naming none is refused)."""
    reconnect_s: int = 1


class DropCopySession(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A read-only session from the venue carrying every execution, also those not routed here."""

    port: int
    host: str = "127.0.0.1"
    comp_id: str = "VENUE"
    sender_comp_id: str = "KWGW-DC"


class GatewayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole gateway: identity, listener, venue, client sessions and policies."""

    listen_port: int
    venue: VenueSession
    clients: tuple[ClientSession, ...]
    node: str = "gateway"
    comp_id: str = "KWGW"
    """The gateway's own CompID, towards the clients and towards the venue."""
    begin_string: BeginString = "FIX.4.4"
    heartbeat_s: int = 30
    store: Literal["file", "memory"] = "file"
    parent_tag: int = 5001
    """Tag carrying a child order's parent id (user-defined range by default)."""
    parent_qty_tag: int = 5002
    """Tag carrying the parent's total quantity; the first child seen registers the parent."""
    instrument: Literal["symbol", "security_id"] = "symbol"
    """Which FIX identifier names the instrument to the Guard: Symbol(55) or SecurityID(48)."""
    security_id_source: str | None = None
    """With `instrument = "security_id"` (required then, unset otherwise): the
    SecurityIDSource(22) every SecurityID is read under ("4" ISIN, "8" exchange symbol,
    ...). The Guard keys an instrument by the SecurityID string alone, so one string under
    two sources would share one price, position and limits: an order or replace naming
    another source or none is refused, a market data snapshot under another is no price."""
    currency: str | None = None
    """The ISO 4217 code the Guard's prices and limits are in (reference prices, collars,
    notional). An order's Currency(15) must equal it; unset, an order naming a Currency(15)
    is refused (the gateway cannot tell the venue reads Price(44) as the Guard does)."""
    kill_drain_timeout_s: float = 1.5
    """How long a kill waits for the venue to confirm every cancel before reporting."""
    reconcile_timeout_s: float = 30.0
    """How long start-up waits, from the venue session's logon, for reconciliation (the
    venue's mass status) before it fails naming what it saw; the logon itself has 30 s."""
    positions_file: str | None = None
    """TOML `[positions] SYMBOL = qty` (or `{qty = .., avg_price = ..}`) loaded before arming."""
    assume_flat: bool = False
    """Whatever is not reconciled (positions without `positions_file`, working orders
    without the venue's mass status) is taken to be nothing: an explicit statement
    that nothing is open, never a default."""
    loopback_only: bool = True
    """Drop connections to the listener from anything but 127.0.0.1 (see containment)."""
    drop_copy: DropCopySession | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not is_name(self.node):
            # the fleet node id (`knightwatch node --id` holds it to the same rule): it names
            # the node's recorder and FIX store directories under the state directory, so
            # "../x" wrote them outside it, and "./gw1" shared gw1's sequence numbers
            problems.append(f"node: must be {NAME_RULE} (got {self.node!r})")
        ports = [("listen_port", self.listen_port), ("venue.port", self.venue.port)]
        if self.drop_copy is not None:
            ports.append(("drop_copy.port", self.drop_copy.port))
        for name, port in ports:
            if not 0 < port < 65536:
                problems.append(f"{name}: must be a TCP port 1..65535 (got {port})")
        if not 1 <= self.venue.reconnect_s <= MAX_RECONNECT_S:
            # 0 would retry the venue in a tight loop while it is down; past the engine's
            # range QuickFIX failed at start with its own ConfigError (a traceback)
            problems.append(
                f"venue.reconnect_s: must be in 1..{MAX_RECONNECT_S} (got {self.venue.reconnect_s})"
            )
        if not self.clients:
            problems.append("clients: at least one client session is required")
        ids = [c.comp_id for c in self.clients]
        names: list[tuple[str, str, re.Pattern[str]]] = []
        for cid in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"clients: comp_id {cid!r} is listed more than once")
        for i, c in enumerate(self.clients):
            if c.strategy and (why := _strategy_problem(c.strategy)) is not None:
                problems.append(f"clients[{i}].strategy: {why} (got {c.strategy!r})")
            if not c.allowed_remote_addresses:
                problems.append(f"clients[{i}].allowed_remote_addresses: must list at least one")
            for j, address in enumerate(c.allowed_remote_addresses):
                where = f"clients[{i}].allowed_remote_addresses[{j}]"
                names.append((where, address, _HOST))
                if self.loopback_only and address != "127.0.0.1":
                    # before, the file loaded and the gateway failed later, at start,
                    # naming neither the file nor the entry
                    problems.append(
                        f"{where}: loopback_only = true allows only 127.0.0.1 (got "
                        f"{address!r}); set loopback_only = false to accept other hosts"
                    )
                elif not _ipv4(address):
                    # the listener's source filter (containment) takes IPv4 addresses only
                    problems.append(f"{where}: must be an IPv4 address (got {address!r})")
            names.append((f"clients[{i}].comp_id", c.comp_id, _COMP_ID))
        venue = self.venue
        names += [
            ("comp_id", self.comp_id, _COMP_ID),
            ("venue.comp_id", venue.comp_id, _COMP_ID),
            ("venue.host", venue.host, _HOST),
            *((f"venue.market_data[{j}]", sym, _SYMBOL) for j, sym in enumerate(venue.market_data)),
        ]
        if (dc := self.drop_copy) is not None:
            if (dc.sender_comp_id, dc.comp_id) == (self.comp_id, venue.comp_id):
                problems.append(
                    "drop_copy: sender_comp_id and comp_id name the venue session "
                    f"({self.comp_id} -> {venue.comp_id}); the drop copy needs a session of its own"
                )
            elif f"{dc.sender_comp_id}-{dc.comp_id}" == f"{self.comp_id}-{venue.comp_id}":
                # QuickFIX names a session's store and log files BeginString-Sender-Target:
                # KWGW -> DC-VENUE and KWGW-DC -> VENUE wrote one set of files, each
                # session's sequence numbers over the other's
                problems.append(
                    f"drop_copy: sender_comp_id-comp_id ({dc.sender_comp_id}-{dc.comp_id}) "
                    f"spells the venue session's comp_id-venue.comp_id ({self.comp_id}-"
                    f"{venue.comp_id}); both would share one FIX store (sequence numbers)"
                )
            if dc.sender_comp_id == self.comp_id:
                # the same session id on the acceptor and the initiator: QuickFIX took
                # both, and the client's messages were read as drop-copy reports (its
                # orders never answered), its answers sent on whichever held the id
                problems += [
                    f"clients[{i}].comp_id: {c.comp_id!r} is the drop copy's session "
                    f"({dc.sender_comp_id} -> {dc.comp_id}); give the drop copy a "
                    "sender_comp_id of its own"
                    for i, c in enumerate(self.clients)
                    if c.comp_id == dc.comp_id
                ]
            names += [
                ("drop_copy.comp_id", dc.comp_id, _COMP_ID),
                ("drop_copy.sender_comp_id", dc.sender_comp_id, _COMP_ID),
                ("drop_copy.host", dc.host, _HOST),
            ]
        for where, value, rule in names:
            if not rule.fullmatch(value):
                problems.append(f"{where}: {_RULES[rule]} (got {value!r})")
        if self.comp_id in ids or self.venue.comp_id in ids:
            problems.append("clients: a client comp_id may not equal the gateway's or the venue's")
        if self.parent_tag == self.parent_qty_tag:
            problems.append("parent_qty_tag: must differ from parent_tag")
        for name, tag in (("parent_tag", self.parent_tag), ("parent_qty_tag", self.parent_qty_tag)):
            if not 1 <= tag <= MAX_TAG:
                # a tag no FIX message can carry: every child's parent silently unread
                problems.append(f"{name}: must be a FIX tag number 1..{MAX_TAG} (got {tag})")
        if self.currency is not None and not _CURRENCY.fullmatch(self.currency):
            problems.append(
                f"currency: must be an ISO 4217 code, three letters A-Z (got {self.currency!r})"
            )
        source = self.security_id_source
        if self.instrument == "security_id" and source is None:
            problems.append(
                'security_id_source: required with instrument = "security_id" (the '
                'SecurityIDSource(22) every SecurityID is read under, e.g. "4" ISIN)'
            )
        elif self.instrument == "symbol" and source is not None:
            problems.append(
                'security_id_source: only with instrument = "security_id" (a SecurityID(48) '
                'is refused with instrument = "symbol")'
            )
        elif source is not None and not _ID_SOURCE.fullmatch(source):
            problems.append(
                f"security_id_source: must be a SecurityIDSource(22) code, 1-4 letters or "
                f"digits (got {source!r})"
            )
        if not 0 < self.kill_drain_timeout_s <= 60:
            problems.append("kill_drain_timeout_s: must be in (0, 60]")
        if not 0 < self.reconcile_timeout_s <= 300:
            problems.append("reconcile_timeout_s: must be in (0, 300]")
        if not 1 <= self.heartbeat_s <= MAX_HEARTBEAT_S:
            # a client that died is noticed only after about two heartbeats: its orders'
            # cancel-on-disconnect waits that long (and past the engine's range QuickFIX
            # failed at start with its own ConfigError, a traceback)
            problems.append(
                f"heartbeat_s: must be in 1..{MAX_HEARTBEAT_S} (got {self.heartbeat_s})"
            )
        if self.begin_string == "FIX.4.2" and (self.venue.mass_cancel or self.venue.mass_status):
            problems.append(
                "venue: FIX.4.2 has no OrderMassCancelRequest or OrderMassStatusRequest; "
                "set mass_cancel = false and mass_status = false"
            )
        if not self.assume_flat and self.positions_file is None:
            problems.append(
                "positions_file: the gateway does not arm on unknown positions; give a "
                "positions file, or set assume_flat = true if nothing is open"
            )
        if not self.assume_flat and not self.venue.mass_status:
            problems.append(
                "venue.mass_status: without it working orders cannot be reconciled at "
                "start-up; set assume_flat = true if no order can be working"
            )
        if problems:
            raise GatewayError("invalid gateway config:\n  " + "\n  ".join(problems))

    def client(self, comp_id: str) -> ClientSession | None:
        for c in self.clients:
            if c.comp_id == comp_id:
                return c
        return None

    @classmethod
    def from_toml(cls, path: str | Path) -> GatewayConfig:
        p = Path(path)
        try:
            data = load_toml(p, "gateway config")
        except InputFileError as exc:
            raise GatewayError(str(exc)) from None
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise GatewayError(f"{p}: {exc}") from None
        except GatewayError as exc:
            raise GatewayError(f"{p}: {exc}") from None


_RULES = {
    _COMP_ID: "must be 1-64 characters of A-Z a-z 0-9 . _ -",
    _HOST: "must be a host name or IP address (A-Z a-z 0-9 . : -)",
    _SYMBOL: "must be 1-64 characters without control characters",
}


def _lines(section: dict[str, str | int]) -> list[str]:
    return [f"{k}={v}" for k, v in section.items()]


def _defaults(
    state_dir: Path, cfg_store: str, heartbeat_s: int, begin: str
) -> dict[str, str | int]:
    d: dict[str, str | int] = {
        "StartTime": "00:00:00",
        "EndTime": "00:00:00",
        "NonStopSession": "Y",
        "HeartBtInt": heartbeat_s,
        "UseDataDictionary": "Y",
        "DataDictionary": str(spec_path(begin)),
        "ValidateUserDefinedFields": "N",
        "ValidateFieldsHaveValues": "Y",
        "SocketNodelay": "Y",
        "CheckLatency": "N",
        "FileLogPath": str(state_dir / "log"),
    }
    if cfg_store == "file":
        d["FileStorePath"] = str(state_dir / "store")
    return d


def acceptor_settings(
    state_dir: Path,
    *,
    comp_id: str,
    port: int,
    clients: list[tuple[str, tuple[str, ...]]],
    begin_string: str,
    heartbeat_s: int = 30,
    store: str = "file",
) -> str:
    """QuickFIX settings text for an acceptor serving `clients` (comp id, allowed addresses)."""
    lines = ["[DEFAULT]", *_lines(_defaults(state_dir, store, heartbeat_s, begin_string))]
    lines += ["ConnectionType=acceptor", f"SocketAcceptPort={port}"]
    for target, allowed in clients:
        lines += [
            "",
            "[SESSION]",
            f"BeginString={begin_string}",
            f"SenderCompID={comp_id}",
            f"TargetCompID={target}",
        ]
        if allowed:
            lines.append(f"AllowedRemoteAddresses={','.join(allowed)}")
    return "\n".join(lines) + "\n"


def initiator_settings(
    state_dir: Path,
    *,
    sessions: list[tuple[str, str, str, int]],
    begin_string: str,
    heartbeat_s: int = 30,
    store: str = "file",
    reconnect_s: int = 1,
) -> str:
    """QuickFIX settings text for initiator sessions (sender, target, host, port)."""
    lines = ["[DEFAULT]", *_lines(_defaults(state_dir, store, heartbeat_s, begin_string))]
    lines += ["ConnectionType=initiator", f"ReconnectInterval={reconnect_s}"]
    for sender, target, host, port in sessions:
        lines += [
            "",
            "[SESSION]",
            f"BeginString={begin_string}",
            f"SenderCompID={sender}",
            f"TargetCompID={target}",
            f"SocketConnectHost={host}",
            f"SocketConnectPort={port}",
        ]
    return "\n".join(lines) + "\n"
