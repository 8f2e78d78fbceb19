"""The `servers:` and `virtualServers:` entries: Kuadrant's keys, unchanged, plus our per-server camelCase keys."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mcp_gateway.config._checks import (
    _AUTH_SCHEME_RE,
    _ENV_NAME_RE,
    _SCHEMES_FOR_TRANSPORT,
    _SERVER_NAME_RE,
    Transport,
    _check_hostname,
    _check_url,
    is_valid_prefix,
    shown_url,
    yaml_kind,
)
from mcp_gateway.config._settings import _check_scope_tokens


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
        raise ValueError(f"expected {expected}, got {yaml_kind(value)}")
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
        raise ValueError(f"expected a string or a list of strings, got {yaml_kind(value)}")

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
        return f"{self.name} ({self.transport} {shown_url(self.url) or ' '.join(self.command or [])})"


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
