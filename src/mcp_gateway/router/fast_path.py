"""The contract between the router and Envoy's Lua fast path (envoy/fast_path.lua). No I/O.

The router decides; Envoy applies. For a routed `tools/call` / `prompts/get` the router hands
its decision to the Lua filter as ext_proc dynamic metadata (`mcp_gateway.fast`, written by
`write_decision`); the filter keeps it per worker, keyed by the exact inputs the decision
was made from, and applies it to the next calls with those inputs without the ext_proc. Three
things keep the two sides in step:

* the **generation**: a digest of everything in the config a decision depends on (routes,
  prefixes, credentials, limits, Origins, virtual servers). The router stamps each decision
  with its own; the xDS writer puts the current one in the POST route's metadata. A Lua worker
  that sees a new generation drops every decision it holds, and keeps a decision only if it
  was made under the generation its request saw: a reload never serves a stale decision.
* the **lifetime**: `ttl_seconds`, and never past the session's own end (sessions live a fixed
  time from their creation). It bounds how long a session ended on another Envoy worker (DELETE)
  still reaches its upstreams; the worker that saw the DELETE forgets it at once.
* the **limits**: the Lua validator refuses (to the slow path) everything the router's strict
  reader might refuse, so the fast path is never laxer than the slow one.

A 2026-07-28 ("modern") client's call has no session: its decision (`Decision.kind` set) is
kept under everything the router's ladder read (docs/router.md, "Modern clients on the fast
path"); one to a modern upstream carries the sealed `RequestBinding` the Lua filter hands back
to have an `input_required` answer's requestState sealed (`seal_binding`, `open_binding`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import struct_pb2

from mcp_gateway.router.decision import RoutingTable
from mcp_gateway.sessions.request_state import RequestBinding

if TYPE_CHECKING:
    from mcp_gateway.auth import Principal
    from mcp_gateway.config import GatewayConfig
    from mcp_gateway.upstream.credentials import Credential

# The key the router writes its decision under, in the ext_proc's metadata namespace.
DECISION_KEY: Final = "fast"
# The upstream whose SSE answer this is (the router's answers; Envoy's route mark is gone by the
# time the Lua filter sees them): the filter watches it for list changes told inside.
ANSWERING_KEY: Final = "server"
# Envoy's Lua filter reads route metadata under its own name (envoy/bootstrap.yaml.tmpl).
LUA_FILTER: Final = "envoy.filters.http.lua"
# The header the Lua filter sets on a call it routes itself; only the routes that skip the
# ext_proc match it (a client's copy is stripped before routing, as every x-mcp-* is).
FAST_HEADER: Final = "x-mcp-fast-path"
# Set by the Lua filter on a call it would apply a decision to but holds none for: only then does
# the router hand one over (an Envoy without the filter never gets a credential in its metadata).
# Like every x-mcp-* header, a client's copy is stripped before it reaches the filter chain, and
# the router removes it before the upstream.
LEARN_HEADER: Final = "x-mcp-fast-path-learn"
# Set by the Lua filter, on its own internal listener only, on its request to have a modern
# upstream's answer sealed (the value: the decision's sealed binding). Like every x-mcp-*
# header, a client's copy is gone before any filter runs.
SEAL_HEADER: Final = "x-mcp-seal"
# What the binding's MAC key is derived for (SessionTokens.derived_key).
BINDING_KEY_PURPOSE: Final = b"fast path request-state bindings"


@dataclass(frozen=True, slots=True)
class FastPath:
    """What the router needs of the fast path, from one config."""

    enabled: bool
    generation: str
    ttl_ms: int
    session_ttl_seconds: int
    max_body_bytes: int
    max_depth: int
    max_string_length: int

    @classmethod
    def of(cls, config: GatewayConfig) -> FastPath:
        gateway = config.gateway
        settings = gateway.envoy.fast_path
        limits = gateway.limits
        return cls(
            enabled=settings.enabled,
            generation=generation(config),
            ttl_ms=int(settings.ttl_seconds * 1000),
            session_ttl_seconds=gateway.sessions.ttl_seconds,
            max_body_bytes=min(settings.max_body_bytes, limits.max_body_bytes),
            max_depth=limits.max_depth,
            max_string_length=limits.max_string_length,
        )

    def route_metadata(self) -> dict[str, Any] | None:
        """The POST route's metadata for the Lua filter; None when the fast path is off."""
        if not self.enabled:
            return None
        return {
            LUA_FILTER: {
                DECISION_KEY: {
                    "generation": self.generation,
                    "max_body": self.max_body_bytes,
                    "max_depth": self.max_depth,
                    "max_string": self.max_string_length,
                }
            }
        }

    def lifetime_ms(self, issued_at: int, now: float) -> int:
        """How long a decision for a session issued at `issued_at` may be kept, from `now`."""
        remaining = (issued_at + self.session_ttl_seconds - now) * 1000
        return int(max(0, min(self.ttl_ms, remaining)))


