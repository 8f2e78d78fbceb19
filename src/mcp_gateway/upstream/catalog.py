"""What an upstream offers, kind by kind, and the checks it must pass before we federate it.

Tools, prompts, resources and resource templates are all "a paginated list keyed by a name,
refreshed on a list_changed notification"; one `ListKind` row describes each, so the supervisor
and the broker treat them alike and federating a new kind is a new row, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_gateway.protocol import SUPPORTED_VERSIONS, is_valid_tool_name

MAX_TOOL_NAME_LENGTH = 128  # MCP 2025-11-25; a prefixed name must fit too

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListKind:
    kind: str  # our name for it, also the key in /status
    method: str  # the list method
    result_key: str  # the list inside its result
    capability: str  # the server capability that announces it
    changed_notification: str  # the notification that says "list again"
    id_field: str  # the field that names one item


TOOLS = ListKind(
    "tools", "tools/list", "tools", "tools", "notifications/tools/list_changed", "name"
)
PROMPTS = ListKind(
    "prompts", "prompts/list", "prompts", "prompts", "notifications/prompts/list_changed", "name"
)
RESOURCES = ListKind(
    "resources",
    "resources/list",
    "resources",
    "resources",
    "notifications/resources/list_changed",
    "uri",
)
RESOURCE_TEMPLATES = ListKind(
    "resource_templates",
    "resources/templates/list",
    "resourceTemplates",
    "resources",
    "notifications/resources/list_changed",
    "uriTemplate",
)
KINDS: tuple[ListKind, ...] = (TOOLS, PROMPTS, RESOURCES, RESOURCE_TEMPLATES)
KIND_BY_NAME = {k.kind: k for k in KINDS}


@dataclass(frozen=True, slots=True)
class Rejected:
    item: str
    reason: str


@dataclass(frozen=True, slots=True)
class ServerCatalog:
    """One upstream's accepted items per kind, in the order the upstream listed them."""

    items: dict[str, tuple[JsonObject, ...]] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()

    def of(self, kind: ListKind) -> tuple[JsonObject, ...]:
        return self.items.get(kind.kind, ())

    def count(self, kind: ListKind) -> int:
        return len(self.of(kind))


def validate_initialize(result: JsonObject) -> list[str]:
    """Problems that make an upstream unusable (empty list: usable)."""
    problems = []
    version = result.get("protocolVersion")
    if version not in SUPPORTED_VERSIONS:
        problems.append(f"unsupported protocol revision {version!r}")
    capabilities = result.get("capabilities")
    if not isinstance(capabilities, dict):
        problems.append("no capabilities object")
    elif not any(isinstance(capabilities.get(k.capability), dict) for k in KINDS):
        problems.append("offers none of tools, prompts, resources")
    return problems


def offered_kinds(initialize_result: JsonObject) -> tuple[ListKind, ...]:
    capabilities = initialize_result.get("capabilities") or {}
    return tuple(k for k in KINDS if isinstance(capabilities.get(k.capability), dict))


def announces_list_changed(initialize_result: JsonObject, kind: ListKind) -> bool:
    capability = (initialize_result.get("capabilities") or {}).get(kind.capability) or {}
    return bool(isinstance(capability, dict) and capability.get("listChanged"))


def check_item(kind: ListKind, item: JsonObject, prefix: str = "") -> str | None:
    """Why `item` cannot be federated under `prefix`, or None when it can."""
    identity = item.get(kind.id_field)
    if not isinstance(identity, str) or not identity:
        return f"missing {kind.id_field}"
    if kind.id_field == "name" and len(prefix) + len(identity) > MAX_TOOL_NAME_LENGTH:
        return f"name longer than {MAX_TOOL_NAME_LENGTH} characters with prefix {prefix!r}"
    if kind is TOOLS:
        if not is_valid_tool_name(identity):
            return "invalid tool name"
        schema = item.get("inputSchema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return "inputSchema is not an object schema"
    return None


def accept_items(
    kind: ListKind, items: list[JsonObject], prefix: str = ""
) -> tuple[tuple[JsonObject, ...], list[Rejected]]:
    """Split a listed page set into federated items and rejected ones (duplicates included)."""
    accepted: list[JsonObject] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for item in items:
        reason = check_item(kind, item, prefix)
        identity = str(item.get(kind.id_field, "?"))[:200]
        if reason is None and identity in seen:
            reason = f"duplicate {kind.id_field}"
        if reason is not None:
            rejected.append(Rejected(f"{kind.kind}:{identity}", reason))
            continue
        seen.add(identity)
        accepted.append(item)
    return tuple(accepted), rejected
