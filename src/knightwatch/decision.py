"""The Guard's verdict: accepted or not, a stable reason code, and the numbers."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class RejectReason(StrEnum):
    """Stable, machine-readable reason codes (`CATEGORY_CONDITION` style).

    Values are part of the public contract: dashboards, alerts and the flight
    recorder key on them, so they are never renamed, only added.
    """

    OK = "ok"
    NOT_ARMED = "not_armed"
    LEASE_EXPIRED = "lease_expired"
    HALTED = "halted"
    REDUCING_ONLY = "reducing_only"
    INVALID_ORDER = "invalid_order"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    SYMBOL_NOT_ALLOWED = "symbol_not_allowed"
    SYMBOL_RESTRICTED = "symbol_restricted"
    NO_REFERENCE_PRICE = "no_reference_price"
    STALE_REFERENCE_PRICE = "stale_reference_price"
    MAX_ORDER_QTY = "max_order_qty"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    PRICE_COLLAR = "price_collar"
    RATE_NODE = "rate_node"
    RATE_STRATEGY = "rate_strategy"
    RATE_SYMBOL = "rate_symbol"
    UNKNOWN_PARENT = "unknown_parent"
    PARENT_QTY_EXCEEDED = "parent_qty_exceeded"
    PARENT_SIDE_MISMATCH = "parent_side_mismatch"
    MAX_CHILD_ORDERS = "max_child_orders"
    MAX_POSITION = "max_position"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_NET_EXPOSURE = "max_net_exposure"
    CUSTOMER_GROSS_EXPOSURE = "customer_gross_exposure"
    CUSTOMER_NET_EXPOSURE = "customer_net_exposure"
    MAX_TURNOVER = "max_turnover"
    EXECUTION_THROTTLE = "execution_throttle"
    FILL_MISMATCH = "fill_mismatch"
    ORDER_ID_CAPACITY = "order_id_capacity"
    CANCEL_FILL_RATIO = "cancel_fill_ratio"
    UNKNOWN_CANCELS = "unknown_cancels"
    LOSS_LIMIT = "loss_limit"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    # decided around the Guard (the FIX gateway; an adapter: no venue to send to), not by
    # a Guard rule
    VENUE_UNAVAILABLE = "venue_unavailable"
    UNSUPPORTED_MESSAGE = "unsupported_message"
    GATEWAY_ERROR = "gateway_error"


GATEWAY_REASONS = frozenset(
    {
        RejectReason.VENUE_UNAVAILABLE,
        RejectReason.UNSUPPORTED_MESSAGE,
        RejectReason.GATEWAY_ERROR,
    }
)
"""Codes the FIX gateway (and, for `VENUE_UNAVAILABLE`, an adapter with no execution
client for the venue) decides around the Guard: no Guard rule produces them."""


class Decision(msgspec.Struct, frozen=True):
    accepted: bool
    reason: RejectReason
    detail: str = ""

    def __bool__(self) -> bool:
        return self.accepted


ACCEPTED = Decision(True, RejectReason.OK, "all checks passed")
