"""`mcp-gateway serve`: the broker and the ext_proc router in one Trio process.

One nursery owns both services and the config watcher. Each service gets its own channel of
reloaded configs, so a reload reaches both without either knowing about the other.
(Owner of the broker part: broker; of the router part: router. Keep this file thin.)
"""

from __future__ import annotations

import os
import signal
from functools import partial
from typing import TYPE_CHECKING, Literal

import trio

from mcp_gateway.broker.reload import ReloadState
from mcp_gateway.broker.routed_calls import RoutedCalls
from mcp_gateway.config import ConfigError, GatewayConfig, SessionSettings, load_config
from mcp_gateway.logs import get_logger, register_secrets
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStore, open_store, session_keys
from mcp_gateway.upstream.relist import Relists

if TYPE_CHECKING:
    from mcp_gateway.sessions.openings_redis import RedisOpeningsBus

Role = Literal["all", "broker", "router"]
log = get_logger("mcp_gateway.serve")

CONFIG_POLL_SECONDS = 1.0


async def serve(
    config_path: str,
    role: Role,
    *,
    poll_seconds: float = CONFIG_POLL_SECONDS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = load_config(config_path)
    register_secrets(config.secrets())  # before anything can log an error that echoes one
    # Broker and router share one token key set and one store: the broker issues the session the
    # router later verifies and maps to backend sessions.
    keys = session_keys(config.gateway.sessions)  # once: without configured keys, a random one
    tokens = SessionTokens(keys)
    # The requestState clients hold between rounds of a 2026-07-28 call, sealed under the same
    # keys (sessions/request_state.py): the broker mints and opens it, and the router may too.
    request_state = RequestStateSeal(keys, ttl_seconds=config.gateway.sessions.request_state_ttl_seconds)
    store: SessionStore = open_store(config.gateway.sessions)
    reload_state = ReloadState(path=config_path)
    # New backend sessions the router opens are announced to the broker's listeners through
    # `openings` (sessions/openings.py): no polling and no lost first message; with a Redis
    # store, to the other replicas too (sessions/openings_redis.py).
    bus = _openings_bus(config.gateway.sessions)
    openings = BackendOpenings(bus)
    # How the router asks for an upstream's re-list (it saw a list_changed in a routed call's
    # answer): in process when this process runs the broker, else over the broker's internal
    # endpoint (upstream/relist.py; docs/broker.md, "Re-listing on request").
    relists = Relists(config.gateway.broker_listen)
    try:
        await _serve_with(
            config_path,
            config,
            role,
            tokens,
            store,
            reload_state,
            poll_seconds,
            openings,
            relists,
            bus,
            task_status,
            request_state,
        )
    finally:
        # Redis connections close after both services have stopped using them.
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            if bus is not None:
                await bus.aclose()
            await store.aclose()


def _openings_bus(settings: SessionSettings) -> RedisOpeningsBus | None:
    if settings.store != "redis" or not settings.redis_url:
        return None
    from mcp_gateway.sessions.openings_redis import RedisOpeningsBus

    return RedisOpeningsBus(settings.redis_url)


async def _serve_with(
    config_path: str,
    config: GatewayConfig,
    role: Role,
    tokens: SessionTokens,
    store: SessionStore,
    reload_state: ReloadState,
    poll_seconds: float,
    openings: BackendOpenings,
    relists: Relists,
    bus: RedisOpeningsBus | None,
    task_status: trio.TaskStatus[None],
    request_state: RequestStateSeal,
) -> None:
    async with trio.open_nursery() as nursery:
        if bus is not None:
            await nursery.start(bus.run, openings)
        reload_channels: list[trio.MemorySendChannel[GatewayConfig]] = []
        # What Envoy reports of routed calls reaches the router; the broker's /metrics shows it
        # (broker/routed_calls.py). Only where one process runs both.
        routed_calls = RoutedCalls()
        # The router first: the broker's /readyz is what says "ready", and a call routed before
        # the router listens would get Envoy's 503.
        if role in ("all", "router"):
            from mcp_gateway.router.service import serve_router

            send, receive = trio.open_memory_channel[GatewayConfig](1)
            reload_channels.append(send)
            await nursery.start(
                partial(
                    serve_router,
                    openings=openings,
                    routed_calls=routed_calls.record if role == "all" else None,
                    request_states=request_state,
                ),
                config,
                receive,
                tokens,
                store,
            )
        if role in ("all", "broker"):
            from mcp_gateway.broker.service import serve_broker

            send, receive = trio.open_memory_channel[GatewayConfig](1)
            reload_channels.append(send)
            await nursery.start(
                lambda task_status: serve_broker(
                    config,
                    receive,
                    tokens,
                    store,
                    reload_state=reload_state,
                    openings=openings,
                    relists=relists,
                    routed_calls=routed_calls,
                    request_state=request_state,
                    task_status=task_status,
                )
            )
        nursery.start_soon(
            watch_config, config_path, config, reload_channels, reload_state, poll_seconds
        )
        task_status.started()


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


async def watch_config(
    path: str,
    current: GatewayConfig,
    targets: list[trio.MemorySendChannel[GatewayConfig]],
    reload_state: ReloadState | None = None,
    poll_seconds: float = CONFIG_POLL_SECONDS,
) -> None:
    """Poll the config file; hand every valid new version to each service.

    Polling the mtime (not inotify) works the same for a plain file, an editor's atomic rename
    and a Kubernetes Secret volume's symlink swap. A file that does not load is logged and shown
    in /status; the running config stays.
    """
    state = reload_state or ReloadState(path=path)
    seen = _mtime(path)
    while True:
        await trio.sleep(poll_seconds)
        mtime = _mtime(path)
        if mtime == seen:
            continue
        seen = mtime
        try:
            new = await trio.to_thread.run_sync(load_config, path)
        except ConfigError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            state.refused(problems)
            log.warning("config refused; keeping the running one", path=path, problems=problems)
            continue
        except OSError as exc:
            state.refused(f"cannot read {path}: {exc.strerror or exc}")
            log.warning("config unreadable; keeping the running one", path=path, error=str(exc))
            continue
        if new == current:
            continue
        register_secrets(new.secrets())
        current = new
        for target in targets:
            await target.send(new)
        log.info("config change handed to services", path=path, servers=len(new.servers))


def run_serve(config_path: str, role: Role) -> int:
    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, config_path, role)
                async for _ in signals:
                    # Cancel everything now: each service's cleanup is shielded and bounded
                    # (DELETEs to upstreams within 2 s), so the process exits within 5 s.
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0
