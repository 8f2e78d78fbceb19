"""Our own section, `gateway:` (snake_case keys)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mcp_gateway.config._checks import _ENV_NAME_RE, _check_host_port, _check_url

# --------------------------------------------------------------------------------------------
# our own section


class _Ours(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LimitsSettings(_Ours):
    """Bounds on what a client may send (the protocol parser enforces them)."""

    max_body_bytes: int = Field(default=1_048_576, ge=64, le=64 * 1_048_576)
    max_depth: int = Field(default=64, ge=2, le=256)
    max_batch: int = Field(default=100, ge=1, le=10_000)
    max_string_length: int = Field(default=1_048_576, ge=16)


class SessionSettings(_Ours):
    """Where gateway sessions live and the keys that seal their ids."""

    store: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    keys: list[str] = Field(default_factory=list, repr=False)
    keys_env: str | None = None
    ttl_seconds: int = Field(default=3600, ge=1, le=30 * 86400)
    # How often the broker ends expired sessions' backend sessions upstream (broker/reaper.py).
    reap_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Resumable GET streams (docs/broker.md, "Resumable streams"): per session, the broker keeps
    # its last `replay_events` messages (at most `replay_bytes` bytes) for a client that reconnects
    # with Last-Event-ID, until `replay_linger_seconds` after its last stream closed. Per process.
    # 0 events or 0 seconds: no ids, no replay, nothing kept once the last stream closes.
    replay_events: int = Field(default=128, ge=0, le=100_000)
    replay_bytes: int = Field(default=65_536, ge=0, le=64 * 1024 * 1024)
    replay_linger_seconds: float = Field(default=30.0, ge=0, le=3600)
    # How long a requestState the gateway hands a 2026-07-28 client stays valid (sealed under the
    # session keys), and how long the broker holds a legacy upstream's call waiting for the
    # client's retry (docs/broker.md, "Multi-round-trip results").
    request_state_ttl_seconds: int = Field(default=600, ge=1, le=86_400)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value.startswith("unix://"):  # a socket path has no host to check
            return value
        return _check_url(value, ("redis", "rediss"))

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        for index, key in enumerate(value):
            if len(key.encode()) < 16:
                # the index, never the key: this message is printed and logged
                raise ValueError(f"key #{index} is shorter than 16 bytes")
        return value

    @field_validator("keys_env")
    @classmethod
    def _check_keys_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.fullmatch(value):
            raise ValueError(f"not an environment variable name: {value!r}")
        return value

    @model_validator(mode="after")
    def _check_store(self) -> SessionSettings:
        if self.store == "redis" and not self.redis_url:
            raise ValueError("store redis needs redis_url")
        if self.keys and self.keys_env:
            raise ValueError("give either keys or keys_env, not both")
        return self


class FastPathSettings(_Ours):
    """Envoy applies the router's decision for a (session, name) itself for `ttl_seconds`
    (docs/router.md, "Fast path"): steady-state calls never cross into Python."""

    enabled: bool = True
    # How long an Envoy worker keeps a decision: also the bound on a session ended by DELETE on
    # another worker, or by expiry, still reaching its upstreams (never past the session's end).
    ttl_seconds: float = Field(default=1.0, gt=0, le=60)
    # Larger bodies always take the ext_proc (the fast path validates JSON in Lua).
    max_body_bytes: int = Field(default=65_536, ge=64, le=1_048_576)


class UpstreamRetrySettings(_Ours):
    """How the gateway retries an upstream that failed: delays double from `initial_seconds` up
    to `max_seconds`, each drawn from [(1 - jitter)·d, d] (upstream/backoff.py)."""

    initial_seconds: float = Field(default=0.25, gt=0, le=60)
    max_seconds: float = Field(default=60.0, gt=0, le=3600)
    jitter: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check_order(self) -> UpstreamRetrySettings:
        if self.initial_seconds > self.max_seconds:
            raise ValueError("initial_seconds is more than max_seconds")
        return self


class EnvoySettings(_Ours):
    """The Envoy in front of the gateway (what `mcp-gateway up` starts and configures)."""

    listen: str = "127.0.0.1:8080"
    admin_port: int = Field(default=9901, ge=0, le=65535)
    xds_dir: str | None = None
    fast_path: FastPathSettings = Field(default_factory=FastPathSettings)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _check_host_port(value)


class AuthRule(_Ours):
    """Who may use the tools, prompts and resources whose exposed name (or URI) matches."""

    # fnmatch pattern over exposed (prefixed) tool and prompt names and exposed resource URIs.
    match: str = Field(min_length=1, max_length=512)
    # Every one of these must be in the token's `scope` (or `scp`) claim.
    scopes: list[str] = Field(default_factory=list)
    # Each claim must equal the value, or, when the claim is a list, contain it.
    claims: dict[str, str] = Field(default_factory=dict)

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        return _check_scope_tokens(value)


def _check_scope_tokens(value: list[str]) -> list[str]:
    for scope in value:
        # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if not scope or any(c in ' "\\' or not 0x21 <= ord(c) <= 0x7E for c in scope):
            raise ValueError(f"not an OAuth scope token: {scope[:64]!r}")
    return value


JwsAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_DEFAULT_ALGORITHMS: tuple[JwsAlgorithm, ...] = ("RS256", "ES256")


class AuthSettings(_Ours):
    """Inbound OAuth 2.1: the gateway as an MCP resource server (docs/auth.md). Off unless
    `enabled`; then every request to /mcp needs a bearer JWT from `issuer`."""

    enabled: bool = False
    issuer: str | None = None
    # The issuer's JSON Web Key Set (signature keys), fetched over HTTP and cached.
    jwks_url: str | None = None
    # The protected resource's identifier (RFC 9728 `resource`, RFC 8707): the MCP endpoint's
    # public URL. Default: gateway.public_url.
    resource: str | None = None
    # Accepted `aud` values; default: the resource.
    audiences: list[str] = Field(default_factory=list)
    # Advertised in the metadata document; default: [issuer].
    authorization_servers: list[str] = Field(default_factory=list)
    algorithms: list[JwsAlgorithm] = Field(default_factory=lambda: list(_DEFAULT_ALGORITHMS), min_length=1)
    # Clock skew tolerated on exp, nbf and iat.
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    # How long fetched keys are used before they are fetched again.
    jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86_400)
    # A token signed by an unknown `kid` fetches the keys again, at most this often.
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Needed for any request at all.
    required_scopes: list[str] = Field(default_factory=list)
    # Advertised in the metadata; default: every scope the rules and required_scopes name.
    scopes_supported: list[str] = Field(default_factory=list)
    # Per tool/prompt/resource: the first rule whose `match` fits the exposed name applies; a
    # name no rule matches is open to every valid token.
    rules: list[AuthRule] = Field(default_factory=list)

    @field_validator("issuer", "jwks_url", "resource")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("http", "https"))

    @field_validator("authorization_servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        return [_check_url(v, ("http", "https")) for v in value]

    @field_validator("required_scopes", "scopes_supported")
    @classmethod
    def _check_scope_lists(cls, value: list[str]) -> list[str]:
        return _check_scope_tokens(value)

    @model_validator(mode="after")
    def _check_enabled(self) -> AuthSettings:
        if self.enabled and (self.issuer is None or self.jwks_url is None):
            raise ValueError("auth enabled needs issuer and jwks_url")
        return self


class RateLimit(_Ours):
    """At most `requests` in any `per_seconds`: a token bucket of `requests` tokens, refilled
    whole every `per_seconds` (Envoy's local_ratelimit; docs/configuration.md, "Rate limits")."""

    requests: int = Field(ge=1, le=1_000_000_000)
    # Whole seconds: a refused call's Retry-After says how long to wait, in seconds.
    per_seconds: int = Field(ge=1, le=86_400)


class ToolRateLimit(RateLimit):
    """A limit on every tool whose exposed (prefixed) name matches `tool`, each tool its own
    bucket, counted over all sessions."""

    # An exposed name, or a pattern over exposed names: `*` any run, `?` one character.
    tool: str = Field(min_length=1, max_length=512)

    @field_validator("tool")
    @classmethod
    def _check_tool(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
            raise ValueError(f"a tool pattern is printable ASCII, got {value[:64]!r}")
        if "[" in value or "]" in value:
            # Envoy matches it as a regex; fnmatch's classes are not worth their corner cases.
            raise ValueError(f"a tool pattern has only the wildcards * and ?, got {value[:64]!r}")
        return value


class RateLimitSettings(_Ours):
    """Rate limits Envoy enforces on both the fast and the slow path; none by default. A refused
    request gets HTTP 429, `Retry-After` and a JSON-RPC error with its id (docs/router.md)."""

    # Every POST of one gateway session (initialize has no session yet).
    per_session: RateLimit | None = None
    # tools/call of the tools matching each rule; every matching rule applies.
    per_tool: list[ToolRateLimit] = Field(default_factory=list, max_length=100)
    # Buckets Envoy keeps (one per session, one per limited tool); past it the least recently
    # used is dropped and starts full again when next seen.
    max_buckets: int = Field(default=65_536, ge=16, le=10_000_000)

    @property
    def enabled(self) -> bool:
        return self.per_session is not None or bool(self.per_tool)


class GatewaySettings(_Ours):
    broker_listen: str = "127.0.0.1:8081"
    router_listen: str = "127.0.0.1:9002"
    # /status, /metrics, /healthz and /readyz: a listener of their own that Envoy never routes
    # to, loopback unless said otherwise (the public listener serves only the MCP endpoints).
    admin_listen: str = "127.0.0.1:8090"
    public_url: str | None = None
    allowed_origins: list[str] = Field(default_factory=list)
    page_size: int = Field(default=100, ge=1, le=10_000)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    envoy: EnvoySettings = Field(default_factory=EnvoySettings)
    # List each HTTP upstream also on sessions declaring client capabilities (roots, sampling,
    # elicitation), so items it offers only to such clients reach them (docs/upstream.md).
    capability_variants: bool = True
    upstream_retry: UpstreamRetrySettings = Field(default_factory=UpstreamRetrySettings)
    # Re-list every upstream this long after its last listing, for servers that never announce
    # a change where the gateway hears it (docs/upstream.md, "Re-listing"); 0 turns it off.
    relist_interval_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # Answer `server/discover`, so 2026-07-28 clients in auto mode (the SDK's default) stay on
    # that revision, served statelessly: list changes on subscriptions/listen, the upstreams'
    # sampling, elicitation and roots requests as multi-round-trip results. Off, the probe gets
    # -32601 and such clients fall back to the initialize handshake (as on /mcp/stateful, which
    # never answers it). Clients pinned to 2026-07-28 are served either way.
    serve_discover: bool = True
    # Inbound OAuth 2.1 (docs/auth.md); off by default.
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # Per session and per tool, enforced by Envoy (docs/configuration.md); none by default.
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)

    @model_validator(mode="after")
    def _check_auth_resource(self) -> GatewaySettings:
        if self.auth.enabled and self.auth.resource is None and self.public_url is None:
            raise ValueError("auth enabled needs auth.resource or public_url (the resource's identifier)")
        return self

    @field_validator("broker_listen", "router_listen", "admin_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _check_host_port(value)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("http", "https"))

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"an origin is scheme://host[:port] or *, got {origin!r}")
        return value
