"""The controller's probe endpoints: /healthz (liveness) and /readyz (readiness).

A plain ASGI callable served by hypercorn on Trio, beside the controller in its nursery. It only
reads the Controller's in-memory state (no API call), so a probe answers in microseconds even
when the API server is slow. /readyz is true once every informer has listed once, for the
leader and a standby alike: a standby with warm caches is exactly what should be ready to lead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from mcp_gateway.controller.service import Controller
from mcp_gateway.logs import get_logger, hypercorn_error_log

log = get_logger(__name__)

DEFAULT_HEALTH_LISTEN = "0.0.0.0:8082"
HEALTH_LISTEN_ENV = "MCP_GATEWAY_CONTROLLER_HEALTH_LISTEN"

class HealthListenError(Exception):
    """The probe address cannot be bound (in use, bad host): the process cannot be probed."""


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def probe_answer(controller: Controller, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for one probe path."""
    if path == "/healthz":
        problem = controller.liveness_problem()
        if problem is not None:
            return 503, {"status": "unhealthy", "reason": problem}
        return 200, {"status": "ok"}
    if path == "/readyz":
        role = "leader" if controller.is_leader else "standby"
        unsynced = controller.unsynced()
        if not controller.running or unsynced:
            return 503, {"status": "syncing", "role": role, "unsynced": unsynced}
        return 200, {"status": "ready", "role": role}
    return 404, {"error": f"no such path {path!r}: /healthz or /readyz"}


def health_app(controller: Controller) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, {"error": "only GET and HEAD"}
        else:
            status, body = probe_answer(controller, scope["path"])
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload})

    return app


async def serve_health(
    controller: Controller, listen: str, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the probes on `listen` (host:port, port 0 for any) until cancelled; reports the port."""
    settings = hypercorn.config.Config()
    settings.bind = [listen]
    settings.accesslog = None  # a probe every few seconds would drown the controller's log
    settings.errorlog = hypercorn_error_log()  # its lines in our format (logs.py)
    settings.graceful_timeout = 1.0  # probes are instant; nothing worth waiting for at shutdown
    settings.keep_alive_timeout = 5.0
    async with trio.open_nursery() as nursery:
        try:
            urls: list[str] = await nursery.start(hypercorn.trio.serve, health_app(controller), settings)
        except* OSError as group:
            raise HealthListenError(f"cannot listen on {listen}: {group.exceptions[0]}") from None
        port = int(urls[0].rsplit(":", 1)[1])
        log.info("controller health endpoints listening", url=urls[0], paths=["/healthz", "/readyz"])
        task_status.started(port)
