"""What an upstream offers, kind by kind, and the checks it must pass before we federate it.

Tools, prompts, resources and resource templates are all "a paginated list keyed by a name,
refreshed on a list_changed notification"; one `ListKind` row describes each, so the supervisor
and the broker treat them alike and federating a new kind is a new row, not new code.
"""

from __future__ import annotations

from collections.abc import Mapping
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


# What a listing says about caching it (MCP 2026-07-28 `ttlMs`, `cacheScope`): (None, None)
# when it says nothing, as every upstream that opens with initialize.
CacheHint = tuple[int | None, str | None]
NO_CACHE_HINT: CacheHint = (None, None)


def listing_cache_hint(pages: list[JsonObject]) -> CacheHint:
    """One listing's hint from its pages: the shortest `ttlMs` if every page gives one (a page
    without one may change at any time), `private` if any page says so, `public` if all do."""
    ttls = [page.get("ttlMs") for page in pages]
    ttl = min(ttls) if ttls and all(type(t) is int for t in ttls) else None  # type: ignore[type-var]
    scopes = {page.get("cacheScope") for page in pages}
    scope = "private" if "private" in scopes else ("public" if scopes == {"public"} else None)
    return ttl, scope


@dataclass(frozen=True, slots=True)
class Rejected:
    item: str
    reason: str


# -- capability variants ------------------------------------------------------------------------
#
# An upstream may offer some items only to sessions whose client declared a capability (the npm
# server-everything lists `get-roots-list` only to clients declaring `roots`). The gateway's own
# discovery session declares none, so the supervisor also lists such an upstream on sessions
# that declare them (docs/upstream.md, "Capability variants"). A *feature* is one thing a client
# can declare that may change what it is offered; elicitation counts twice because its form and
# URL modes are declared separately (MCP 2025-11-25: `elicitation: {}` means form only).

ROOTS = "roots"
SAMPLING = "sampling"
ELICITATION_FORM = "elicitation.form"
ELICITATION_URL = "elicitation.url"
CLIENT_FEATURES: tuple[str, ...] = (ROOTS, SAMPLING, ELICITATION_FORM, ELICITATION_URL)
ALL_FEATURES = frozenset(CLIENT_FEATURES)
NO_FEATURES: frozenset[str] = frozenset()


def client_features(capabilities: Any) -> frozenset[str]:
    """The features a client's `initialize` capabilities declare (anything else: none)."""
    if not isinstance(capabilities, Mapping):
        return NO_FEATURES
    features = {f for f in (ROOTS, SAMPLING) if isinstance(capabilities.get(f), Mapping)}
    elicitation = capabilities.get("elicitation")
    if isinstance(elicitation, Mapping):
        if "form" in elicitation or "url" not in elicitation:
            features.add(ELICITATION_FORM)
        if "url" in elicitation:
            features.add(ELICITATION_URL)
    return frozenset(features)


def declared_capabilities(features: frozenset[str]) -> JsonObject:
    """The client capabilities a discovery session declares to be offered `features`."""
    capabilities: JsonObject = {}
    if ROOTS in features:
        capabilities["roots"] = {"listChanged": True}
    if SAMPLING in features:
        capabilities["sampling"] = {}
    modes: JsonObject = {
        m: {} for m, f in (("form", ELICITATION_FORM), ("url", ELICITATION_URL)) if f in features
    }
    if modes:
        capabilities["elicitation"] = modes
    return capabilities


@dataclass(frozen=True, slots=True)
class Variant:
    """What an upstream lists to a session declaring `requires` (its whole listing)."""

    requires: frozenset[str]
    items: dict[str, tuple[JsonObject, ...]] = field(default_factory=dict)

    def added(self, base: Mapping[str, tuple[JsonObject, ...]], kind: ListKind) -> list[JsonObject]:
        """Its items of `kind` that the base listing lacks or lists differently."""
        known = {item[kind.id_field]: item for item in base.get(kind.kind, ())}
        return [
            item for item in self.items.get(kind.kind, ()) if known.get(item[kind.id_field]) != item
        ]

    def extra(self, base: Mapping[str, tuple[JsonObject, ...]]) -> dict[str, int]:
        """Per kind, how many of its items the base listing lacks or lists differently."""
        counts = {kind.kind: len(self.added(base, kind)) for kind in KINDS}
        return {kind: count for kind, count in counts.items() if count}


@dataclass(frozen=True, slots=True)
class ServerCatalog:
    """One upstream's accepted items per kind, in the order the upstream listed them.

    `items` is what a client declaring none of the client features is offered (the base
    listing); `variants` are the listings of sessions that declared some (empty when they
    offer nothing more, the common case).
    """

    items: dict[str, tuple[JsonObject, ...]] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()
    variants: tuple[Variant, ...] = ()

    def of(self, kind: ListKind) -> tuple[JsonObject, ...]:
        return self.items.get(kind.kind, ())

    def count(self, kind: ListKind) -> int:
        return len(self.of(kind))

    def for_client(self, features: frozenset[str]) -> ServerCatalog:
        """The items a client declaring `features` is offered: the base listing and every
        variant whose required features it declared. Capabilities only ever add: an item of a
        variant replaces the base item of the same identity (the capable client sees the
        upstream's version for it), new ones follow the base items in the variant's order."""
        applicable = [v for v in self.variants if v.requires <= features]
        if not applicable:
            return self if not self.variants else ServerCatalog(self.items, self.rejected)
        # Narrower variants first, so the widest one applicable has the last word.
        applicable.sort(key=lambda v: (len(v.requires), sorted(v.requires)))
        merged: dict[str, tuple[JsonObject, ...]] = {}
        for kind in KINDS:
            by_identity = {str(item[kind.id_field]): item for item in self.of(kind)}
            for variant in applicable:
                for item in variant.items.get(kind.kind, ()):
                    by_identity[str(item[kind.id_field])] = item
            if by_identity or kind.kind in self.items:
                merged[kind.kind] = tuple(by_identity.values())
        return ServerCatalog(merged, self.rejected)


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
