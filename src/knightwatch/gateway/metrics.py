"""The gateway's own counters and session state as Prometheus metrics, beside the node's.

The node's exposition (`knightwatch.control.exposition`) shows what the Guard
counts; what only the gateway knows (orders forwarded, reports relayed,
resends answered, venue reports it could not apply, drop copies held, which
sessions are up) was kept in `Gateway.counts` and shown nowhere. A
`GatewayCollector` reads them at each scrape, on the scraping thread, under
the gateway's one lock (the counts are written under it from the engine's
threads): a copy of a few numbers, never a walk of the book. A lock held past
the scrape timeout fails the scrape (HTTP 500) instead of reporting stale
numbers, as the node's collector does for a starved loop.

Labels are bounded: `event` takes only the names the gateway counts (every
one always present, 0 until it happens), `session` only the client CompIDs
of the configuration; never a ClOrdID or a message's text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from knightwatch.control.exposition import SNAPSHOT_TIMEOUT_S, ExpositionError
from knightwatch.gateway.gateway import Gateway

GATEWAY_EVENTS = (
    "forwarded",
    "refused",
    "resends",
    "cancels",
    "replaces",
    "relayed",
    "unsupported",
    "session_rejects",
    "venue_session_rejects",
    "unknown_reports",
    "foreign_reports",
    "duplicate_exec_ids",
    "unapplied_reports",
    "replayed_reports",
    "mass_status_superseded",
    "drop_copy_reports",
    "drop_copy_held",
    "drop_copy_unresolved",
    "prices_refused",
    "callback_errors",
)
"""What `Gateway.counts` counts, by the names it uses: each is always exposed."""


class GatewaySnapshot(msgspec.Struct, frozen=True):
    """One reading of a gateway, taken under its lock."""

    counts: dict[str, int]
    venue_up: bool
    clients_up: dict[str, bool]
    reconciled: bool
    working: int
    dc_held: int


def gateway_snapshot(gw: Gateway, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> GatewaySnapshot:
    """Copy the gateway's counters and state under its lock (any thread)."""
    if not gw.lock.acquire(timeout=timeout_s):
        raise ExpositionError(
            f"scrape: the gateway's lock was not free within {timeout_s:g} s (held by the flow)"
        )
    try:
        counts = dict(gw.counts)
        # every error the engine's callbacks, the worker or a send caught (`Handler.errors`):
        # before, only those answered by `on_error` were counted, so a send that raised or
        # a worker job that failed showed 0 here
        counts["callback_errors"] = gw.errors.count
        return GatewaySnapshot(
            counts=counts,
            venue_up=gw.venue_up,
            clients_up={c.comp_id: c.comp_id in gw.clients_up for c in gw.cfg.clients},
            reconciled=gw.reconciled.is_set(),
            working=len(gw.book.working),
            dc_held=gw.drop_copies_held,
        )
    finally:
        gw.lock.release()


def gateway_families(node: str, snap: GatewaySnapshot) -> list[Metric]:
    """The metric families of one gateway snapshot; names are a public contract."""
    events = CounterMetricFamily(
        "knightwatch_gateway_events",
        "What the FIX gateway handled, by event (every event always present).",
        labels=["node", "event"],
    )
    for event in sorted(set(GATEWAY_EVENTS) | snap.counts.keys()):
        events.add_metric([node, event], snap.counts.get(event, 0))
    clients = GaugeMetricFamily(
        "knightwatch_gateway_client_session_up",
        "1 while the configured client session is logged on.",
        labels=["node", "session"],
    )
    for comp, up in sorted(snap.clients_up.items()):
        clients.add_metric([node, comp], float(up))

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["node"])
        family.add_metric([node], value)
        return family

    return [
        events,
        gauge(
            "knightwatch_gateway_venue_session_up",
            "1 while the venue order session is logged on.",
            float(snap.venue_up),
        ),
        clients,
        gauge(
            "knightwatch_gateway_reconciled",
            "1 once start-up reconciliation (working orders, positions) has finished.",
            float(snap.reconciled),
        ),
        gauge(
            "knightwatch_gateway_working_orders",
            "Orders the gateway holds as working at the venue.",
            snap.working,
        ),
        gauge(
            "knightwatch_gateway_drop_copies_held",
            "Drop-copy reports held until the gateway can tell its own from another's.",
            snap.dc_held,
        ),
    ]


class GatewayCollector(Collector):
    """A prometheus_client collector over the gateway `source` returns (None: not
    running yet, or stopped: nothing is exposed), for the node's metrics registry."""

    def __init__(self, node: str, source: Callable[[], Gateway | None]) -> None:
        self.node = node
        self.source = source

    def collect(self) -> Iterable[Metric]:
        gw = self.source()
        if gw is None:
            return []
        return gateway_families(self.node, gateway_snapshot(gw))
