"""The gateway as a fleet node: the same node service as every other node, plus the FIX sessions.

`knightwatch gateway` runs `serve_node` (lease, admission and attestation,
kill state, flags, Prometheus metrics, the flight recorder shipped to the
fleet) with three things added for a process whose orders live at a venue:

* a `LockedGuard`, since QuickFIX calls it from its own threads;
* arming only after start-up reconciliation (working orders from the venue's
  mass status, positions from a file), so the Guard never trades blind;
* a kill drain: the Guard blocks the scope at once (the runtime applies the
  halt before anything else), then every working order in the scope is
  cancelled at the venue and the kill is confirmed to the control plane only
  when none is left working, or, at `kill_drain_timeout_s`, with the ids of
  those still working, which `knightwatch kill` prints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from knightwatch.control.node.attestor import Attestor
from knightwatch.control.node.lease import LeasePolicy
from knightwatch.control.node.runtime import NodeRuntime
from knightwatch.control.plane.wire import StateEntry
from knightwatch.control.serve import serve_node
from knightwatch.gateway.config import GatewayConfig
from knightwatch.gateway.engine import GatewayError
from knightwatch.gateway.gateway import Gateway
from knightwatch.gateway.metrics import GatewayCollector
from knightwatch.guard import LockedGuard
from knightwatch.release.signing import TrustPolicy
from knightwatch.trust.identity import Signer

log = logging.getLogger(__name__)

_POLL_S = 0.002
LOGON_S = 30.0
"""How long start-up waits for the venue session's first logon."""
_RETRY_S = 0.25


class GatewayHost:
    """What `serve_node` runs for a gateway: `prepare`, then `run`; `drain` on each kill."""

    def __init__(self, config: GatewayConfig, fix_dir: Path, *, log_messages: bool = True) -> None:
        self.config = config
        self.fix_dir = fix_dir
        self.log_messages = log_messages
        self.gateway: Gateway | None = None
        self._closed: Gateway | None = None
        """The gateway `close` stopped: its book still says what was working at the venue
        when its sessions closed, which a kill heard afterwards can no longer cancel."""
        self.drains: list[tuple[str, float, list[str]]] = []
        """(command id, seconds to drain, still working) for each kill drained."""
        self.collector = GatewayCollector(config.node, lambda: self.gateway)
        """The gateway's counters and session state for the node's metrics registry
        (`knightwatch.gateway.metrics`); exposes nothing while no gateway runs."""

    async def prepare(self, runtime: NodeRuntime, stop: asyncio.Event) -> None:
        """Start the sessions and wait until working orders and positions are reconciled."""
        guard = runtime.guard
        if not isinstance(guard, LockedGuard):
            raise GatewayError("the gateway node needs a LockedGuard (guard_class=LockedGuard)")
        gw = Gateway(
            self.config,
            guard,
            self.fix_dir,
            log_messages=self.log_messages,
            on_fill=runtime.on_fill,
        )
        self.gateway = gw
        runtime.drain = self.drain
        gw.start()
        print(f"gateway {self.config.node} listening on 127.0.0.1:{self.config.listen_port}")
        # the venue session has LOGON_S to log on, then reconciliation (the venue's mass
        # status) reconcile_timeout_s from that logon; before, one deadline covered both
        # and its message asked whether the venue was logging on even when it was
        deadline = time.monotonic() + LOGON_S
        logged_on = False
        while not gw.reconciled.is_set():
            if stop.is_set():
                return
            if gw.reconcile_error:
                raise GatewayError(f"reconciliation failed: {gw.reconcile_error}")
            now = time.monotonic()
            if not logged_on and gw.venue_logons:
                logged_on = True
                deadline = now + self.config.reconcile_timeout_s
            if now > deadline:
                raise GatewayError(f"reconciliation did not complete: {self._not_reconciled(gw)}")
            await asyncio.sleep(0.02)
        print(f"gateway {self.config.node} reconciled", flush=True)

    def _not_reconciled(self, gw: Gateway) -> str:
        """What start-up saw of the venue when reconciliation timed out."""
        venue = f"{self.config.venue.host}:{self.config.venue.port}"
        if not gw.venue_logons:
            return f"the venue session ({venue}) did not log on within {LOGON_S:g} s"
        state = "is logged on" if gw.venue_up else "logged on, then logged out"
        seen = f"the venue session ({venue}) {state}"
        if not gw.mass_status_sent:
            return f"{seen}, but the OrderMassStatusRequest was never sent"
        return (
            f"{seen}, but the mass status did not finish within reconcile_timeout_s="
            f"{self.config.reconcile_timeout_s:g} s of the logon: {gw.mass_status_reports} "
            f"report(s) answered the OrderMassStatusRequest {gw.mass_status_sent}, the last "
            "(LastRptRequested(912)=Y) never came"
        )

    async def run(self, runtime: NodeRuntime, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self.gateway is not None:
            gw, self.gateway = self.gateway, None
            self._closed = gw
            await asyncio.get_running_loop().run_in_executor(None, gw.stop)

    async def drain(self, entry: StateEntry) -> list[str]:
        """Cancel the scope's working orders at the venue; return those still working."""
        gw = self.gateway
        if gw is None:
            if self._closed is None:
                return []  # no gateway yet: nothing was sent to the venue
            # stopping or stopped: its sessions are closed, so nothing can be cancelled;
            # what its book held working is still working as far as anyone knows (before,
            # the kill was confirmed with nothing left working)
            left = self._closed.still_working(entry.scope, entry.key)
            self.drains.append((entry.command_id, 0.0, left))
            log.warning(
                "KILL_DRAIN command=%s scope=%s key=%s gateway_stopped still_working=%d",
                entry.command_id,
                entry.scope.value,
                entry.key,
                len(left),
            )
            return left
        t0 = time.monotonic()
        gw.cancel_scope(entry.scope, entry.key, entry.reason)
        deadline = t0 + self.config.kill_drain_timeout_s
        retry = t0 + _RETRY_S
        while left := gw.still_working(entry.scope, entry.key):
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= retry:
                gw.retry_cancels(entry.scope, entry.key)
                retry = now + _RETRY_S
            await asyncio.sleep(_POLL_S)
        took = time.monotonic() - t0
        self.drains.append((entry.command_id, took, left))
        log.warning(
            "KILL_DRAIN command=%s scope=%s key=%s cancelled_in=%.1fms still_working=%d",
            entry.command_id,
            entry.scope.value,
            entry.key,
            took * 1e3,
            len(left),
        )
        return left


async def serve_gateway(
    config: GatewayConfig,
    urls: list[str],
    state_dir: Path,
    *,
    signer: Signer,
    anchor: TrustPolicy,
    limits_path: Path | None,
    policy: LeasePolicy,
    recorder_path: Path | None = None,
    metrics_port: int | None = None,
    attestor: Attestor | None = None,
    log_messages: bool = True,
) -> None:
    """Run the gateway node until SIGTERM/SIGINT (what `knightwatch gateway` does).

    `signer` is the gateway node's enrolled key (its NATS login and signatures) and
    `anchor` pins the roster's first admins, as for `knightwatch node`."""
    host = GatewayHost(config, state_dir / "fix" / config.node, log_messages=log_messages)
    try:
        await serve_node(
            config.node,
            urls,
            state_dir,
            signer=signer,
            anchor=anchor,
            limits_path=limits_path,
            policy=policy,
            trader=host.run,
            recorder_path=recorder_path,
            metrics_port=metrics_port,
            attestor=attestor,
            guard_class=LockedGuard,
            prepare=host.prepare,
            collectors=(host.collector,),
        )
    finally:
        await host.close()
