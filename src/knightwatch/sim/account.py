"""Who owns each execution: the customer, up to the parent's quantity, or the firm.

A router works a customer's parent as agent: fills up to the parent quantity
are the customer's, at the price they were done. Everything beyond is an
overfill that lands in the firm's own account (Knight's "33 Account", SEC
order para. 23) and is what the firm later has to unwind. An execution that
overfills is a *runaway* execution; containment is when they stop.
"""

from __future__ import annotations


class Account:
    __slots__ = (
        "cash",
        "customer_cash",
        "customer_position",
        "first_runaway_ns",
        "last_runaway_ns",
        "position",
        "runaway_executions",
    )

    def __init__(self, n_symbols: int) -> None:
        self.position = [0] * n_symbols
        self.cash = 0.0
        self.customer_position = [0] * n_symbols
        self.customer_cash = 0.0
        self.runaway_executions = 0
        self.first_runaway_ns: int | None = None
        self.last_runaway_ns: int | None = None

    def book(
        self,
        symbol: int,
        is_buy: bool,
        parent_qty: int,
        filled_before: int,
        qty: int,
        notional: float,
        child_qty: int,
        first_ns: int,
        interval_ns: int = 0,
    ) -> tuple[int, int, int] | None:
        """Split one fill (of one child, or a batch of children `interval_ns` apart from
        `first_ns`) between the customer and the firm; a runaway execution is timed at the
        child that did it, not at the end of its batch. Returns (runaway executions, first,
        last instant) when any of it overfilled, for the node's own count."""
        customer = max(0, min(filled_before + qty, parent_qty) - max(filled_before, 0))
        customer = min(customer, qty)
        firm = qty - customer
        sign = 1 if is_buy else -1
        c_notional = notional * customer / qty
        self.customer_position[symbol] += sign * customer
        self.customer_cash -= sign * c_notional
        if firm:
            self.position[symbol] += sign * firm
            self.cash -= sign * (notional - c_notional)
            runaway = -(-firm // child_qty)
            first = first_ns + (customer // child_qty) * interval_ns
            last = first_ns + (qty // child_qty - 1) * interval_ns
            self.runaway_executions += runaway
            # batches are booked parent by parent within a step, not in time order
            if self.first_runaway_ns is None or first < self.first_runaway_ns:
                self.first_runaway_ns = first
            if self.last_runaway_ns is None or last > self.last_runaway_ns:
                self.last_runaway_ns = last
            return runaway, first, last
        return None
