"""The whole file: `GatewayConfig`, and the problems only the whole file shows (duplicate names, clashing prefixes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from mcp_gateway.config._checks import is_valid_prefix
from mcp_gateway.config._problems import ConfigProblem
from mcp_gateway.config._servers import A2AServer, GuardrailsConfig, ServerConfig, VirtualServer
from mcp_gateway.config._settings import GatewaySettings


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
