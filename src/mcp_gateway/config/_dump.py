"""Diff for hot reload, and the canonical YAML a config dumps to (the controller writes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mcp_gateway.config._document import GatewayConfig

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
