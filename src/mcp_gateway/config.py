"""The gateway config: Kuadrant's mcp-gateway file shape, unchanged, plus our own keys.

A Kuadrant user can point us at the `config.yaml` their controller wrote (or their standalone
file) and it loads: `servers:` entries with name, url, hostname, prefix (or the older
`toolPrefix`), credential, state `Enabled|Disabled` (or the older `enabled: bool`) and the rest
of their keys; `virtualServers:` with name, tools and prompts. Keys of theirs that we do not act
on (auth, caCert, tags, hint, guardrails ...) are accepted and kept, so a file round-trips.
Our own keys live under `gateway:` (snake_case) and a few per-server camelCase keys next to
theirs (`transport`, `command`, `timeoutSeconds`, `credentialEnvVar`).

Every problem is reported at once, each with its dotted path (`servers[2].prefix`), because a
config is fixed in one edit, not in one edit per error. See docs/configuration.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TextIO, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "AuthRule",
    "AuthSettings",
    "ConfigDiff",
    "ConfigError",
    "ConfigProblem",
    "EnvoySettings",
    "FastPathSettings",
    "GatewayConfig",
    "GatewaySettings",
    "LimitsSettings",
    "ServerConfig",
    "SessionSettings",
    "UpstreamOAuth",
    "UpstreamRetrySettings",
    "VirtualServer",
    "check_config_main",
    "config_document",
    "config_warnings",
    "diff_configs",
    "dump_config",
    "is_valid_prefix",
    "load_config",
    "parse_config",
]

# The tool-name alphabet of the MCP spec (names are 1-128 chars of A-Za-z0-9_.-); a prefix is the
# start of such a name, so it uses the same characters and leaves room for at least one more.
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{0,127}")
# RFC 1123 host labels; an HTTPRoute hostname may also start with a `*.` wildcard label.
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 9110 credentials: an auth-scheme token, one space, then the token68 or parameters.
_AUTH_SCHEME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+ +\S")

Transport = Literal["http", "stdio", "websocket"]
_SCHEMES_FOR_TRANSPORT: dict[str, tuple[str, ...]] = {
    "http": ("http", "https"),
    "websocket": ("ws", "wss"),
}


# --------------------------------------------------------------------------------------------
# problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config. `path` is dotted (`servers[2].prefix`); "" = the file.
    `line` (1-based) is where that path is in the YAML text, when it is there at all."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot be used, with every problem found (never just the first)."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(
            f"{source}: {len(self.problems)} problem(s):\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


# --------------------------------------------------------------------------------------------
# value checks shared by the models


def _check_host_port(value: str) -> str:
    """`host:port` for a listening socket; IPv6 hosts in brackets (`[::1]:8080`)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"malformed IPv6 host in {value!r}")
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets: [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number 0-65535, got {port!r}")
    return value


def _shown_url(value: str) -> str:
    """The URL as we may print it: any `user:password@` replaced, since messages get logged."""
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


def _check_url(value: str, schemes: Iterable[str]) -> str:
    allowed = tuple(schemes)
    shown = _shown_url(value)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in allowed:
        scheme = parts.scheme or "none"
        raise ValueError(f"scheme must be {' or '.join(allowed)}, got {scheme} in {shown!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {shown!r}")
    if port == 0:
        raise ValueError(f"URL port 0 is not connectable: {shown!r}")
    if any(ch.isspace() for ch in value):
        raise ValueError("URL contains whitespace")
    return value


def _check_hostname(value: str) -> str:
    name = value[2:] if value.startswith("*.") else value
    if len(value) > 253 or not name:
        raise ValueError(f"not a valid hostname: {value!r}")
    if not all(_LABEL_RE.fullmatch(label) for label in name.rstrip(".").split(".")):
        raise ValueError(
            f"not a valid hostname: {value!r} (labels of A-Z a-z 0-9 -, no port, no scheme)"
        )
    return value


def is_valid_prefix(prefix: str) -> bool:
    return _PREFIX_RE.fullmatch(prefix) is not None


# --------------------------------------------------------------------------------------------
# Kuadrant's nested objects: accepted and kept; we do not act on them


class _Theirs(BaseModel):
    """A Kuadrant sub-object: its known keys, nothing else (a typo should not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class AuthConfig(_Theirs):
    type: str = ""
    token: str | None = Field(default=None, repr=False)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)


class TokenURLElicitation(_Theirs):
    url: str | None = None
    header_name: str | None = Field(default=None, alias="headerName")
    header_value_format: str | None = Field(default=None, alias="headerValueFormat")


class CredentialURLElicitation(_Theirs):
    url: str | None = None


def _one_of_kinds(value: Any, kinds: tuple[type, ...], expected: str) -> Any:
    """One clear message for a key Kuadrant typed loosely, instead of one per union member."""
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"expected {expected}, got {_yaml_kind(value)}")
    return value


class ServerTimeouts(_Theirs):
    """Kuadrant's per-server tool-call timeouts (Go durations such as `30s`); kept, not acted
    on: our `timeoutSeconds` is the bound we apply."""

    tool_call: Any = Field(default=None, alias="toolCall")
    per_tool: dict[str, Any] = Field(default_factory=dict, alias="perTool")

    @field_validator("tool_call")
    @classmethod
    def _check_tool_call(cls, value: Any) -> Any:
        if value is None:
            return None
        return _one_of_kinds(value, (str, int, float), "a duration such as 30s")

    @field_validator("per_tool")
    @classmethod
    def _check_per_tool(cls, value: dict[str, Any]) -> dict[str, Any]:
        for duration in value.values():
            _one_of_kinds(duration, (str, int, float), "a duration such as 30s")
        return value


class A2AServer(_Theirs):
    """An entry of Kuadrant's experimental `a2aServers:`; kept, not acted on."""

    name: str
    url: str = ""
    hostname: str | None = None
    prefix: str | None = None
    auth: AuthConfig | None = Field(default=None, repr=False)
    enabled: bool = True
    agent_id: str | None = Field(default=None, alias="agentId")
    agent_card_url: str | None = Field(default=None, alias="agentCardUrl")
    task_endpoint: str | None = Field(default=None, alias="taskEndpoint")
    protocol_binding: str | None = Field(default=None, alias="protocolBinding")
    metadata: dict[str, str] = Field(default_factory=dict)


class GuardrailsConfig(_Theirs):
    url: str = ""
    config_ids: list[str] = Field(default_factory=list, alias="configIDs")
    model: str = ""
    fail_mode: str | None = Field(default=None, alias="failMode")


# --------------------------------------------------------------------------------------------
# servers


TokenEndpointAuthMethod = Literal["client_secret_basic", "client_secret_post"]


class UpstreamOAuth(BaseModel):
    """OAuth 2.0 client credentials (RFC 6749 §4.4) for one upstream: the gateway asks
    `tokenUrl` for an access token and sends it as `Authorization: Bearer …`, refreshed before it
    expires (upstream/credentials.py, docs/upstream.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    token_url: str = Field(alias="tokenUrl")
    client_id: str = Field(alias="clientId", min_length=1, max_length=1024)
    # The secret itself never sits in the file: it is read from this environment variable.
    client_secret_env_var: str = Field(alias="clientSecretEnvVar")
    scopes: list[str] = Field(default_factory=list)
    # RFC 8707 `resource` (the upstream's identifier), and `audience` for servers that ask for it.
    resource: str | None = None
    audience: str | None = Field(default=None, min_length=1, max_length=1024)
    # How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
    auth_method: TokenEndpointAuthMethod = Field(default="client_secret_basic", alias="authMethod")

    _client_secret: str = PrivateAttr(default="")

    @field_validator("token_url")
    @classmethod
    def _check_token_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, value: str | None) -> str | None:
        # RFC 8707 §2: an absolute URI without a fragment.
        if value is not None and ("#" in value or not urlsplit(value).scheme):
            raise ValueError(f"an absolute URI without a fragment, got {value[:200]!r}")
        return value

    @field_validator("client_secret_env_var")
    @classmethod
    def _check_secret_env(cls, value: str) -> str:
        if not _ENV_NAME_RE.fullmatch(value):
            raise ValueError(f"not an environment variable name: {value!r}")
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        return _check_scope_tokens(value)

    @property
    def client_secret(self) -> str:
        """The secret read from `clientSecretEnvVar` at load time ("" for a disabled server)."""
        return self._client_secret


class ServerConfig(BaseModel):
    """One upstream MCP server (a `servers:` entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    # -- Kuadrant's keys --
    name: str
    transport: Transport = "http"  # ours; declared before url/command so their checks can see it
    url: str = Field(default="", validate_default=True)
    hostname: str | None = None
    prefix: str = ""
    enabled: bool = True
    # `state` is how current Kuadrant says `enabled`: folded into `enabled` before validation; this
    # field only exists to report a state that is neither (read `enabled` or `state_name`).
    invalid_state: Literal["Enabled", "Disabled", ""] | None = Field(
        default=None, alias="state", repr=False, exclude=True
    )
    credential: str | None = Field(default=None, repr=False)
    auth: AuthConfig | None = Field(default=None, repr=False)
    ca_cert: str | None = Field(default=None, alias="caCert", repr=False)
    token_url_elicitation: TokenURLElicitation | None = Field(
        default=None, alias="tokenURLElicitation"
    )
    user_specific_list: bool = Field(default=False, alias="userSpecificList")
    category: Any = None  # a string in older Kuadrant, a list of strings in newer
    hint: str | None = None
    tags: list[str] = Field(default_factory=list)
    guardrails_config_ids: list[str] = Field(default_factory=list, alias="guardrailsConfigIDs")
    credential_url_elicitation: CredentialURLElicitation | None = Field(
        default=None, alias="credentialURLElicitation"
    )
    timeouts: ServerTimeouts | None = None
    # -- ours (credentialEnvVar was Kuadrant's too, with the same meaning, before `credential`) --
    command: list[str] | None = Field(default=None, validate_default=True)
    timeout_seconds: float = Field(default=30.0, alias="timeoutSeconds", gt=0, le=3600)
    # stdio: set in the server process's environment, over the gateway's own (values are secrets:
    # API keys travel this way; never printed or logged).
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    credential_env_var: str | None = Field(default=None, alias="credentialEnvVar")
    # ours: an OAuth 2.0 client-credentials token instead of a fixed credential.
    oauth: UpstreamOAuth | None = None

    _credential_from_env: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _fold_legacy_keys(cls, data: Any) -> Any:
        """`toolPrefix` (Kuadrant's older name) is `prefix`; `state` and `enabled` must agree."""
        if not isinstance(data, Mapping):
            return data
        # Go reads `key:` (null) as the field's zero value; here that is the default.
        data = {key: value for key, value in data.items() if value is not None}
        if "toolPrefix" in data:
            legacy = data.pop("toolPrefix")
            if "prefix" in data and data["prefix"] != legacy:
                raise ValueError("`prefix` and `toolPrefix` (its old name) disagree; keep one")
            data["prefix"] = legacy
        state = data.get("state")
        if state in ("Enabled", "Disabled", ""):
            # Folded into `enabled` and dropped, so `state: Enabled` and no state compare equal.
            del data["state"]
            from_state = state != "Disabled"
            given = data.get("enabled")
            if isinstance(given, bool) and given != from_state:
                raise ValueError(f"`state: {state}` contradicts `enabled: {str(given).lower()}`")
            data["enabled"] = from_state
        if isinstance(data.get("command"), str):
            data["command"] = shlex.split(data["command"])
        return data

    @field_validator("category")
    @classmethod
    def _check_category(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ValueError(f"expected a string or a list of strings, got {_yaml_kind(value)}")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _SERVER_NAME_RE.fullmatch(value):
            raise ValueError(
                "must be 1-253 chars of A-Z a-z 0-9 . _ : / @ - starting with a letter or digit"
            )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        transport = info.data.get("transport")
        if transport is None:  # transport itself was invalid; that is reported on its own
            return value
        if transport == "stdio":
            return value
        if not value:
            raise ValueError(f"required for transport {transport}")
        return _check_url(value, _SCHEMES_FOR_TRANSPORT[transport])

    @field_validator("hostname")
    @classmethod
    def _check_hostname(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        return _check_hostname(value)

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not is_valid_prefix(value):
            raise ValueError(
                f"invalid prefix {value!r}: at most 127 chars of A-Z a-z 0-9 _ . - "
                "(the characters of MCP tool names)"
            )
        return value

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        transport = info.data.get("transport")
        if transport == "stdio" and not value:
            raise ValueError("transport stdio needs a command (the program and its arguments)")
        if transport in ("http", "websocket") and value:
            raise ValueError(f"only a stdio server has a command, this one is {transport}")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if value and info.data.get("transport", "stdio") != "stdio":
            raise ValueError("only a stdio server has an environment of its own")
        for name in value:
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"not an environment variable name: {name!r}")
        return value

    @field_validator("credential_env_var")
    @classmethod
    def _check_env_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _ENV_NAME_RE.fullmatch(value):
            raise ValueError(f"not an environment variable name: {value!r}")
        if info.data.get("credential") is not None:
            raise ValueError("give either `credential` or `credentialEnvVar`, not both")
        # A disabled server needs no credential; it is read when a reload enables the server.
        if info.data.get("enabled", True) and not os.environ.get(value):
            raise ValueError(f"environment variable {value} is not set (or empty)")
        return value

    @model_validator(mode="after")
    def _resolve_credential_env(self) -> ServerConfig:
        if self.credential_env_var is None or not self.enabled:
            return self
        # Frozen model: the resolved value is set once, here, while validation builds it.
        object.__setattr__(self, "credential", os.environ[self.credential_env_var])
        self._credential_from_env = True
        return self

    @model_validator(mode="after")
    def _check_oauth(self) -> ServerConfig:
        if self.oauth is None:
            return self
        if self.credential is not None or self.credential_env_var is not None:
            raise ValueError("give either `oauth` or `credential`/`credentialEnvVar`, not both")
        if self.transport == "stdio":
            raise ValueError("a stdio server has no HTTP requests to carry an OAuth token")
        if not self.enabled:
            return self  # its secret is read when a reload enables it
        variable = self.oauth.client_secret_env_var
        secret = os.environ.get(variable)
        if not secret:
            raise ValueError(f"oauth.clientSecretEnvVar: environment variable {variable} is not set (or empty)")
        # Frozen model: set once, while validation builds it.
        self.oauth._client_secret = secret
        return self

    @property
    def path(self) -> str:
        """The path part of the url (`/mcp`), what Envoy rewrites `:path` to for this upstream."""
        return urlsplit(self.url).path or "/"

    @property
    def authorization(self) -> str | None:
        """The `Authorization` header value for this upstream, or None.

        Kuadrant's `credential` is the whole header value (`Bearer abc`, `Basic ...`, `APIKEY k`)
        and is sent as it is; a bare token (no `scheme ` in front) is sent as `Bearer <token>`.
        """
        if not self.credential:
            return None
        if _AUTH_SCHEME_RE.match(self.credential):
            return self.credential
        return f"Bearer {self.credential}"

    @property
    def state_name(self) -> Literal["Enabled", "Disabled"]:
        return "Enabled" if self.enabled else "Disabled"

    def __str__(self) -> str:
        return f"{self.name} ({self.transport} {_shown_url(self.url) or ' '.join(self.command or [])})"


class VirtualServer(BaseModel):
    """A named subset of the aggregated tools (Kuadrant's MCPVirtualServer)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    tools: list[str] = Field(default_factory=list)
    prompts: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="before")
    @classmethod
    def _null_lists(cls, data: Any) -> Any:
        # Go's YAML writer emits `tools: null` for an empty list.
        if isinstance(data, Mapping):
            lists = ("tools", "prompts", "resources")
            data = {k: ([] if k in lists and v is None else v) for k, v in data.items()}
        return data


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


# --------------------------------------------------------------------------------------------
# the whole file


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    servers: list[ServerConfig] = Field(default_factory=list)
    virtual_servers: list[VirtualServer] = Field(default_factory=list, alias="virtualServers")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    # Kuadrant's top-level keys we accept and keep but do not act on.
    gateway_ca_cert_pem: str | None = Field(default=None, alias="gatewayCACertPEM", repr=False)
    ca_cert_bundle: str | None = Field(default=None, alias="caCertBundle", repr=False)
    global_guardrails: GuardrailsConfig | None = Field(default=None, alias="globalGuardrails")
    global_guardrails_config_ids: list[str] = Field(
        default_factory=list, alias="globalGuardrailsConfigIDs"
    )
    a2a_servers: list[A2AServer] = Field(default_factory=list, alias="a2aServers")
    # The first standalone broker's own settings; `gateway:` holds ours.
    port: int | None = None
    bind_addr: str | None = Field(default=None, alias="bindAddr")
    log_level: str | None = Field(default=None, alias="logLevel")

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, data: Any) -> Any:
        # `servers:` with nothing under it is YAML null; Kuadrant treats it as no servers.
        if isinstance(data, Mapping):
            defaults: dict[str, Any] = {"servers": [], "virtualServers": [], "gateway": {}}
            data = {k: (defaults[k] if v is None and k in defaults else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _check_across_servers(self, info: ValidationInfo) -> GatewayConfig:
        if info.context and info.context.get("cross_checked"):
            return self  # parse_config ran these checks on the raw data, with paths
        problems = _cross_problems(
            [s.model_dump(by_alias=True) for s in self.servers],
            [v.model_dump() for v in self.virtual_servers],
        )
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return self

    def server(self, name: str) -> ServerConfig | None:
        for server in self.servers:
            if server.name == name:
                return server
        return None

    def enabled_servers(self) -> list[ServerConfig]:
        return [server for server in self.servers if server.enabled]

    def secrets(self) -> list[str]:
        """Every secret value this config holds, for `logs.register_secrets` (never log them)."""
        found: list[str | None] = list(self.gateway.sessions.keys)
        for server in self.servers:
            found.append(server.credential)
            found += server.env.values()
            if server.oauth is not None:
                found.append(server.oauth.client_secret)
        for auth in [s.auth for s in self.servers] + [a.auth for a in self.a2a_servers]:
            if auth is not None:
                found += [auth.token, auth.password]
        return [value for value in found if value]


def _cross_problems(servers: Sequence[Any], virtual_servers: Sequence[Any]) -> list[ConfigProblem]:
    """Rules that span entries: unique names, unambiguous prefixes. Works on raw (unvalidated)
    data too, so a duplicate name is reported next to a bad URL in the same entry."""
    return [
        *_duplicate_names(servers, "servers", "server"),
        *_prefix_problems(servers),
        *_duplicate_names(virtual_servers, "virtualServers", "virtual server"),
    ]


def _duplicate_names(entries: Sequence[Any], section: str, noun: str) -> Iterator[ConfigProblem]:
    first_by_name: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in first_by_name:
            yield ConfigProblem(
                f"{section}[{index}].name",
                f"duplicate {noun} name {name!r}, first used by {section}[{first_by_name[name]}]",
            )
        else:
            first_by_name[name] = index


def _prefix_problems(servers: Sequence[Any]) -> Iterator[ConfigProblem]:
    """The router maps a tool name to its server by prefix; that must never have two answers."""
    seen: list[tuple[int, str]] = []  # (index, prefix) of the servers before this one
    unprefixed: int | None = None
    for index, entry in enumerate(servers):
        if not isinstance(entry, Mapping):
            continue
        key = "toolPrefix" if "toolPrefix" in entry and "prefix" not in entry else "prefix"
        prefix = entry.get(key) or ""
        if not isinstance(prefix, str) or not is_valid_prefix(prefix):
            continue  # reported on its own
        path = f"servers[{index}].{key}"
        if prefix == "":
            if unprefixed is not None:
                yield ConfigProblem(
                    path,
                    f"a second server without a prefix (servers[{unprefixed}] has none too): "
                    "unprefixed tool names would be ambiguous",
                )
            unprefixed = index if unprefixed is None else unprefixed
            continue
        for earlier_index, earlier in seen:
            if earlier == prefix:
                yield ConfigProblem(path, f"prefix {prefix!r} is already used by servers[{earlier_index}]")
            elif prefix.startswith(earlier) or earlier.startswith(prefix):
                yield ConfigProblem(
                    path,
                    f"prefix {prefix!r} and {earlier!r} of servers[{earlier_index}] overlap: "
                    "a tool name could belong to either",
                )
        seen.append((index, prefix))


# --------------------------------------------------------------------------------------------
# loading


# libyaml's parser when PyYAML was built with it: 3x faster on a controller-sized config.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    duplicate_keys: list[tuple[str, yaml.Mark]]


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            is_duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            continue
        if is_duplicate:
            loader.duplicate_keys.append((str(key), key_node.start_mark))
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def _read_yaml(text: str) -> tuple[Any, yaml.Node | None, list[ConfigProblem]]:
    """The document, its node tree (for line numbers) and the problems of the YAML itself."""
    try:
        loader = _StrictLoader(text)  # the reader rejects control characters right here
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error_problem(exc, text)]
    loader.duplicate_keys = []
    try:
        node = loader.get_single_node()
        document = None if node is None else loader.construct_document(node)
    except RecursionError:
        return None, None, [ConfigProblem("", "YAML nested too deeply")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        return None, None, [ConfigProblem("", f"YAML syntax error at {where}{what}")]
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error_problem(exc, text)]
    finally:
        loader.dispose()
    problems = [
        ConfigProblem("", f"duplicate key {key!r} at line {mark.line + 1}: YAML keeps only one")
        for key, mark in loader.duplicate_keys
    ]
    return document, node, problems


def _yaml_error_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        # YAML forbids most control characters; say which and where, in one line.
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return ConfigProblem(
            "", f"character {exc.character:#06x} at line {line}, column {column} is not allowed in YAML"
        )
    return ConfigProblem("", "YAML error: " + " ".join(str(exc).split()))


def _line_of(root: yaml.Node | None, path: str) -> int | None:
    """The line of `path` in the node tree: of the key for a mapping entry, of the item for a
    list entry; the deepest part of the path that exists (an unknown key's own line)."""
    if root is None or not path:
        return None
    node, line = root, None
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        elif name and isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if getattr(k, "value", None) == name), None)
            if entry is None:
                break
            line = entry[0].start_mark.line + 1
            node = entry[1]
        else:
            break
    return line


def _format_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _known_keys(model: type[BaseModel]) -> list[str]:
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return keys + (["toolPrefix"] if model is ServerConfig else [])


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as `list[ServerConfig]` or `AuthConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose key set applies at `loc` (used to suggest a fix for a typo)."""
    model: type[BaseModel] | None = GatewayConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = None if field is None else _model_in(field.annotation)
    return model


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        model = _model_at(loc[:-1])
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(key, _known_keys(model), n=1)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        return f"unknown key{hint}"
    if kind == "missing":
        return "required"
    if kind in _EXPECTED:
        # The kind of value found, never the value: it may be a misplaced credential.
        found = error.get("input")
        message = f"expected {_EXPECTED[kind]}, got {_yaml_kind(found)}"
        if kind == "string_type" and isinstance(found, bool | int | float):
            message += " (YAML reads yes/no/on/off/true/false and numbers as such: quote the value)"
        return message
    message = str(error["msg"])
    for noise in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(noise)
    return message.replace("Input should be", "must be")


_EXPECTED = {
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "list_type": "a list",
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
}


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    for types, name in (
        (bool, "a boolean"),
        (int, "a whole number"),
        (float, "a decimal number"),
        (str, "a string"),
        (list, "a list"),
        (Mapping, "a mapping"),
    ):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"  # YAML dates and timestamps


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):  # the input is used for its type only
        loc = [part for part in item["loc"] if not _is_union_tag(part)]
        problems.append(ConfigProblem(_format_path(loc), _message({**item, "loc": loc})))
    return problems


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried (`list[str]`, `str`, `function-after[...]`)
    return isinstance(part, str) and (
        "[" in part or part in ("str", "int", "float", "bool", "none", "list")
    )


def parse_config(text: str, source: str = "<string>") -> GatewayConfig:
    """Validate a config document; raise `ConfigError` listing every problem."""
    if not text.strip():
        raise ConfigError([ConfigProblem("", "the file is empty (an empty config is `servers: []`)")], source)
    document, root, problems = _read_yaml(text)
    if problems and document is None:
        if _CLIENT_JSONC_RE.match(text):  # VS Code's mcp.json has comments: not YAML
            problems = [ConfigProblem("", _CLIENT_CONFIG)]
        raise ConfigError(problems, source)
    if document is None and not problems:
        raise ConfigError([ConfigProblem("", "the file is empty (an empty config is `servers: []`)")], source)
    if not isinstance(document, Mapping):
        kind = "nothing" if document is None else type(document).__name__
        problems.append(ConfigProblem("", f"the top level must be a mapping of keys, got {kind}"))
        raise ConfigError(problems, source)
    if _is_client_config(document):
        raise ConfigError([ConfigProblem("", _CLIENT_CONFIG)], source)
    try:
        config = GatewayConfig.model_validate(document, context={"cross_checked": True})
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
        config = None
    servers = document.get("servers")
    virtual = document.get("virtualServers")
    problems.extend(
        _cross_problems(
            servers if isinstance(servers, list) else [],
            virtual if isinstance(virtual, list) else [],
        )
    )
    if problems or config is None:
        located = [replace(p, line=_line_of(root, p.path)) if p.line is None else p for p in problems]
        raise ConfigError(_sorted_unique(located), source)
    return config


_CLIENT_CONFIG = (
    "this is an MCP client's config (Claude Desktop, VS Code or Cursor), not a gateway config: "
    "`mcp-gateway import FILE` converts it"
)


_CLIENT_JSONC_RE = re.compile(r'\s*(//[^\n]*\n\s*|/\*.*?\*/\s*)*\{.*"(mcpServers|servers)"\s*:\s*\{', re.DOTALL)


def _is_client_config(document: Mapping[str, Any]) -> bool:
    """`mcpServers:` (Claude Desktop, Cursor), or `servers:` as a mapping of name to entry (VS
    Code's .vscode/mcp.json, or its settings' `mcp:` section): see importer.py."""
    if isinstance(document.get("mcpServers"), Mapping):
        return True
    servers = document.get("servers")
    if isinstance(document.get("mcp"), Mapping):
        servers = document["mcp"].get("servers")
    # `servers: {name: a}` is one entry written without its `-`, not a map of entries.
    return isinstance(servers, Mapping) and all(isinstance(v, Mapping) for v in servers.values())


def _sorted_unique(problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
    def order(problem: ConfigProblem) -> tuple[Any, ...]:
        # file-level first, then by line, then by path with numeric indexes (servers[2] < [10])
        parts = re.split(r"\[(\d+)\]", problem.path)  # names at even places, indexes at odd
        line = problem.line if problem.line is not None else sys.maxsize
        return (problem.path != "", line, [int(p) if i % 2 else p for i, p in enumerate(parts)])

    return sorted(dict.fromkeys(problems), key=order)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    source = os.fspath(path)
    return parse_config(_read_config_text(source), source)


def _read_config_text(source: str) -> str:
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", "no such file")], source) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem("", "is a directory, not a config file")], source) from None
    except PermissionError:
        raise ConfigError([ConfigProblem("", "permission denied")], source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem("", f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})")],
            source,
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read: {exc.strerror or exc}")], source) from None
    return text


# --------------------------------------------------------------------------------------------
# diff for hot reload


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What a reload changes. Server names, in config order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    virtual_servers_changed: bool = False
    gateway_changed: bool = False

    @property
    def servers_changed(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def __bool__(self) -> bool:
        return self.servers_changed or self.virtual_servers_changed or self.gateway_changed


def diff_configs(old: GatewayConfig, new: GatewayConfig) -> ConfigDiff:
    """Servers added, removed or changed in any key (credential included) between two configs."""
    old_by_name = {server.name: server for server in old.servers}
    new_by_name = {server.name: server for server in new.servers}
    return ConfigDiff(
        added=tuple(name for name in new_by_name if name not in old_by_name),
        removed=tuple(name for name in old_by_name if name not in new_by_name),
        changed=tuple(
            name
            for name, server in new_by_name.items()
            if name in old_by_name and old_by_name[name] != server
        ),
        virtual_servers_changed=old.virtual_servers != new.virtual_servers,
        gateway_changed=old.gateway != new.gateway,
    )


# --------------------------------------------------------------------------------------------
# canonical output


def config_document(config: GatewayConfig) -> dict[str, Any]:
    """The config as plain data in file shape: Kuadrant keys in their spelling, defaults left out,
    a credential read from the environment written back as its variable name, not its value."""
    servers = []
    for server in config.servers:
        entry = server.model_dump(by_alias=True, exclude_defaults=True, exclude={"enabled", "credential"})
        entry["name"] = server.name
        if server.transport != "stdio" or server.url:
            entry["url"] = server.url
        if server.credential is not None and not server._credential_from_env:
            entry["credential"] = server.credential
        entry["state"] = server.state_name
        servers.append(entry)
    document: dict[str, Any] = {
        "servers": servers,
        "virtualServers": [vs.model_dump(exclude_defaults=True) | {"name": vs.name} for vs in config.virtual_servers],
    }
    # Kuadrant's other top-level keys, kept as they came.
    document |= config.model_dump(
        by_alias=True, exclude_defaults=True, exclude={"servers", "virtual_servers", "gateway"}
    )
    gateway = config.gateway.model_dump(exclude_defaults=True)
    if gateway:
        document["gateway"] = gateway
    return document


class _CanonicalDumper(yaml.SafeDumper):
    """PyYAML with allow_unicode writes NEL, LS and PS raw inside plain or single-quoted scalars,
    where YAML reads them back as line breaks (folded to a space): such strings are written
    double-quoted, where the emitter escapes them (as \\N, \\L, \\P)."""


_YAML_LINE_BREAKS = ("\x85", "\u2028", "\u2029")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(b in value for b in _YAML_LINE_BREAKS) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CanonicalDumper.add_representer(str, _represent_str)


def dump_config(config: GatewayConfig) -> str:
    """Canonical YAML: same config → same bytes (keys sorted), so a writer can skip no-op updates.
    `parse_config(dump_config(c)) == c` for every valid config."""
    return yaml.dump(
        config_document(config),
        Dumper=_CanonicalDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
    )


# --------------------------------------------------------------------------------------------
# `mcp-gateway check-config FILE`


def check_config_main(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        text = _read_config_text(path)
        config = parse_config(text, path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return 1
    print(_summary(path, config), file=out)
    _, root, _ = _read_yaml(text)
    for warning in config_warnings(config):
        print(f"warning: {replace(warning, line=_line_of(root, warning.path))}", file=out)
    return 0


_NOT_USED = {
    "auth": "kept but not used: put the whole Authorization header value in `credential`",
    "caCert": "kept but not used: https upstreams are verified against the default CA bundle",
    "timeouts": "kept but not used: the gateway applies `timeoutSeconds`",
    "tokenURLElicitation": "kept but not used",
    "credentialURLElicitation": "kept but not used",
    "userSpecificList": "kept but not used",
    "guardrailsConfigIDs": "kept but not used",
}
_TOP_LEVEL_NOT_USED = {
    "a2aServers": "kept but not used",
    "globalGuardrails": "kept but not used",
    "globalGuardrailsConfigIDs": "kept but not used",
    "gatewayCACertPEM": "kept but not used",
    "caCertBundle": "kept but not used",
    "port": "kept but not used: set gateway.broker_listen",
    "bindAddr": "kept but not used: set gateway.broker_listen",
    "logLevel": "kept but not used: the log level is the command line's",
}


def config_warnings(config: GatewayConfig) -> list[ConfigProblem]:
    """What is valid but probably not what the operator wants: Kuadrant keys we keep without
    acting on them, and a credential that would travel unencrypted."""
    warnings = []
    for index, server in enumerate(config.servers):
        given = server.model_dump(by_alias=True, exclude_defaults=True)
        warnings += [ConfigProblem(f"servers[{index}].{key}", why) for key, why in _NOT_USED.items() if key in given]
        url = urlsplit(server.url)
        if (server.credential or server.oauth) and url.scheme in ("http", "ws") and not _is_loopback(url.hostname):
            warnings.append(
                ConfigProblem(
                    f"servers[{index}].url",
                    f"the credential would cross the network unencrypted: use {url.scheme}s",
                )
            )
        token_url = urlsplit(server.oauth.token_url) if server.oauth is not None else None
        if token_url is not None and token_url.scheme == "http" and not _is_loopback(token_url.hostname):
            warnings.append(
                ConfigProblem(
                    f"servers[{index}].oauth.tokenUrl",
                    "the client secret would cross the network unencrypted: use https",
                )
            )
    given = config.model_dump(by_alias=True, exclude_defaults=True)
    warnings += [ConfigProblem(key, why) for key, why in _TOP_LEVEL_NOT_USED.items() if given.get(key)]
    return warnings


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _summary(path: str, config: GatewayConfig) -> str:
    header = ("NAME", "PREFIX", "URL", "TRANSPORT", "STATE")
    rows = [
        (
            server.name,
            server.prefix or '""',
            _shown_url(server.url) or " ".join(shlex.quote(arg) for arg in server.command or []),
            server.transport,
            server.state_name,
        )
        for server in config.servers
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{path}: valid, {len(config.servers)} server(s), "
             f"{len(config.enabled_servers())} enabled, {len(config.virtual_servers)} virtual server(s)"]
    if rows:
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                  for row in [header, *rows]]
    settings = config.gateway
    lines.append(
        f"envoy {settings.envoy.listen}  broker {settings.broker_listen}  "
        f"router {settings.router_listen}  admin {settings.admin_listen}  "
        f"sessions {settings.sessions.store}"
    )
    return "\n".join(lines)
