"""Sample MCP servers built with the official `mcp` SDK: compose, `mcp-gateway up` and tests use them.

Each sample is a module with `build() -> MCPServer` (`conformance` is the conformance fixture's
own app). `run_sample` serves one with hypercorn on Trio; port 0 works, and the bound port is
printed once listening (tests read that line instead of guessing a free port). Samples import nothing of the gateway.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys

import hypercorn.config
import hypercorn.trio
import trio
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

SAMPLES = ("echo", "dynamic", "slow", "many", "conformance")
READY_LINE_PREFIX = "mcp-sample listening on "
# Extra Host header values the DNS-rebinding check accepts, comma separated, e.g. the
# `hostname` Envoy writes into :authority when it routes to this sample ("weather.mcp.local:*").
ALLOWED_HOSTS_ENV = "MCP_SAMPLE_ALLOWED_HOSTS"


def build_server(name: str) -> MCPServer:
    if name not in SAMPLES or name == "conformance":
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}")
    module = importlib.import_module(f"mcp_gateway.samples.{name}")
    server: MCPServer = module.build()
    return server


def security_settings() -> TransportSecuritySettings:
    """DNS-rebinding protection on (the SDK default for loopback), plus configured host names.

    Envoy rewrites :authority to the upstream's host when it routes a call here; loopback
    addresses pass as they are, and a virtual host name must be listed in ALLOWED_HOSTS_ENV.
    """
    extra = [h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", *extra],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def build_app(name: str) -> ASGIApp:
    """The sample as an ASGI app at /mcp (stateful Streamable HTTP, SSE answers)."""
    if name == "conformance":
        from mcp_gateway.samples.conformance_fixture import fixture_app

        return fixture_app()
    return build_server(name).streamable_http_app(transport_security=security_settings())


async def serve_sample(
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one sample with hypercorn on Trio until cancelled; `task_status.started(port)`."""
    settings = hypercorn.config.Config()
    settings.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    settings.accesslog = None
    # hypercorn's own lines go to the root logger's handler, whatever formats it (structlog in
    # `mcp-gateway sample-server`), instead of a plain-text handler of hypercorn's own.
    settings.errorlog = logging.getLogger("hypercorn.error")
    settings.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(hypercorn.trio.serve, build_app(name), settings)
        task_status.started(int(urls[0].rsplit(":", 1)[1]))


def run_sample(name: str, host: str, port: int, *, transport: str = "http") -> int:
    """Serve one sample until SIGINT/SIGTERM; print READY_LINE_PREFIX + URL once listening.

    `transport="stdio"`: speak MCP on stdin/stdout until stdin closes, as a desktop client runs
    a server (nothing else is written to stdout)."""
    if name not in SAMPLES:
        print(f"unknown sample {name!r}; choose one of {', '.join(SAMPLES)}", file=sys.stderr)
        return 2
    if transport == "stdio":
        if name == "conformance":
            from mcp_gateway.samples.conformance_fixture import build_fixture

            build_fixture().run("stdio")
        else:
            build_server(name).run("stdio")
        return 0

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(serve_sample, name, host, port)
                shown = f"[{host}]" if ":" in host else host
                print(f"{READY_LINE_PREFIX}http://{shown}:{bound}/mcp", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0
