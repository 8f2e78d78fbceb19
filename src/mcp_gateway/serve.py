"""`mcp-gateway serve`: the broker and the ext_proc router in one Trio process.

One nursery owns both services and the config watcher. Each service gets its own channel of
reloaded configs, so a reload reaches both without either knowing about the other.
(Owner of the broker part: broker; of the router part: router. Keep this file thin.)
"""

from __future__ import annotations

import signal
from typing import Literal

import trio

from mcp_gateway.config import GatewayConfig, load_config
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.store import SessionStore, open_store, session_keys

Role = Literal["all", "broker", "router"]


async def serve(config_path: str, role: Role, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    config = load_config(config_path)
    # Broker and router share one token key set and one store: the broker issues the session the
    # router later verifies and maps to backend sessions.
    tokens = SessionTokens(session_keys(config.gateway.sessions))
    store: SessionStore = open_store(config.gateway.sessions)
    async with trio.open_nursery() as nursery:
        reload_channels: list[trio.MemorySendChannel[GatewayConfig]] = []
        if role in ("all", "broker"):
            from mcp_gateway.broker.service import serve_broker

            send, receive = trio.open_memory_channel[GatewayConfig](1)
            reload_channels.append(send)
            await nursery.start(serve_broker, config, receive, tokens, store)
        if role in ("all", "router"):
            from mcp_gateway.router.service import serve_router

            send, receive = trio.open_memory_channel[GatewayConfig](1)
            reload_channels.append(send)
            await nursery.start(serve_router, config, receive, tokens, store)
        nursery.start_soon(_watch_config, config_path, config, reload_channels)
        task_status.started()


async def _watch_config(
    path: str, current: GatewayConfig, targets: list[trio.MemorySendChannel[GatewayConfig]]
) -> None:
    """Poll the config file; hand every valid new version to each service. (TODO: broker owner.)"""
    raise NotImplementedError


def run_serve(config_path: str, role: Role) -> int:
    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, config_path, role)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0
