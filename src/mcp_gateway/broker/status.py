"""/status, /status/{name}, /healthz, /readyz, /metrics: what an operator (or a probe) reads."""

from __future__ import annotations

import json
from typing import Any

from quart import Quart, Response, request

from mcp_gateway.broker import status_page
from mcp_gateway.broker.core import BrokerCore
from mcp_gateway.broker.metrics import CONTENT_TYPE_LATEST
from mcp_gateway.broker.reload import ReloadState
from mcp_gateway.upstream import TOOLS


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, indent=2).encode(), status, content_type="application/json")


def wants_html(accept: str) -> bool:
    """A browser's Accept (text/html before any JSON); a client's, curl's `*/*` or none: JSON.

    Quality values are honoured as far as they rank the two types: HTML only when text/html is
    named with a quality above zero and above application/json's."""
    ranks: dict[str, float] = {}
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks.setdefault(kind.lower(), quality)
    html = ranks.get("text/html", 0.0)
    return html > 0 and html > ranks.get("application/json", 0.0)


def _sessions(core: BrokerCore) -> dict[str, Any]:
    """This broker's session figures, from its counters (with Redis, other replicas' sessions
    are not in them)."""
    registry = core.metrics.registry

    def total(name: str) -> int:
        return int(registry.get_sample_value(f"mcp_gateway_sessions_{name}_total") or 0)

    created = total("created")
    return {"created": created, "open": created - total("deleted") - total("expired")}


def register(app: Quart, core: BrokerCore, reload_state: ReloadState) -> None:
    @app.get("/status")
    async def status() -> Response:
        upstreams = core.supervisor.status()
        body = {
            "ready": core.supervisor.first_round_done(),
            "config": reload_state.to_json(),
            "tools": len(core.federation.items(TOOLS)),
            "collisions": [c.to_json() for c in core.federation.collisions],
            "openStreams": core.fanout.stream_count,
            "backendStreams": core.forwarder.streams.status(),
            "upstreams": [u.to_json() for u in upstreams],
        }
        if wants_html(request.headers.get("accept", "")):
            page = status_page.render(body, _sessions(core))
            return Response(page, 200, content_type="text/html; charset=utf-8")
        return _json(body)

    @app.get("/status/<path:name>")
    async def status_of(name: str) -> Response:
        upstream = core.supervisor.status_of(name)
        if upstream is None:
            return _json({"error": f"no upstream named {name!r}"}, 404)
        return _json(upstream.to_json())

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready once the config is loaded and every upstream had its first connect attempt:
        # before that, tools/list would be missing tools that are merely slow to appear.
        if core.supervisor.first_round_done():
            return _json({"status": "ready"})
        return _json({"status": "discovering"}, 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        core.metrics.observe_upstreams(core.supervisor.status())
        return Response(core.metrics.render(), 200, content_type=CONTENT_TYPE_LATEST)
