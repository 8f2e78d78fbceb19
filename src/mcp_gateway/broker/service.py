"""`serve_broker`: the broker's lifetime — supervisor, catalog watcher, reloads and the HTTP app.

One nursery owns it all: the supervisor (and through it every upstream task), the task that
turns catalog changes into list_changed notifications, the task that applies reloaded configs,
and hypercorn serving the Quart app. Cancelling it stops everything, within hypercorn's
graceful timeout for open streams.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from mcp_gateway.broker import http, internal, status, websocket
from mcp_gateway.broker.core import BrokerCore
from mcp_gateway.broker.reaper import run_reaper
from mcp_gateway.broker.reload import ReloadState
from mcp_gateway.broker.routed_calls import RoutedCalls
from mcp_gateway.config import GatewayConfig
from mcp_gateway.logs import get_logger, hypercorn_error_log
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream import Supervisor, Timing
from mcp_gateway.upstream.relist import Relists

log = get_logger("mcp_gateway.broker")

GRACEFUL_SHUTDOWN_SECONDS = 1.0  # in-flight answers finish; SIGTERM → exit well within 5 s
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class BrokerPorts:
    """Where a started broker listens: the MCP endpoint (Envoy's upstream) and the admin one."""

    mcp: int
    admin: int


async def serve_broker(
    config: GatewayConfig,
    reloads: trio.MemoryReceiveChannel[GatewayConfig],
    tokens: SessionTokens,
    store: SessionStore,
    *,
    reload_state: ReloadState | None = None,
    timing: Timing | None = None,
    keepalive_seconds: float = 15.0,
    listen: str | None = None,
    admin_listen: str | None = None,
    openings: BackendOpenings | None = None,
    relists: Relists | None = None,
    routed_calls: RoutedCalls | None = None,
    request_state: RequestStateSeal | None = None,
    task_status: trio.TaskStatus[BrokerPorts] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the broker until cancelled; `task_status.started(BrokerPorts)` once both its
    listeners accept connections.

    Two HTTP servers: the MCP app (`/mcp`, `/mcp/ws`, the internal re-list endpoint) behind
    Envoy, and the admin app (`/status`, `/metrics`, `/healthz`, `/readyz`) on
    `gateway.admin_listen`, which Envoy has no route to (docs/broker.md, "Admin address").

    `openings`: shared with the router of this process (see `sessions/openings.py`).
    `relists`: bound to this broker's `BrokerCore.relist` while it runs, so the router of this
    process asks for re-lists in process (upstream/relist.py).
    `routed_calls`: fed by the router of this process with what Envoy reports of routed calls
    (router/call_log.py); shown on this broker's `/metrics`, its names bounded by this broker's
    upstream lists.
    `request_state`: seals the requestState 2026-07-28 clients hold between rounds (built by
    serve.py from the session keys; without it, a key of this process's own)."""
    reload_state = reload_state or ReloadState()
    supervisor = Supervisor(config, timing=timing or Timing())
    core: BrokerCore | None = None
    try:
        # The in-process re-list is served while the nursery runs, and no longer (ExitStack
        # outside the nursery: it unwinds after every task of the broker has ended).
        with ExitStack() as serving:
            async with trio.open_nursery() as nursery:
                # Built inside its nursery: everything it starts in the background lives there.
                core = BrokerCore(
                    config, supervisor, tokens, store, nursery=nursery, openings=openings, request_state=request_state
                )
                if routed_calls is not None:
                    core.metrics.registry.register(routed_calls)
                if relists is not None:
                    serving.enter_context(relists.served_by(core.relist))
                changes = supervisor.changes()  # before the first upstream can change anything
                if routed_calls is not None:
                    nursery.start_soon(routed_calls.follow, supervisor, supervisor.changes())
                await nursery.start(supervisor.run)
                app = build_app(core, nursery, keepalive_seconds=keepalive_seconds)
                nursery.start_soon(_announce_changes, core, changes)
                nursery.start_soon(_apply_reloads, core, reloads, reload_state)
                # Expired sessions end their backend sessions upstream too (docs/sessions.md).
                nursery.start_soon(run_reaper, core)
                urls = await nursery.start(_serve_http, app, listen or config.gateway.broker_listen)
                admin_urls = await nursery.start(
                    _serve_http, build_admin_app(core, reload_state), admin_listen or config.gateway.admin_listen
                )
                log.info(
                    "broker listening", url=f"{urls[0]}/mcp", admin=admin_urls[0], upstreams=len(config.servers)
                )
                task_status.started(BrokerPorts(mcp=_port_of(urls[0]), admin=_port_of(admin_urls[0])))
    finally:
        if core is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await core.forwarder.streams.aclose()


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def build_app(core: BrokerCore, nursery: trio.Nursery, *, keepalive_seconds: float) -> QuartTrio:
    """The MCP app, Envoy's upstream: nothing here is for operators."""
    app = QuartTrio("mcp_gateway.broker")
    app.config["RESPONSE_TIMEOUT"] = None  # SSE streams last as long as their client
    app.config["BODY_TIMEOUT"] = 30
    http.register(app, core, nursery, keepalive_seconds=keepalive_seconds)
    websocket.register(app, core)
    internal.register(app, core)
    return app


def build_admin_app(core: BrokerCore, reload_state: ReloadState) -> QuartTrio:
    """The operator's app: status, metrics, probes. Served on its own address only."""
    app = QuartTrio("mcp_gateway.admin")
    status.register(app, core, reload_state)
    return app


async def _serve_http(app: QuartTrio, bind: str, *, task_status: trio.TaskStatus[Any]) -> None:
    settings = hypercorn.config.Config()
    settings.bind = [bind]
    settings.accesslog = None
    settings.errorlog = hypercorn_error_log()  # its lines in our format (logs.py)
    settings.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    # Over the proxy's idle timeout for upstream connections (ours: 60 s; Envoy's default, as in
    # Istio and Envoy Gateway: 1 h), so the proxy closes an idle connection first and never sends
    # a request into one hypercorn is closing (a 503 UC; docs/troubleshooting.md).
    settings.keep_alive_timeout = 3660
    # Room for a burst of new connections while the event loop is busy. Envoy speaks HTTP/1.1 to
    # the broker, so every concurrent request and every open GET stream is a connection of its
    # own; with hypercorn's default (100) a burst overflowed the accept queue, the kernel dropped
    # the SYNs, and Envoy answered 503 (UF, connect timeout): 1307 of 5000 GET streams opened at
    # 300 a time (bench/bench_scale.py, docs/benchmarks-scale.md). The kernel caps it at somaxconn.
    settings.backlog = LISTEN_BACKLOG
    await hypercorn.trio.serve(app, settings, task_status=task_status)


async def _announce_changes(core: BrokerCore, changes: trio.MemoryReceiveChannel[int]) -> None:
    core.sync(announce=False)  # the starting point: no client has listed anything yet
    async for _version in changes:
        core.sync()


async def _apply_reloads(
    core: BrokerCore, reloads: trio.MemoryReceiveChannel[GatewayConfig], reload_state: ReloadState
) -> None:
    async for new_config in reloads:
        core.config = new_config
        await core.supervisor.apply(new_config)
        reload_state.accepted()
        core.metrics.config_reloads.inc()
        log.info("config reloaded", servers=len(new_config.servers))
