"""The ledger's capacity split: what part of a child is the customer's.

The Guard's step 10 splits a new child inline for speed; the replace path, the drain check
(REDUCING) and the ledger's holds use `customer_part`. These tests pin the rule both follow.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from knightwatch.guard.ledger import CustomerAccount, Parent, customer_part


def _parent(qty: int, committed: int) -> Parent:
    p = Parent(qty, CustomerAccount("acct"), cap=qty * 2)
    p.committed = committed
    return p


def test_without_a_parent_nothing_is_the_customers() -> None:
    assert customer_part(None, 10) == 0


def test_a_child_within_the_parent_is_all_the_customers() -> None:
    assert customer_part(_parent(100, 30), 70) == 70


def test_the_part_beyond_the_uncommitted_quantity_is_the_firms() -> None:
    assert customer_part(_parent(100, 30), 90) == 70


def test_an_overcommitted_parent_gives_the_customer_nothing() -> None:
    assert customer_part(_parent(100, 120), 5) == 0


@given(
    qty=st.integers(min_value=1, max_value=10_000),
    committed=st.integers(min_value=0, max_value=20_000),
    more=st.integers(min_value=1, max_value=10_000),
)
def test_the_customers_part_never_exceeds_the_child_nor_what_the_parent_has_left(
    qty: int, committed: int, more: int
) -> None:
    cust = customer_part(_parent(qty, committed), more)
    assert 0 <= cust <= more
    assert cust <= max(qty - committed, 0)
    # and it takes all it can: the firm's part is only what the parent cannot hold
    assert cust == min(more, max(qty - committed, 0))
