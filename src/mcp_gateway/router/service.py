"""`serve_router`: the Envoy ext_proc service's lifetime, thin grpclib glue around
router/decision.py (the exchange per stream: router/exchange.py; the gRPC surface:
router/grpc_server.py; the messages: router/ext_proc_messages.py).

grpclib is asyncio-only; it runs on the asyncio loop that trio-asyncio opens inside the gateway's
Trio run, so it lives and dies with the router's nursery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio
import trio_asyncio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.router.accesslog import (
    AccessLogReceiver,
    MarkedCall,
)
from mcp_gateway.router.backends import (
    BackendSessions,
)
from mcp_gateway.router.call_log import RoutedCallLog
from mcp_gateway.router.decision import (
    Cancels,
)
from mcp_gateway.router.exchange import Router
from mcp_gateway.router.grpc_server import CoalescingServer, ExternalProcessor, bound_port
from mcp_gateway.router.xds import XdsWriter
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStore, SessionStoreUnavailable
from mcp_gateway.sessions.tokens import SessionClaims, SessionTokens
from mcp_gateway.spawn import BoundedTasks

_log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# The service


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _xds_writer(config: GatewayConfig) -> XdsWriter | None:
    envoy = config.gateway.envoy
    if not envoy.xds_dir:
        return None
    admin = f"http://127.0.0.1:{envoy.admin_port}" if envoy.admin_port else None
    return XdsWriter(envoy.xds_dir, admin)


async def serve_router(
    config: GatewayConfig,
    reloads: trio.MemoryReceiveChannel[GatewayConfig],
    tokens: SessionTokens,
    store: SessionStore,
    *,
    openings: BackendOpenings | None = None,
    routed_calls: Callable[[list[str]], None] | None = None,
    request_states: RequestStateSeal | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ext_proc on `gateway.router_listen` until cancelled; follow config reloads.

    `openings`: shared with the broker of this process (see `sessions/openings.py`).
    `routed_calls`: gets every batch of routed calls Envoy reports, a line each
    (router/call_log.py); without it the batches are acknowledged and dropped.
    `request_states`: seals an upstream's requestState for a modern client; the broker opens it
    on the retry, so serve.py hands both the same one (without it: one from the session keys)."""
    xds = _xds_writer(config)
    if xds is not None:
        await xds.apply(config)
    async with trio.open_nursery() as nursery:
        backends = BackendSessions(
            store, nursery, lambda: router.snapshot.servers, openings=openings
        )
        router = Router(config, tokens, backends, request_states)
        nursery.start_soon(_follow_reloads, reloads, router, xds)
        try:
            async with trio_asyncio.open_loop():
                host, port = _host_port(config.gateway.router_listen)
                receiver = AccessLogReceiver(router.marks, _canceller(router, nursery))
                call_log = RoutedCallLog(routed_calls or _drop)
                server = CoalescingServer([ExternalProcessor(router), receiver, call_log])
                await trio_asyncio.aio_as_trio(server.start)(host, port)
                bound = bound_port(server)
                _log.info("router listening", address=f"{host}:{bound}")
                task_status.started(bound)
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        server.close()
                        with trio.move_on_after(2):
                            await trio_asyncio.aio_as_trio(server.wait_closed)()
        finally:
            with trio.CancelScope(shield=True):
                await backends.aclose()
            nursery.cancel_scope.cancel()


# Cancellations of abandoned calls in flight at once (each one POST to an upstream, bounded by
# its timeout); past it, an abandoned call is left to finish upstream, and that is logged.
MAX_CANCELLATIONS = 256


def _drop(lines: list[str]) -> None:
    pass


def _canceller(router: Router, nursery: trio.Nursery) -> Callable[[MarkedCall], Awaitable[None]]:
    """What the access-log receiver (asyncio) calls per abandoned call: start its cancellation
    in the router's nursery, bounded, and return at once."""
    cancelling = BoundedTasks(nursery, MAX_CANCELLATIONS)

    async def start(call: MarkedCall) -> None:
        if not cancelling.start_soon(cancel_marked_call, router, call):
            refused = cancelling.refused
            if refused & (refused - 1) == 0:  # the 1st, 2nd, 4th...: not a flood
                _log.warning("too many cancellations in flight; abandoned calls left to finish",
                             limit=MAX_CANCELLATIONS, refused=refused)

    async def on_abandoned(call: MarkedCall) -> None:
        router.in_flight.finished(call.session_id, call.request_id)
        await trio_asyncio.trio_as_aio(start)(call)

    return on_abandoned


async def cancel_marked_call(router: Router, call: MarkedCall) -> None:
    """`notifications/cancelled` for the call on its backend session (bounded by
    `cancel_abandoned`); nothing when the upstream or the session has gone meanwhile."""
    upstream = router.snapshot.table.server(call.server)
    if upstream is None or upstream.via_broker:
        return
    claims = SessionClaims(call.session_id, call.protocol_version, issued_at=0)
    # The same value a client's own cancellation of the call is routed as.
    cancellation = Cancels(call.request_id, claims, gateway_session="", body=b"")
    need = cancellation.follow_up(upstream)
    backends = router.backends
    try:
        backend_id = backends.known_backend(need) or await backends.lookup(need)
    except SessionStoreUnavailable:
        _log.warning("session store unavailable", server=call.server)
        return
    if backend_id is not None:
        await backends.cancel_abandoned(need, backend_id)


async def _follow_reloads(
    reloads: trio.MemoryReceiveChannel[GatewayConfig], router: Router, xds: XdsWriter | None
) -> None:
    async for new_config in reloads:
        wanted = _xds_writer(new_config)
        if wanted is None:
            xds = None
        elif xds is None or (xds.xds_dir, xds.admin_url) != (wanted.xds_dir, wanted.admin_url):
            xds = wanted  # adopts the files already there, so this update is ordered too
        # Envoy first when servers were added (their clusters and routes must exist before we
        # route to them); the table first when servers were removed (stop routing, then drop).
        old_servers = set(router.snapshot.servers)
        new_servers = {s.name for s in new_config.enabled_servers() if s.transport == "http"}
        if xds is not None and not new_servers <= old_servers:
            await xds.apply(new_config)
            router.reload(new_config)
        else:
            router.reload(new_config)
            if xds is not None:
                await xds.apply(new_config)
        _log.info("router config reloaded", servers=sorted(new_servers))
