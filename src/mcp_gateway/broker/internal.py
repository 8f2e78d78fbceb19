"""The broker's internal surface: `POST /internal/relist?server=NAME`, for the gateway's own parts.

An upstream tells a list change to the session that caused it, and calls Envoy routes go
straight to the upstream: the router or Envoy's Lua filter may be the only one to see a
`list_changed` in such a call's answer. They ask the broker to re-list that upstream here (Lua
with `httpCall` to the `mcp_broker` cluster; the router in process through
`upstream.relist.Relists`) and relay the notification once this answers, so a client listing
right after it sees the new list. The contract is docs/broker.md, "Re-listing on request".

Only for the gateway itself: the peer must be loopback and the request must carry
`x-mcp-internal: relist`, a header Envoy's early header mutation removes from every client
request (so nothing a client sends through Envoy gets here); no `Origin` (no browser). Even
when abused it costs little: re-lists are coalesced per upstream.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from quart import Quart, Response, request

from mcp_gateway.broker.core import BrokerCore
from mcp_gateway.logs import get_logger
from mcp_gateway.upstream.relist import (
    INTERNAL_HEADER,
    INTERNAL_HEADER_VALUE,
    RELIST_PATH,
    RelistOutcome,
)

log = get_logger("mcp_gateway.broker")

STATUS_OF: dict[RelistOutcome, int] = {
    RelistOutcome.RELISTED: 200,
    RelistOutcome.NOT_SERVING: 200,  # nothing to wait for: its next session lists afresh
    RelistOutcome.UNKNOWN: 404,
    RelistOutcome.TIMED_OUT: 504,
}


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (a dual-stack socket's view of 127.0.0.1)."""
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _json(data: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(data).encode(), status, content_type="application/json")


def register(app: Quart, core: BrokerCore) -> None:
    @app.post(RELIST_PATH)
    async def relist() -> Response:
        if (
            not is_loopback(request.remote_addr)
            or request.headers.get(INTERNAL_HEADER) != INTERNAL_HEADER_VALUE
            or "origin" in request.headers
        ):
            log.warning("internal re-list refused", peer=request.remote_addr)
            return _json({"error": "internal endpoint"}, 403)
        name = request.args.get("server")
        if not name:
            return _json({"error": "server=NAME is required"}, 400)
        outcome = await core.relist(name)
        return _json({"server": name, "outcome": outcome.value}, STATUS_OF[outcome])


__all__ = ["is_loopback", "register"]
