"""The routing decision: request headers and body in, a decision out. No I/O, no gRPC.

The ext_proc servicer (router/service.py) only converts protobuf to these values and back; the
tests and the fuzzers call the same functions. A decision is made in two pure steps because the
backend session id lives in the session store:

1. `route_request(...)` → `ToBroker` | `Reply` (answer at once) | `NeedsBackend` (an upstream
   was chosen; the servicer looks up or lazily creates the backend session), then
2. `forward(need, backend_session_id)` → `ToUpstream` (the header and body mutations).

On the way back, `rewrite_response_headers(...)` swaps any backend session id for the gateway's.

Routed methods and their routing name (adding one is one line in `ROUTED_METHODS`):
`tools/call` and `prompts/get` by `params.name`, prefix-matched against the config;
`completion/complete` by `params.ref` (a prompt's name, or a resource template's exposed URI);
a client's answer whose id is a gateway id (router/relay.py) to the server that id names; and
`notifications/cancelled` → `Cancels`, which the servicer resolves against its in-flight calls.
A client's virtual server (`x-mcp-virtualserver`) narrows the names it may route to.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from mcp_gateway.protocol import (
    CANCELLED_METHOD,
    COMPLETION_METHOD,
    ErrorCode,
    Limits,
    Peek,
    ProtocolError,
    RequestId,
    cancelled_request_id,
    check_header_body_mismatch,
    completion_ref,
    encode_header_value,
    error_response,
    is_modern,
    origin_allowed,
    peek,
    replace_completion_ref,
    replace_id,
    replace_routing_name,
    session_version_refusal,
    strip_prefix,
)
from mcp_gateway.router.relay import ID_MARK, original_of
from mcp_gateway.sessions.tokens import SessionClaims, SessionTokens

if TYPE_CHECKING:
    from mcp_gateway.config import GatewayConfig, ServerConfig

# Headers only the gateway may set. A client's copy is removed before anything else happens,
# so it can neither choose an upstream nor impersonate the router (Envoy also strips them natively
# with an early header mutation, before the route is chosen: defence in depth).
INTERNAL_HEADER_PREFIX: Final = "x-mcp-"
SESSION_HEADER: Final = "mcp-session-id"
SERVER_HEADER: Final = "x-mcp-servername"
METHOD_HEADER: Final = "x-mcp-method"
TOOL_HEADER: Final = "x-mcp-toolname"
# For Envoy's rate limits (router/rate_limits.py), set on every POST the gateway forwards (the
# Lua fast path sets them too); the routes remove them before any upstream or the broker:
# the client's gateway token (mcp-session-id carries the backend's by then), the routed name as
# the client called it (prefixed), and the JSON-RPC id as JSON text (for the 429's body).
SESSION_KEY_HEADER: Final = "x-mcp-session"
NAME_HEADER: Final = "x-mcp-name"
REQUEST_ID_HEADER: Final = "x-mcp-request-id"
# On Envoy's own 429 when a rate limit refused the request: not the upstream's answer, not a
# failure to deliver it either; pass it on.
RATE_LIMITED_HEADER: Final = "x-mcp-rate-limited"
# Envoy adds this to every answer that came through an upstream's route (router/xds.py) as
# "<server> <response code details>". The router believes an answer (a 404 above all) is the
# upstream's only when it reads "<that server> via_upstream": not a misroute, not a local reply.
UPSTREAM_MARK_HEADER: Final = "x-mcp-upstream"
# The one x-mcp-* header a client may send: Kuadrant's virtual server selection (`namespace/name`).
# It selects, it does not route: it can only narrow what the client sees and reaches, so Envoy
# lets it through and the broker filters its lists by it; routed calls are checked here.
VIRTUAL_SERVER_HEADER: Final = "x-mcp-virtualserver"
JSON_CONTENT: Final = (("content-type", "application/json"),)
# Exposed URIs of prefixed servers (the broker's scheme; the import arrows keep us from its code).
URI_SCHEME: Final = "mcp-gateway:"

# method → what the routing name is called in error messages. The name itself comes from
# protocol.peek (`params.name`, or `params.uri` for resources/read).
DEFAULT_LIMITS: Final = Limits()

ROUTED_METHODS: Final[Mapping[str, str]] = {
    "tools/call": "tool",
    "prompts/get": "prompt",
}


# ---------------------------------------------------------------------------------------------
# The config snapshot


@dataclass(frozen=True, slots=True)
class VirtualSelection:
    """What one virtual server exposes: exposed tool and prompt names, exposed resource URIs."""

    name: str
    tools: frozenset[str] = frozenset()
    prompts: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class UpstreamRoute:
    server: str  # the server's config name; also the value of x-mcp-servername
    prefix: str
    authority: str  # :authority the upstream expects (its hostname override, else its URL's)
    path: str  # :path of the upstream's MCP endpoint
    authorization: str | None  # the Authorization header it gets; never logged (see __repr__)
    # stdio/WebSocket servers have no HTTP endpoint Envoy could reach: the broker relays their
    # calls, so their prefixes are known here (not "unknown tool") but go to the broker.
    via_broker: bool = False

    def __repr__(self) -> str:
        return f"UpstreamRoute(server={self.server!r}, prefix={self.prefix!r}, authority={self.authority!r})"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    # Longest prefix first, so that `weather_eu_` wins over `weather_` for `weather_eu_forecast`.
    routes: tuple[UpstreamRoute, ...]
    limits: Limits = DEFAULT_LIMITS
    allowed_origins: tuple[str, ...] = ()
    virtual_servers: tuple[VirtualSelection, ...] = ()

    @classmethod
    def of(
        cls,
        routes: Iterable[UpstreamRoute],
        limits: Limits = DEFAULT_LIMITS,
        allowed_origins: Iterable[str] = (),
        virtual_servers: Iterable[VirtualSelection] = (),
    ) -> RoutingTable:
        ordered = sorted(routes, key=lambda r: (-len(r.prefix), r.server))
        return cls(tuple(ordered), limits, tuple(allowed_origins), tuple(virtual_servers))

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RoutingTable:
        limits_cfg = config.gateway.limits
        limits = Limits(
            max_body_bytes=limits_cfg.max_body_bytes,
            max_depth=limits_cfg.max_depth,
            max_batch=limits_cfg.max_batch,
            max_string_length=limits_cfg.max_string_length,
        )
        routes = [upstream_route(server) for server in config.enabled_servers()]
        virtual = [
            VirtualSelection(v.name, frozenset(v.tools), frozenset(v.prompts), frozenset(v.resources))
            for v in config.virtual_servers
        ]
        return cls.of(routes, limits, config.gateway.allowed_origins, virtual)

    def virtual_server(self, name: str) -> VirtualSelection | None:
        for virtual in self.virtual_servers:
            if virtual.name == name:
                return virtual
        return None

    def match(self, name: str) -> tuple[UpstreamRoute, str] | None:
        """The upstream owning a prefixed name, and the name as that upstream knows it."""
        for route in self.routes:
            stripped = strip_prefix(route.prefix, name)
            if stripped is not None:
                return route, stripped
        return None

    def match_uri(self, uri: str) -> tuple[UpstreamRoute, str] | None:
        """The upstream owning an exposed resource URI (or URI template), and its own URI.

        The broker's reversible scheme (broker/aggregate.py `expose_uri`): a prefixed server's
        URIs are `mcp-gateway:<prefix><original>`; the one unprefixed server keeps its own.
        """
        if uri.startswith(URI_SCHEME):
            rest = uri[len(URI_SCHEME) :]
            for route in self.routes:  # longest prefix first
                if route.prefix and rest.startswith(route.prefix) and len(rest) > len(route.prefix):
                    return route, rest[len(route.prefix) :]
        unprefixed = next((r for r in self.routes if not r.prefix), None)
        return None if unprefixed is None else (unprefixed, uri)

    def server(self, name: str) -> UpstreamRoute | None:
        return next((r for r in self.routes if r.server == name), None)


def upstream_route(server: ServerConfig) -> UpstreamRoute:
    url = urlsplit(server.url)
    default_port = 443 if url.scheme == "https" else 80
    port = url.port or default_port
    host = server.hostname or url.hostname or ""
    authority = host if port == default_port else f"{host}:{port}"
    path = url.path or "/"
    if url.query:
        path = f"{path}?{url.query}"
    return UpstreamRoute(
        server.name, server.prefix, authority, path, server.authorization, via_broker=server.transport != "http"
    )


# ---------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True, slots=True)
class ToBroker:
    """Let Envoy's default route take it to the broker, minus the client's internal headers."""

    remove_headers: tuple[str, ...] = ()
    request_id: RequestId | None = None  # for a rate limit's refusal (service.py)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the client at once (Envoy ImmediateResponse); nothing reaches an upstream."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = JSON_CONTENT


@dataclass(frozen=True, slots=True)
class NeedsBackend:
    """An upstream was chosen; `forward` completes it once the backend session id is known."""

    upstream: UpstreamRoute
    claims: SessionClaims
    gateway_session: str = field(repr=False)  # the client's token, put back on every response
    request_id: RequestId
    method: str
    routed_name: str  # the name without its prefix, as the upstream knows it
    body: bytes = field(repr=False)  # the body with the prefix stripped (arguments: not for logs)
    remove_headers: tuple[str, ...] = ()
    client_headers: frozenset[str] = frozenset()  # names only: what forward() must rewrite
    # A message following up an earlier routed exchange (the client's answer to a request the
    # upstream sent during a call, a cancellation): it belongs to the backend session that
    # exists; never create one for it, never replay it.
    follow_up: bool = False
    # The name (or URI) as the client knows it, prefix and all: what inbound OAuth rules match.
    exposed_name: str = ""
    # A 2026-07-28 client's call (router/modern_clients.py): no gateway session; `claims` name
    # the gateway-held session modern clients share with legacy upstreams.
    modern: bool = False


@dataclass(frozen=True, slots=True)
class ToUpstream:
    set_headers: tuple[tuple[str, str], ...]
    remove_headers: tuple[str, ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Cancels:
    """`notifications/cancelled` from a client with a live session: the servicer sends it to the
    upstream running `request_id` (`follow_up(upstream)`), or to the broker when no routed call
    of that session has that id (the broker stops its own forwarded calls)."""

    request_id: RequestId
    claims: SessionClaims
    gateway_session: str = field(repr=False)
    body: bytes = field(repr=False)
    remove_headers: tuple[str, ...] = ()
    client_headers: frozenset[str] = frozenset()

    def to_broker(self) -> ToBroker:
        return ToBroker(self.remove_headers)

    def follow_up(self, upstream: UpstreamRoute) -> NeedsBackend:
        return NeedsBackend(
            upstream=upstream,
            claims=self.claims,
            gateway_session=self.gateway_session,
            request_id=self.request_id,
            method="",
            routed_name="",
            body=self.body,
            remove_headers=self.remove_headers,
            client_headers=self.client_headers,
            follow_up=True,
        )


Decision = ToBroker | Reply | NeedsBackend | Cancels


def client_internal_headers(headers: Iterable[str]) -> tuple[str, ...]:
    """Names of every header the client may not set itself (case-insensitive): every x-mcp-*
    but the virtual server selection."""
    return tuple(
        name
        for name in headers
        if name.lower().startswith(INTERNAL_HEADER_PREFIX) and name.lower() != VIRTUAL_SERVER_HEADER
    )


# What a virtual server offers per selection-checked routing kind.
_SELECTED: Final[Mapping[str, str]] = {"tool": "tools", "prompt": "prompts", "resource": "resources"}


def _outside_virtual_server(
    headers: Mapping[str, str], request_id: RequestId, kind: str, name: str, table: RoutingTable
) -> Reply | None:
    """The broker's answers for a routed name the client's virtual server does not offer (it does
    not exist for that client: "Unknown <kind>") or for an unknown virtual server (400)."""
    # Envoy hands over lower-case names; the fuzzers do not, and a miss here would mean no check.
    selected = next((value for key, value in headers.items() if key.lower() == VIRTUAL_SERVER_HEADER), None)
    if not selected:
        return None
    virtual = table.virtual_server(selected)
    if virtual is None:
        return reply_error(
            request_id, ErrorCode.INVALID_REQUEST, f"Bad Request: unknown virtual server {selected[:200]!r}", status=400
        )
    offered: frozenset[str] = getattr(virtual, _SELECTED[kind])
    if name in offered:
        return None
    return _unknown(request_id, kind, name)


def _unknown(request_id: RequestId, kind: str, name: str) -> Reply:
    """The broker's answer for a name nobody offers. MCP 2025-11-25: an unknown tool or prompt is
    -32602 Invalid params; an unknown resource is -32002 Resource not found."""
    code = ErrorCode.RESOURCE_NOT_FOUND if kind == "resource" else ErrorCode.INVALID_PARAMS
    return reply_error(request_id, code, f"Unknown {kind}: {name}")


# The same answers for router/modern_clients.py.
def outside_virtual_server(
    headers: Mapping[str, str], request_id: RequestId, kind: str, name: str, table: RoutingTable
) -> Reply | None:
    return _outside_virtual_server(headers, request_id, kind, name, table)


def unknown_name(request_id: RequestId, kind: str, name: str) -> Reply:
    return _unknown(request_id, kind, name)


def route_request(
    headers: Mapping[str, str], body: bytes, table: RoutingTable, tokens: SessionTokens
) -> Decision:
    """Decide where one POSTed JSON-RPC body goes. Never raises on any input.

    `headers` are the client's request headers with lower-case names (Envoy's form).
    """
    removed = client_internal_headers(headers)
    if headers.get(":method", "POST") != "POST":
        return ToBroker(removed)
    try:
        seen = peek(body, table.limits, allow_batch=True)
    except ProtocolError as error:
        return Reply(error.http_status, error.to_json())
    kind = ROUTED_METHODS.get(seen.method or "")
    if kind is None or seen.id is None:
        if seen.method == COMPLETION_METHOD and seen.id is not None:
            return _route_completion(headers, body, seen, table, tokens, removed)
        if seen.method is None and type(seen.id) is str and seen.id.startswith(ID_MARK):
            return _route_answer(headers, body, seen, table, tokens, removed)
        if seen.method == CANCELLED_METHOD and seen.kind == "notification":
            return _cancellation(headers, body, table, tokens, removed)
        # initialize, tools/list, ping, notifications, responses, batches: the broker's.
        return ToBroker(removed, seen.id if seen.kind == "request" else None)
    return _route_named(headers, body, seen, kind, table, tokens, removed)


def _modern_without_session(headers: Mapping[str, str]) -> bool:
    """A 2026-07-28 request (no session; version and capabilities in its `_meta`): the broker
    validates its envelope and forwards it on the backend session modern clients of its
    capability set share (sessions/modern.py, docs/router.md "Modern clients")."""
    return SESSION_HEADER not in headers and is_modern(headers.get("mcp-protocol-version"))


def _admit(headers: Mapping[str, str], seen: Peek, tokens: SessionTokens) -> Reply | tuple[str, SessionClaims]:
    """A sealed gateway session, before the target is looked at. Returns (token, claims)."""
    assert seen.id is not None
    token = headers.get(SESSION_HEADER, "")
    if not token:
        return reply_error(seen.id, ErrorCode.INVALID_REQUEST, "Bad Request: Missing session ID", status=400)
    claims = tokens.verify(token)
    if claims is None:
        return session_not_found(seen.id)
    return token, claims


def _route_completion(
    headers: Mapping[str, str],
    body: bytes,
    seen: Peek,
    table: RoutingTable,
    tokens: SessionTokens,
    removed: tuple[str, ...],
) -> Decision:
    """`completion/complete` goes to the upstream owning the prompt or resource template it
    completes, with the reference as that upstream knows it."""
    assert seen.id is not None and seen.method is not None
    request_id = seen.id
    if not origin_allowed(headers.get("origin"), table.allowed_origins):
        return reply_error(request_id, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed", status=403)
    try:
        ref = completion_ref(body)
    except ValueError as error:
        return reply_error(request_id, ErrorCode.INVALID_PARAMS, f"Invalid params: {error}")
    if _modern_without_session(headers):
        return ToBroker(removed, request_id)
    admitted = _admit(headers, seen, tokens)
    if isinstance(admitted, Reply):
        return admitted
    token, claims = admitted
    prompt = ref.type == "ref/prompt"
    outside = _outside_virtual_server(headers, request_id, "prompt" if prompt else "resource", ref.value, table)
    if outside is not None:
        return outside
    matched = table.match(ref.value) if prompt else table.match_uri(ref.value)
    if matched is None:
        return _unknown(request_id, "prompt" if prompt else "resource", ref.value)
    upstream, routed = matched
    if upstream.via_broker:
        return ToBroker(removed, request_id)
    new_body = body if routed == ref.value else replace_completion_ref(body, ref, routed)
    return _to_upstream(upstream, routed, new_body, seen, token, claims, headers, removed, ref.value)


def _route_named(
    headers: Mapping[str, str],
    body: bytes,
    seen: Peek,
    kind: str,
    table: RoutingTable,
    tokens: SessionTokens,
    removed: tuple[str, ...],
) -> Decision:
    assert seen.id is not None and seen.method is not None
    request_id = seen.id
    if not origin_allowed(headers.get("origin"), table.allowed_origins):
        # A routed call never meets the broker's Origin check: the same rule applies here.
        return reply_error(request_id, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed", status=403)
    if SESSION_HEADER in headers:
        # The broker's rule for a request in a session, first as there: the upstream never gets
        # a version header the session did not negotiate (an SDK server reads 2026-07-28 as a
        # modern request and refuses it for its missing envelope).
        wrong_version = session_version_refusal(headers.get("mcp-protocol-version"))
        if wrong_version is not None:
            return reply_error(request_id, ErrorCode.INVALID_REQUEST, wrong_version, status=400)
    mismatch = check_header_body_mismatch(headers, seen)
    if mismatch is not None:
        # 2026-07-28 mirrors method and name in headers; a disagreement could steer a proxy.
        return Reply(mismatch.http_status, mismatch.to_json())
    name = seen.name
    if not isinstance(name, str) or not name:
        return reply_error(request_id, ErrorCode.INVALID_PARAMS, f"params.name is required for {seen.method}")
    if _modern_without_session(headers):
        return ToBroker(removed, request_id)
    admitted = _admit(headers, seen, tokens)
    if isinstance(admitted, Reply):
        return admitted
    token, claims = admitted
    outside = _outside_virtual_server(headers, request_id, kind, name, table)
    if outside is not None:
        return outside
    matched = table.match(name)
    if matched is None:
        return _unknown(request_id, kind, name)
    upstream, routed_name = matched
    if upstream.via_broker:
        return ToBroker(removed, request_id)
    new_body = body if routed_name == name else replace_routing_name(body, seen, routed_name)
    return _to_upstream(upstream, routed_name, new_body, seen, token, claims, headers, removed, name)


def _to_upstream(
    upstream: UpstreamRoute,
    routed_name: str,
    body: bytes,
    seen: Peek,
    token: str,
    claims: SessionClaims,
    headers: Mapping[str, str],
    removed: tuple[str, ...],
    exposed_name: str,
) -> NeedsBackend:
    assert seen.id is not None and seen.method is not None
    return NeedsBackend(
        upstream=upstream,
        claims=claims,
        gateway_session=token,
        request_id=seen.id,
        method=seen.method,
        routed_name=routed_name,
        body=body,
        remove_headers=removed,
        client_headers=frozenset(name.lower() for name in headers),
        exposed_name=exposed_name,
    )


def _cancellation(
    headers: Mapping[str, str],
    body: bytes,
    table: RoutingTable,
    tokens: SessionTokens,
    removed: tuple[str, ...],
) -> Decision:
    """A cancellation the router may deliver itself; anything doubtful is the broker's (it
    answers precisely, and cancels calls it forwards)."""
    request_id = cancelled_request_id(body)
    token = headers.get(SESSION_HEADER, "")
    claims = tokens.verify(token) if token else None
    if request_id is None or claims is None or not origin_allowed(headers.get("origin"), table.allowed_origins):
        return ToBroker(removed)
    return Cancels(
        request_id, claims, token, body, removed, frozenset(name.lower() for name in headers)
    )


def _route_answer(
    headers: Mapping[str, str],
    body: bytes,
    seen: Peek,
    table: RoutingTable,
    tokens: SessionTokens,
    removed: tuple[str, ...],
) -> Decision:
    """A client's response (or error) to a request an upstream sent during a routed call: its id
    is a gateway id (router/relay.py) naming that upstream; it goes back there, original id."""
    assert seen.id is not None
    if not origin_allowed(headers.get("origin"), table.allowed_origins):
        return reply_error(seen.id, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed", status=403)
    admitted = _admit(headers, seen, tokens)
    if isinstance(admitted, Reply):
        return admitted
    token, claims = admitted
    origin = original_of(seen.id)
    upstream = None if origin is None else table.server(origin[0])
    if origin is None or upstream is None or upstream.via_broker:
        # Nobody here asked under this id: say so now rather than let the upstream wait.
        return reply_error(
            seen.id, ErrorCode.INVALID_REQUEST, "Invalid Request: no server of this gateway sent that request", status=400
        )
    return NeedsBackend(
        upstream=upstream,
        claims=claims,
        gateway_session=token,
        request_id=seen.id,
        method="",
        routed_name="",
        body=replace_id(body, origin[1]),
        remove_headers=removed,
        client_headers=frozenset(name.lower() for name in headers),
        follow_up=True,
    )


def forward(need: NeedsBackend, backend_session_id: str | None) -> ToUpstream:
    """The mutations that send the call to its upstream with the backend session."""
    upstream = need.upstream
    set_headers: list[tuple[str, str]] = [
        (SERVER_HEADER, upstream.server),
        (":authority", upstream.authority),
        (":path", upstream.path),
        ("content-length", str(len(need.body))),
    ]
    if not need.follow_up:
        set_headers += [
            (METHOD_HEADER, need.method),
            (TOOL_HEADER, need.routed_name),
            (REQUEST_ID_HEADER, request_id_text(need.request_id)),
        ]
        if need.exposed_name:
            set_headers.append((NAME_HEADER, header_safe(need.exposed_name)))
    # Follow-ups (a client's answer, a cancellation) count against the session too; their id is
    # not a request's, so a refusal of one carries id null.
    set_headers.append((SESSION_KEY_HEADER, need.gateway_session))
    # The virtual server selection is the gateway's business; the upstream serves every name.
    remove = set(need.remove_headers) | ({VIRTUAL_SERVER_HEADER} & need.client_headers)
    # The client's Origin is the gateway's to check (route_request did, as the broker does); the
    # upstream's client is the gateway, as on the broker's own calls. Passed on, an Origin the
    # gateway allows met the upstream's own DNS-rebinding check (the SDK's default): a plain-text
    # 403 instead of the result (the fault suite's abuse corpus found it).
    if "origin" in need.client_headers:
        remove.add("origin")
    # The client's gateway token is ours, not the upstream's: replace it, or drop it for a
    # session-less upstream. Likewise the client's Authorization is for the gateway.
    if backend_session_id:
        set_headers.append((SESSION_HEADER, backend_session_id))
    else:
        remove.add(SESSION_HEADER)
    if "mcp-name" in need.client_headers:
        # The mirrored name must match the body the upstream gets: without the prefix.
        set_headers.append(("mcp-name", encode_header_value(need.routed_name)))
    if upstream.authorization:
        set_headers.append(("authorization", upstream.authorization))
    else:
        remove.add("authorization")
    # Never remove a header we also set (Envoy applies removals after sets).
    remove -= {name for name, _ in set_headers}
    return ToUpstream(tuple(set_headers), tuple(sorted(remove)), need.body)


def header_safe(name: str) -> str:
    """A name as a header value: itself when printable ASCII (as the Lua fast path puts it),
    else its base64 form."""
    return name if name.isascii() and name.isprintable() else encode_header_value(name)


def request_id_text(request_id: RequestId) -> str:
    """The id as JSON text, ASCII only: what a 429's body carries (envoy/bootstrap.yaml.tmpl)."""
    return json.dumps(request_id)


