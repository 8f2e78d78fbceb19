"""Modern (2026-07-28) requests, HTTP-free: no session; each request declares its version and
client capabilities in `params._meta` (validated by protocol.read_modern_envelope first).

- `server/discover`: the capabilities the federation offers and the versions we serve (modern
  first; the handshake revisions stay available through initialize).
- Lists: cut by the capabilities this request declares (the capability variants), with cache
  hints (`cache_hints`).
- tools/call, prompts/get, resources/read, completion/complete: forwarded by the broker on the
  shared backend session of the declared feature set (sessions/modern.py). A name that exists
  only for clients declaring more features is -32021, naming the capability.
- Anything else (initialize, ping, logging/setLevel, resources/subscribe, ...): -32601, which
  the HTTP layer answers with 404 as the revision requires.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mcp_gateway import __version__
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.core import LIST_METHODS, ROUTED_METHODS, BrokerCore, Emit
from mcp_gateway.broker.input_required import InputRequired
from mcp_gateway.config import ServerConfig, VirtualServer
from mcp_gateway.protocol import (
    CLIENT_CAPABILITIES_META,
    CLIENT_INFO_META,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_META,
    SUPPORTED_VERSIONS,
    ErrorCode,
    ModernEnvelope,
    ProtocolError,
    Request,
    check_param_headers,
    error_response,
    missing_capability,
    result_response,
)
from mcp_gateway.sessions.modern import BACKEND_PROTOCOL_VERSION, ensure_shared_session
from mcp_gateway.upstream import KINDS
from mcp_gateway.upstream.catalog import (
    ELICITATION_FORM,
    ELICITATION_URL,
    ROOTS,
    SAMPLING,
    client_features,
    declared_capabilities,
)
from mcp_gateway.upstream.modern import mode_of
from mcp_gateway.upstream.tool_params import declared_params

DISCOVER = "server/discover"
# Modern first (what a modern client picks), then the revisions served through initialize.
HANDSHAKE_DISCOVER_VERSIONS = [v for v in reversed(SUPPORTED_VERSIONS) if v not in MODERN_VERSIONS]
DISCOVER_VERSIONS = list(MODERN_VERSIONS) + HANDSHAKE_DISCOVER_VERSIONS
_ENVELOPE_KEYS = (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, CLIENT_INFO_META)
_CAPABILITY_OF = {ROOTS: "roots", SAMPLING: "sampling", ELICITATION_FORM: "elicitation", ELICITATION_URL: "elicitation"}
CacheScope = Literal["public", "private"]
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"


@dataclass(frozen=True, slots=True)
class CacheHint:
    """What one source says about caching a list: `ttl_ms` None when it says nothing."""

    ttl_ms: int | None = None
    scope: CacheScope | None = None


def cache_hints(sources: Iterable[CacheHint], *, per_principal: bool) -> tuple[int, CacheScope]:
    """The gateway's hints for a list built from `sources`: the most conservative of them.

    The shortest TTL wins, and a source without a TTL (every upstream that opens with
    initialize: it has no way to give one) makes it 0, since the list can change the moment
    that upstream's does. `private` when any source says so, or when the list was cut for
    the caller's token (`per_principal`): such a list must never be served to another
    authorization context.
    """
    ttl: int | None = None
    scope: CacheScope = "private" if per_principal else "public"
    for hint in sources:
        hinted = 0 if hint.ttl_ms is None else max(0, hint.ttl_ms)
        ttl = hinted if ttl is None else min(ttl, hinted)
        if hint.scope == "private":
            scope = "private"
    return (0 if ttl is None else ttl), scope


class ModernRequests:
    def __init__(self, core: BrokerCore) -> None:
        self.core = core
        self.input_required = InputRequired(core)

    def discover(self, request: Request, *, versions: list[str] = DISCOVER_VERSIONS) -> bytes:
        """`versions`: what this endpoint serves (/mcp/ws serves sessions only, so only the
        handshake revisions: a client there initializes)."""
        core = self.core
        capabilities: dict[str, Any] = {"completions": {}}
        for kind in KINDS:
            if core.federation.items(kind):
                capabilities.setdefault(kind.capability, {})
        # Whatever upstreams serve, the gateway answers these (empty lists at worst).
        capabilities.setdefault("tools", {})
        ttl, scope = cache_hints(self._upstream_hints([k.kind for k in KINDS]), per_principal=False)
        server_info = {"name": "mcp-gateway", "version": __version__}
        result = {
            "resultType": "complete",
            "supportedVersions": versions,
            "capabilities": capabilities,
            # Where 2026-07-28 servers say who they are (spec #3002, the SDK's stamp); the body
            # field stays for clients written before it moved.
            "_meta": {SERVER_INFO_META: server_info},
            "serverInfo": server_info,
            "instructions": "One MCP endpoint for many servers: each server's tools carry its prefix.",
            "ttlMs": ttl,
            "cacheScope": scope,
        }
        return result_response(request.id, result)

    def _upstream_hints(self, kinds: Iterable[str]) -> list[CacheHint]:
        """What each serving upstream's last listing of `kinds` said about caching it: a
        2026-07-28 upstream's ttlMs/cacheScope; nothing (an empty hint, hence ttl 0) from one
        that opens with initialize, whose list can change the moment it says so."""
        supervisor = self.core.supervisor
        hints = []
        for server, catalog in supervisor.catalog():
            for kind in kinds:
                if kind in catalog.items:
                    ttl, scope = supervisor.cache_hint(server.name, kind)
                    hints.append(CacheHint(ttl, "private" if scope == "private" else "public" if scope == "public" else None))
        return hints

    async def handle(
        self,
        request: Request,
        envelope: ModernEnvelope,
        emit: Emit | None,
        *,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None,
        principal: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Answer one modern request (its envelope already validated). Raises ProtocolError for
        -32021, for a requestState that does not open for this request and `principal` (the
        caller's subject under inbound auth), and for `Mcp-Param-*` `headers` (the request's,
        names lowercase) that disagree with its arguments; answers anything else as a JSON-RPC
        body."""
        core = self.core
        method = request.method
        features = client_features(envelope.client_capabilities)
        if method == DISCOVER:
            return self.discover(request)
        kind = LIST_METHODS.get(method)
        if kind is not None:
            from mcp_gateway.broker.auth import restrict_to

            view = core._view(virtual, features)
            listed = core._list(request, kind, view if allowed is None else restrict_to(view, allowed))
            ttl, scope = cache_hints(self._upstream_hints([kind.kind]), per_principal=allowed is not None)
            return with_cache_hints(listed, ttl, scope)
        routed = ROUTED_METHODS.get(method)
        if routed is None and method != "completion/complete":
            return error_response(request.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")
        self.check_capability(request, envelope, virtual, principal, headers)
        # One shared session per declared feature set: what changes an upstream's lists, and
        # what a legacy upstream may ask during a call (its backend session declares it).
        session = await self.shared_session(features)
        upstream_request = Request(request.id, method, _without_envelope(request.params))
        if routed is not None:
            # What an upstream asks mid-call becomes an InputRequiredResult (input_required.py).
            answer = await self.input_required.call(
                upstream_request, session, emit, virtual=virtual, allowed=allowed, features=features, principal=principal
            )
        else:
            answer = await core.handle(upstream_request, session, emit, virtual=virtual, allowed=allowed, can_ask=False)
        return with_result_type(answer, cacheable=method == "resources/read")

    def check_capability(
        self,
        request: Request,
        envelope: ModernEnvelope,
        virtual: VirtualServer | None,
        principal: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """-32021 for a tool or prompt that exists only for clients declaring a capability
        this request did not (an upstream's capability variant): it is not unknown, the
        client can have it by declaring that capability. -32602 for a requestState that does
        not open for this request. -32020 for `Mcp-Param-*` headers that disagree with the
        arguments (`param_mismatch`). Checked here too, before an SSE answer commits to 200."""
        state_binding = self.input_required.binding(
            request, virtual, client_features(envelope.client_capabilities), principal
        )
        self.input_required.opened(request, state_binding)
        kind = ROUTED_METHODS.get(request.method)
        if kind is None or kind.id_field == "uri":
            return
        name = (request.params or {}).get(kind.id_field)
        core = self.core
        features = client_features(envelope.client_capabilities)
        if not isinstance(name, str):
            return
        owner = core._owner(kind, name, virtual, features)
        if owner is not None:
            if request.method == "tools/call":
                param_mismatch(request, *owner, headers or {})
            return
        for feature in sorted(core._relevant - features):
            if core._owner(kind, name, virtual, features | {feature}) is not None:
                raise missing_capability(_CAPABILITY_OF.get(feature, feature), request.id)

    async def shared_session(self, features: frozenset[str]) -> ClientSession:
        settings = self.core.config.gateway.sessions
        sid = await ensure_shared_session(
            self.core.store, features, declared_capabilities(features), settings.ttl_seconds
        )
        return ClientSession("", sid, BACKEND_PROTOCOL_VERSION)


def param_mismatch(request: Request, server: ServerConfig, tool: str, headers: Mapping[str, str]) -> None:
    """A modern client's call to a modern upstream's tool that declares `x-mcp-header`
    parameters: its Mcp-Param-* headers must agree with its arguments (-32020, 400, raised).
    The gateway checks them before anything goes out (the upstream would refuse them too, but
    a bad call is the client's to hear about, not the upstream's to receive); the upstream then
    gets them mirrored from the arguments (upstream/client.py), equal to what was checked."""
    mode = mode_of(server) if server.transport == "http" else None
    declared = declared_params(server.name, tool) if mode is not None and mode.modern else ()
    if declared:
        arguments = (request.params or {}).get("arguments")
        error = check_param_headers(headers, arguments if isinstance(arguments, dict) else None, declared, request.id)
        if error is not None:
            raise error


def with_cache_hints(answer: bytes, ttl_ms: int, scope: CacheScope) -> bytes:
    """A pre-serialized list answer (`{"jsonrpc":..,"result":{...}}`) with the 2026-07-28
    result fields added at the end of its result object."""
    if not answer.endswith(b"}}") or b'"result":' not in answer:
        return answer  # an error answer: nothing to add
    tail = b',"resultType":"complete","ttlMs":%d,"cacheScope":"%b"}}' % (ttl_ms, scope.encode())
    return answer[:-2] + tail


def with_result_type(answer: bytes, *, cacheable: bool = False) -> bytes:
    """A legacy upstream's result as a modern client reads it: 2026-07-28 results carry
    `resultType` (the SDK client requires it); a result without one is a complete one. A
    `cacheable` result (resources/read) must also carry ttlMs and cacheScope: a legacy
    upstream gives none, so immediately stale and private (the SDK server's own defaults)."""
    try:
        message = json.loads(answer)
    except ValueError:
        return answer
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict):
        return answer
    added: dict[str, Any] = {"resultType": "complete"}
    if cacheable:
        added |= {"ttlMs": 0, "cacheScope": "private"}
    missing = {key: value for key, value in added.items() if key not in result}
    if not missing:
        return answer
    result.update(missing)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _without_envelope(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The params as a legacy upstream gets them: the modern envelope keys are the gateway's."""
    if not params or not isinstance(params.get("_meta"), dict):
        return params
    meta = {k: v for k, v in params["_meta"].items() if k not in _ENVELOPE_KEYS}
    rest = {k: v for k, v in params.items() if k != "_meta"}
    return {**rest, "_meta": meta} if meta else rest


__all__ = ["DISCOVER", "CacheHint", "ModernRequests", "ProtocolError", "cache_hints", "with_cache_hints"]
