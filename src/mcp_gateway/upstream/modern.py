"""Upstreams that speak MCP 2026-07-28 ("modern"): no initialize, no session; every request
carries the protocol version and the client's capabilities in `params._meta`, and mirrors its
method (and name) in the `Mcp-Method` / `Mcp-Name` headers.

What the gateway learns about an upstream's era at discovery (`UpstreamMode`) is kept here, one
entry per server name in the process (as `credentials.py` keeps one token provider per server):
the supervisor records it when it connects, the router reads it for routed calls (and learns it
itself, with the same `discover_mode`, when it runs without a supervisor). docs/upstream.md,
"Modern upstreams".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mcp_gateway.config import ServerConfig
from mcp_gateway.protocol import (
    CLIENT_CAPABILITIES_META,
    CLIENT_INFO_META,
    PROTOCOL_VERSION_META,
    encode_header_value,
)
from mcp_gateway.protocol import MODERN_VERSIONS as SERVED_MODERN_VERSIONS

# Modern revisions we speak to an upstream (the ones we serve clients), newest first: what
# `server/discover` proposes.
MODERN_VERSIONS: Final[tuple[str, ...]] = tuple(reversed(SERVED_MODERN_VERSIONS))
MODERN_VERSION: Final = MODERN_VERSIONS[0]
SERVER_INFO_META: Final = "io.modelcontextprotocol/serverInfo"
# The revision's per-request opt-in to log messages (absent: the upstream sends none).
LOG_LEVEL_META: Final = "io.modelcontextprotocol/logLevel"
DISCOVER_METHOD: Final = "server/discover"
LISTEN_METHOD: Final = "subscriptions/listen"
ACKNOWLEDGED: Final = "notifications/subscriptions/acknowledged"
RESOURCE_SUBSCRIPTIONS: Final = "resourceSubscriptions"
METHOD_HEADER: Final = "mcp-method"
NAME_HEADER: Final = "mcp-name"
# The methods whose routing name the revision mirrors in Mcp-Name, and where the body has it.
NAME_BEARING: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}
# What a listen asks for, per list_changed notification the gateway watches.
LISTEN_FILTERS: Final[Mapping[str, str]] = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}


@dataclass(frozen=True, slots=True)
class UpstreamMode:
    """How an HTTP upstream is spoken to, learnt at discovery.

    `stateless`: it issues no `Mcp-Session-Id` (a modern upstream, or a legacy one in stateless
    mode): calls go without a backend session. `protocol_version`: the revision it speaks;
    a modern one also needs `_meta` and the mirrored headers on every request."""

    url: str
    protocol_version: str
    stateless: bool

    @property
    def modern(self) -> bool:
        return self.protocol_version in MODERN_VERSIONS


_modes: dict[str, UpstreamMode] = {}


def record_mode(server: ServerConfig, mode: UpstreamMode) -> None:
    _modes[server.name] = mode


def mode_of(server: ServerConfig) -> UpstreamMode | None:
    """What discovery learnt of `server` (None: not learnt yet, or its URL changed since)."""
    mode = _modes.get(server.name)
    return mode if mode is not None and mode.url == server.url else None


def forget_mode(server: ServerConfig) -> None:
    if (mode := _modes.get(server.name)) is not None and mode.url == server.url:
        del _modes[server.name]


def request_meta(
    protocol_version: str,
    capabilities: Mapping[str, Any],
    client_info: Mapping[str, Any] | None,
    log_level: str | None = None,
) -> dict[str, Any]:
    """The per-request `_meta` envelope keys of a modern request; `log_level`: what a
    handshake-era client asked for with logging/setLevel (the revision has no such method: the
    level rides on each request, and without it the upstream logs nothing to us)."""
    meta: dict[str, Any] = {
        PROTOCOL_VERSION_META: protocol_version,
        CLIENT_CAPABILITIES_META: dict(capabilities),
    }
    if client_info:
        meta[CLIENT_INFO_META] = dict(client_info)
    if log_level:
        meta[LOG_LEVEL_META] = log_level
    return meta


def with_meta(params: Mapping[str, Any] | None, meta: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with the envelope keys in its `_meta` (other `_meta` keys, e.g. a progress
    token, kept; the envelope's own keys are the gateway's to set)."""
    merged = dict(params or {})
    existing = merged.get("_meta")
    merged["_meta"] = {**(existing if isinstance(existing, dict) else {}), **meta}
    return merged


def mirrored_headers(method: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    """`Mcp-Method`, and `Mcp-Name` for the name-bearing methods (base64 form when needed)."""
    headers = {METHOD_HEADER: method}
    key = NAME_BEARING.get(method)
    name = (params or {}).get(key) if key else None
    if isinstance(name, str):
        headers[NAME_HEADER] = encode_header_value(name)
    return headers


def body_with_meta(body: bytes, meta: Mapping[str, Any]) -> bytes:
    """A request body with the envelope in its `params._meta` (a routed call of a legacy client
    to a modern upstream). Re-encodes the body: only calls to modern upstreams pay for it."""
    message = json.loads(body)
    if not isinstance(message, dict):
        return body
    params = message.get("params")
    message["params"] = with_meta(params if isinstance(params, dict) else None, meta)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def listen_filter(watched: frozenset[str], resources: Sequence[str] = ()) -> dict[str, Any]:
    """The `notifications` filter of a `subscriptions/listen` for these list_changed methods,
    and `notifications/resources/updated` of the resource URIs `resources`."""
    notifications: dict[str, Any] = {LISTEN_FILTERS[m]: True for m in sorted(watched) if m in LISTEN_FILTERS}
    if resources:
        notifications[RESOURCE_SUBSCRIPTIONS] = list(resources)
    return notifications


def honoured_resources(acknowledged: Mapping[str, Any]) -> list[str]:
    """The resource URIs an upstream's `notifications/subscriptions/acknowledged` honours (an
    upstream that omits one will never tell its updates: the revision's honoured subset)."""
    params = acknowledged.get("params")
    notifications = params.get("notifications") if isinstance(params, dict) else None
    uris = notifications.get(RESOURCE_SUBSCRIPTIONS) if isinstance(notifications, dict) else None
    return [uri for uri in uris if isinstance(uri, str)] if isinstance(uris, list) else []


def discover_result_as_initialize(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """A `server/discover` result in the shape the supervisor validates an InitializeResult
    by (protocolVersion, capabilities, serverInfo), so both eras go through one check."""
    meta = result.get("_meta")
    info = meta.get(SERVER_INFO_META) if isinstance(meta, dict) else None
    shaped: dict[str, Any] = {
        "protocolVersion": version,
        "capabilities": result.get("capabilities") if isinstance(result.get("capabilities"), dict) else {},
    }
    if isinstance(info, dict):
        shaped["serverInfo"] = info
    if isinstance(result.get("instructions"), str):
        shaped["instructions"] = result["instructions"]
    return shaped


__all__ = [
    "ACKNOWLEDGED",
    "DISCOVER_METHOD",
    "LISTEN_METHOD",
    "LOG_LEVEL_META",
    "MODERN_VERSION",
    "MODERN_VERSIONS",
    "UpstreamMode",
    "body_with_meta",
    "discover_result_as_initialize",
    "forget_mode",
    "honoured_resources",
    "listen_filter",
    "mirrored_headers",
    "mode_of",
    "record_mode",
    "request_meta",
    "with_meta",
]