# ---------------------------------------------------------------------------------------------
# The way back


@dataclass(frozen=True, slots=True)
class ResponseMutation:
    set_headers: tuple[tuple[str, str], ...]
    remove_headers: tuple[str, ...]


def rewrite_response_headers(headers: Mapping[str, str], gateway_session: str) -> ResponseMutation:
    """Put the gateway session on the response; drop any backend session id or internal header."""
    remove = tuple(
        name
        for name in headers
        if name.lower().startswith(INTERNAL_HEADER_PREFIX) and name.lower() != SESSION_HEADER
    )
    return ResponseMutation(((SESSION_HEADER, gateway_session),), remove)


class Answer(enum.Enum):
    FROM_UPSTREAM = "from_upstream"  # pass it on, with the gateway's session id
    BACKEND_SESSION_EXPIRED = "backend_session_expired"  # re-initialise and replay once
    NOT_FROM_UPSTREAM = "not_from_upstream"  # misrouted or a local reply: answer with an error
    RATE_LIMITED = "rate_limited"  # Envoy's 429 with its JSON-RPC error: pass it on


def judge_answer(headers: Mapping[str, str], need: NeedsBackend, backend_session_id: str | None) -> Answer:
    if headers.get(UPSTREAM_MARK_HEADER) != f"{need.upstream.server} via_upstream":
        if headers.get(":status") == "429" and RATE_LIMITED_HEADER in headers:
            return Answer.RATE_LIMITED
        return Answer.NOT_FROM_UPSTREAM
    raw_status = headers.get(":status", "")
    status = int(raw_status) if raw_status.isdigit() else 0
    if backend_session_expired(status, backend_session_id):
        return Answer.BACKEND_SESSION_EXPIRED
    return Answer.FROM_UPSTREAM


