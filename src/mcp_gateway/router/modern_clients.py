"""A 2026-07-28 ("modern") client's routed call, routed by the router itself (pure, no I/O).

A modern request has no session; it carries its version and capabilities in `params._meta` and
mirrors method and name in `Mcp-Method` / `Mcp-Name`. `route_modern` runs the broker's
validation ladder for it (docs/protocol.md, "Modern requests": the same codes and statuses) and
routes a `tools/call` / `prompts/get` to its upstream with the prefix stripped from the body's
name and from `Mcp-Name` (exchange.py sets the header from the routed name). What stays the
broker's (`ToBroker`):

- calls declaring roots, sampling or elicitation: a legacy upstream may ask such a client
  something mid-call, which only the broker translates (InputRequiredResult);
- retries carrying `requestState` / `inputResponses`: the broker opens the sealed state;
- every other method (lists, discover, resources/read, completion/complete).

The answer passes through `ModernAnswer` (exchange.py streams the body through it): for a
legacy upstream the call went out under a gateway-made id on the shared backend session
(several clients' ids may collide there), which the answer gets back as the client's, with
`resultType: "complete"` added as 2026-07-28 results carry it; a modern upstream's
`input_required` result gets its `requestState` sealed (sessions/request_state.py) so the
upstream's state never reaches the client as it came. docs/router.md, "Modern clients".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from mcp_gateway.protocol import (
    CLIENT_CAPABILITIES_META,
    CLIENT_INFO_META,
    PROTOCOL_VERSION_META,
    ErrorCode,
    Peek,
    ProtocolError,
    RequestId,
    check_header_body_mismatch,
    error_response,
    is_modern,
    modern_http_status,
    origin_allowed,
    peek,
    read_modern_envelope,
    replace_routing_name,
)
from mcp_gateway.router.decision import (
    ROUTED_METHODS,
    SESSION_HEADER,
    NeedsBackend,
    Reply,
    RoutingTable,
    ToBroker,
    client_internal_headers,
    outside_virtual_server,
    unknown_name,
)
from mcp_gateway.router.relay import SseIdTagger
from mcp_gateway.sessions.modern import BACKEND_PROTOCOL_VERSION, shared_session_id
from mcp_gateway.sessions.tokens import SessionClaims
from mcp_gateway.upstream.catalog import NO_FEATURES, client_features

# Params of a multi-round-trip retry: the broker opens the sealed state they carry.
RETRY_PARAMS: Final = ("requestState", "inputResponses")
_ENVELOPE_KEYS: Final = (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, CLIENT_INFO_META)
# What a legacy client must declare for each kind of input a modern upstream may ask for.
CAPABILITY_OF_INPUT: Final[Mapping[str, str]] = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
# The id a call to a legacy upstream carries on the shared backend session: unique per call.
GATEWAY_ID_MARK: Final = "mcpgw-modern:"


# The broker's endpoint for clients that stay on the handshake revisions (broker/stateful.py):
# a 2026-07-28 request there is the broker's to refuse, never routed as one.
STATEFUL_PATH: Final = "/mcp/stateful"


def is_modern_request(headers: Mapping[str, str]) -> bool:
    """A 2026-07-28 request: no session, a revision without handshake in its version header,
    not on /mcp/stateful (Envoy sends those to the broker past us; a deployment that puts every
    request through the ext_proc still must not route them)."""
    return (
        SESSION_HEADER not in headers
        and is_modern(headers.get("mcp-protocol-version"))
        and headers.get(":path", "").partition("?")[0] != STATEFUL_PATH
    )


def modern_reply(body: bytes, code: int) -> Reply:
    """An immediate answer to a modern request: its HTTP status follows the error code."""
    return Reply(modern_http_status(code), body)


def _refusal(error: ProtocolError) -> Reply:
    status = 413 if error.http_status == 413 else modern_http_status(error.code)
    return Reply(status, error.to_json())


def _as_modern(reply: Reply) -> Reply:
    """A legacy-shaped refusal (200 for a call's own error) with the revision's status."""
    try:
        code = json.loads(reply.body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return reply
    return Reply(modern_http_status(code), reply.body, reply.headers) if isinstance(code, int) else reply


def route_modern(headers: Mapping[str, str], body: bytes, table: RoutingTable) -> ToBroker | Reply | NeedsBackend:
    """Where a modern POST goes. Never raises on any input."""
    removed = client_internal_headers(headers)
    try:
        seen = peek(body, table.limits)
    except ProtocolError as error:
        return ToBroker(removed) if error.http_status != 413 else _refusal(error)
    kind = ROUTED_METHODS.get(seen.method or "")
    if kind is None or seen.kind != "request" or seen.id is None:
        return ToBroker(removed, seen.id if seen.kind == "request" else None)
    request_id = seen.id
    if not origin_allowed(headers.get("origin"), table.allowed_origins):
        return reply_modern(request_id, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed", status=403)
    mismatch = check_header_body_mismatch(headers, seen)
    if mismatch is not None:
        return _refusal(mismatch)
    try:
        params = json.loads(body).get("params")
        envelope = read_modern_envelope(params, headers.get("mcp-protocol-version"), request_id)
    except ProtocolError as error:
        return _refusal(error)
    except ValueError:  # peek accepted it, so this cannot happen; the broker answers precisely
        return ToBroker(removed, request_id)
    if any(key in params for key in RETRY_PARAMS) or client_features(envelope.client_capabilities) != NO_FEATURES:
        return ToBroker(removed, request_id)
    name = seen.name
    if not isinstance(name, str) or not name:
        return ToBroker(removed, request_id)  # the broker's -32602 in its words
    outside = outside_virtual_server(headers, request_id, kind, name, table)
    if outside is not None:
        return _as_modern(outside)
    matched = table.match(name)
    if matched is None:
        return _as_modern(unknown_name(request_id, kind, name))
    upstream, routed_name = matched
    if upstream.via_broker:
        return ToBroker(removed, request_id)
    new_body = body if routed_name == name else replace_routing_name(body, seen, routed_name)
    return NeedsBackend(
        upstream=upstream,
        # The gateway-held session modern clients declaring no features share (sessions/modern.py).
        claims=SessionClaims(shared_session_id(NO_FEATURES), BACKEND_PROTOCOL_VERSION, 0),
        gateway_session="",
        request_id=request_id,
        method=seen.method or "",
        routed_name=routed_name,
        body=new_body,
        remove_headers=removed,
        client_headers=frozenset(n.lower() for n in headers),
        exposed_name=name,
        modern=True,
    )


def reply_modern(request_id: RequestId | None, code: int, message: str, *, status: int) -> Reply:
    return Reply(status, error_response(request_id, code, message))


def new_gateway_id() -> str:
    return GATEWAY_ID_MARK + os.urandom(12).hex()


def for_legacy_upstream(body: bytes, gateway_id: str) -> bytes:
    """The call as a legacy upstream gets it on the shared backend session: under `gateway_id`,
    and without the modern envelope in `_meta` (it is the gateway's; the progress token stays)."""
    message = json.loads(body)
    message["id"] = gateway_id
    params = message.get("params")
    if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
        meta = {k: v for k, v in params["_meta"].items() if k not in _ENVELOPE_KEYS}
        if meta:
            params["_meta"] = meta
        else:
            del params["_meta"]
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


Rewrite = Callable[[dict[str, Any]], dict[str, Any] | None]


class ModernAnswer(SseIdTagger):
    """Rewrites each JSON-RPC message of an answer (a JSON body, or every SSE event) with
    `rewrite` (None: leave it as it is). A JSON body is rewritten whole at its end."""

    def __init__(self, server: str, rewrite: Rewrite, *, sse: bool) -> None:
        super().__init__(server)
        self._rewrite = rewrite
        self._sse = sse
        self._whole = b""

    def feed(self, chunk: bytes, end_of_stream: bool = False) -> bytes:
        if self._sse:
            return super().feed(chunk, end_of_stream)
        self._whole += chunk
        if not end_of_stream:
            return b""
        rewritten = self._tag(self._whole)
        return self._whole if rewritten is None else rewritten

    def _tag(self, payload: bytes) -> bytes | None:
        try:
            message = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        rewritten = self._rewrite(message)
        if rewritten is None:
            return None
        return json.dumps(rewritten, separators=(",", ":"), ensure_ascii=False).encode()


def legacy_answer(gateway_id: str, client_id: RequestId) -> Rewrite:
    """A legacy upstream's answer as the modern client reads it: its own id back, and
    `resultType: "complete"` on the result (the SDK client requires it)."""

    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("id") != gateway_id:
            return None
        message["id"] = client_id
        result = message.get("result")
        if isinstance(result, dict) and "resultType" not in result:
            result["resultType"] = "complete"
        return message

    return rewrite


def sealed_input_required(seal: Callable[[str], str]) -> Rewrite:
    """A modern upstream's answer with the `requestState` of an `input_required` result
    replaced by `seal(state)`: the client holds the gateway's token, never the upstream's."""

    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        result = message.get("result")
        if not isinstance(result, dict) or result.get("resultType") != "input_required":
            return None
        state = result.get("requestState")
        if isinstance(state, str):
            result["requestState"] = seal(state)
        return message

    return rewrite


def missing_input_capability(declared: Callable[[str], bool]) -> Rewrite:
    """A modern upstream's `input_required` result to a legacy client that cannot be asked
    what it needs: a JSON-RPC error naming the capability it did not declare."""

    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        result = message.get("result")
        if not isinstance(result, dict) or result.get("resultType") != "input_required":
            return None
        requests = result.get("inputRequests")
        methods = [r.get("method") for r in requests.values() if isinstance(r, dict)] if isinstance(requests, dict) else []
        needed = sorted({CAPABILITY_OF_INPUT.get(m, "elicitation") for m in methods if isinstance(m, str)}) or ["elicitation"]
        missing = [c for c in needed if not declared(c)] or needed
        return {
            "jsonrpc": "2.0",
            "id": message.get("id"),
            "error": {
                "code": int(ErrorCode.MISSING_REQUIRED_CLIENT_CAPABILITY),
                "message": f"Missing required client capability: {', '.join(missing)}",
                "data": {"requiredCapabilities": {capability: {} for capability in missing}},
            },
        }

    return rewrite


__all__ = [
    "ModernAnswer",
    "Peek",
    "for_legacy_upstream",
    "is_modern_request",
    "legacy_answer",
    "missing_input_capability",
    "modern_reply",
    "new_gateway_id",
    "route_modern",
    "sealed_input_required",
]