def generation(config: GatewayConfig) -> str:
    """A digest of the config a routing decision depends on (credentials only as digests)."""
    table = RoutingTable.from_config(config)
    state = {
        "routes": [
            [r.server, r.prefix, r.authority, r.path, _digest(r.authorization or ""), r.via_broker]
            for r in table.routes
        ],
        "limits": [table.limits.max_body_bytes, table.limits.max_depth, table.limits.max_string_length],
        "origins": list(table.allowed_origins),
        "virtual": [
            [v.name, sorted(v.tools), sorted(v.prompts), sorted(v.resources)] for v in table.virtual_servers
        ],
        "fast": config.gateway.envoy.fast_path.model_dump(),
        "sessions": config.gateway.sessions.ttl_seconds,
        "auth": config.gateway.auth.model_dump(mode="json"),
        # Upstreams with OAuth: their tokens bound each decision's life (`not_after`); a new
        # token endpoint, client or secret drops every decision at once.
        "oauth": {
            s.name: _digest(s.oauth.model_dump_json() + s.oauth.client_secret)
            for s in config.enabled_servers()
            if s.oauth is not None
        },
    }
    return _digest(json.dumps(state, sort_keys=True))[:16]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    """One routed call's decision as the Lua filter applies it."""

    server: str
    routed_name: str
    backend_id: str
    authority: str
    path: str
    authorization: str
    mark: str  # the call mark without its request id (router/accesslog.py, session marks)
    lifetime_ms: int
    replay_timeout_ms: int
    # Epoch ms past which Envoy must not use it (the bearer token's `exp`); 0: no such bound.
    not_after_ms: int = 0
    # A modern client's call: "modern" (to a modern upstream) or "legacy" (to a legacy one, on
    # the shared backend session); "" for a session's call.
    kind: str = ""
    version: str = ""  # the upstream's MCP-Protocol-Version
    name_header: str = ""  # Mcp-Name for the upstream (the routed name, base64 when needed)
    binding: str = ""  # to a modern upstream: the sealed RequestBinding (seal_binding)
    nonce: str = ""  # to a legacy upstream: makes the gateway's ids of this copy unique


def write_decision(metadata: struct_pb2.Struct, namespace: str, decision: Decision, gen: str) -> None:
    """Put the decision into an ext_proc reply's `dynamic_metadata`, in place."""
    fields = metadata.fields[namespace].struct_value.fields[DECISION_KEY].struct_value.fields
    fields["generation"].string_value = gen
    fields["server"].string_value = decision.server
    fields["routed"].string_value = decision.routed_name
    fields["backend"].string_value = decision.backend_id
    fields["authority"].string_value = decision.authority
    fields["path"].string_value = decision.path
    fields["authorization"].string_value = decision.authorization
    fields["mark"].string_value = decision.mark
    fields["ttl_ms"].number_value = decision.lifetime_ms
    fields["timeout"].number_value = decision.replay_timeout_ms
    fields["not_after"].number_value = decision.not_after_ms
    if decision.kind:
        fields["kind"].string_value = decision.kind
        fields["version"].string_value = decision.version
        fields["name_header"].string_value = decision.name_header
        if decision.binding:
            fields["binding"].string_value = decision.binding
        if decision.nonce:
            fields["nonce"].string_value = decision.nonce


def decision_expiries(principal: Principal | None, credential: Credential) -> list[float]:
    """The absolute times a decision may not outlive: the caller's bearer token's `exp` and the
    moment the router would fetch the upstream's next access token."""
    expiries = [principal.expires_at] if principal is not None else []
    if credential.use_until is not None:
        expiries.append(credential.use_until)
    return expiries


def lifetime_within(lifetime_ms: int, expiries: list[float], now: float) -> tuple[int, int]:
    """A decision's lifetime and `not_after_ms`, bounded by absolute expiries (a bearer token's
    `exp`, an upstream access token's use-until): Envoy never applies it past the first."""
    if not expiries:
        return lifetime_ms, 0
    first = min(expiries)
    return min(lifetime_ms, int((first - now) * 1000)), int(first * 1000)


def seal_binding(key: bytes, binding: RequestBinding) -> str:
    """The binding as a header value (ASCII), with its MAC: the router seals an answer only for a
    binding it made itself."""
    payload = json.dumps([binding.server, binding.method, binding.name, binding.principal])
    return f"{_mac(key, payload)}.{payload}"


def open_binding(key: bytes, text: str) -> RequestBinding | None:
    """The binding `seal_binding` made, or None for anything else."""
    mac, _, payload = text.partition(".")
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    try:
        parts = json.loads(payload)
    except ValueError:
        return None
    if not (isinstance(parts, list) and len(parts) == 4 and all(isinstance(p, str) for p in parts)):
        return None
    return RequestBinding(parts[0], parts[1], parts[2], parts[3])


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