def backend_session_expired(status: int, backend_session_id: str | None) -> bool:
    """An upstream answers 404 to a session it no longer knows (it restarted, or expired it)."""
    return status == 404 and bool(backend_session_id)


# ---------------------------------------------------------------------------------------------
# Immediate answers


def reply_error(
    request_id: RequestId | None, code: ErrorCode | int, message: str, *, status: int = 200
) -> Reply:
    # A JSON-RPC error about the call itself is an ordinary response (200); transport-level
    # problems (missing/unknown session, malformed body) carry their HTTP status as the SDKs do.
    return Reply(status, error_response(request_id, code, message))


def session_not_found(request_id: RequestId | None) -> Reply:
    # Streamable HTTP: a session id the server does not know → 404; the client re-initialises.
    return reply_error(request_id, ErrorCode.INVALID_REQUEST, "Session not found", status=404)


def store_unavailable(request_id: RequestId | None) -> Reply:
    # The gateway's own dependency failed, not the call: 503 (retry later), with the request id.
    return reply_error(request_id, ErrorCode.INTERNAL_ERROR, "Session store unavailable", status=503)


def upstream_unavailable(need: NeedsBackend) -> Reply:
    return reply_error(
        need.request_id,
        ErrorCode.INTERNAL_ERROR,
        f"Upstream {need.upstream.server!r} is unavailable",
    )
