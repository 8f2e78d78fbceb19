"""Inbound OAuth on the broker (docs/auth.md): the gate for the current config, the RFC 9728
metadata routes, and lists cut to what a token may use.

GET and DELETE /mcp (and the WebSocket upgrade) reach the broker without passing the router,
and broker-bound POSTs are not checked there either: the broker verifies every request itself,
with the same `mcp_gateway.auth` gate the router uses for the calls it sends to upstreams.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quart import Quart, Response, request

from mcp_gateway.auth import AuthGate, Principal, Refusal, metadata_path, requested_name
from mcp_gateway.broker.aggregate import Entry, Federation
from mcp_gateway.config import GatewayConfig
from mcp_gateway.protocol import ErrorCode, RequestId, error_response
from mcp_gateway.upstream.catalog import KINDS

if TYPE_CHECKING:
    from mcp_gateway.broker.core import BrokerCore

WELL_KNOWN = "/.well-known/oauth-protected-resource"


class BrokerAuth:
    """The gate of the broker's current config (rebuilt on reload, keeping fetched keys)."""

    def __init__(self, core: BrokerCore) -> None:
        self._core = core
        self._config: GatewayConfig | None = None
        self._gate: AuthGate | None = None

    @property
    def gate(self) -> AuthGate | None:
        config = self._core.config
        if config is not self._config:
            self._gate = AuthGate.of(config, self._gate)
            self._config = config
        return self._gate

    async def check(self, request_id: RequestId | None = None) -> Principal | Response | None:
        """The HTTP request's principal; None when auth is off; else the 401/403 to answer."""
        return await self.check_header(request.headers.get("authorization"), request_id)

    async def check_header(
        self, authorization: str | None, request_id: RequestId | None = None
    ) -> Principal | Response | None:
        gate = self.gate
        if gate is None:
            return None
        outcome = await gate.authenticate(authorization, request_id)
        return outcome if isinstance(outcome, Principal) else refusal_response(outcome)

    def refused_message(self, principal: Principal | None, method: str, params: Any, request_id: RequestId) -> bytes | None:
        """For a socket that authenticated once at its upgrade: the JSON-RPC error for a request
        made after the token expired, or naming an item the token may not use."""
        gate = self.gate
        if gate is None or principal is None:
            return None
        if time.time() > principal.expires_at + gate.leeway:
            return error_response(request_id, ErrorCode.INVALID_REQUEST, "Unauthorized: token expired")
        name = requested_name(method, params)
        refusal = gate.refuse_use(principal, name, request_id) if name is not None else None
        return refusal.body if refusal is not None else None


def refusal_response(refusal: Refusal) -> Response:
    response = Response(refusal.body, refusal.status)
    for name, value in refusal.headers:
        response.headers[name] = value
    return response


def register(app: Quart, auth: BrokerAuth) -> None:
    """`/.well-known/oauth-protected-resource` and its path-suffixed form (RFC 9728 §3.1: for
    the resource `https://host/mcp`, `/.well-known/oauth-protected-resource/mcp`)."""

    async def metadata(suffix: str = "") -> Response:
        gate = auth.gate
        path = WELL_KNOWN + (f"/{suffix}" if suffix else "")
        if gate is None or path not in (WELL_KNOWN, metadata_path(gate.resource)):
            return Response(b'{"error":"not_found"}', 404, content_type="application/json")
        response = Response(gate.metadata(), 200, content_type="application/json")
        response.headers["cache-control"] = "max-age=300"
        return response

    app.add_url_rule(WELL_KNOWN, "oauth_protected_resource", metadata, methods=["GET"])
    app.add_url_rule(
        WELL_KNOWN + "/<path:suffix>", "oauth_protected_resource_suffixed", metadata, methods=["GET"]
    )


def allowed_for(gate: AuthGate | None, principal: Principal | None) -> Callable[[str], bool] | None:
    if gate is None or principal is None:
        return None
    policy = gate.policy
    if not policy.rules:
        return None  # nothing to cut
    return lambda name: policy.allows(principal, name)


def restrict_to(federation: Federation, allowed: Callable[[str], bool]) -> Federation:
    """What a token may use of `federation`: items whose exposed name (or URI) it is allowed."""
    entries: dict[str, tuple[Entry, ...]] = {}
    by_name: dict[str, dict[str, Entry]] = {}
    for kind in KINDS:
        kept = tuple(e for e in federation.items(kind) if allowed(str(e.exposed[kind.id_field])))
        entries[kind.kind] = kept
        by_name[kind.kind] = {str(e.exposed[kind.id_field]): e for e in kept}
    return Federation(entries, by_name, federation.collisions)
