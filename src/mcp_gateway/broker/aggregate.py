"""The federated view: every serving upstream's items under their prefixed names (pure code).

Built once per catalog change, read by every list request: a list request never waits on an
upstream. A name two upstreams would both expose (possible only next to the one unprefixed
server) goes to the server with the longer prefix — the same server the router's longest-prefix
match sends a call to — ties broken by server name; the loser is reported in /status.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp_gateway.config import ServerConfig, VirtualServer
from mcp_gateway.protocol import apply_prefix
from mcp_gateway.upstream.catalog import KINDS, NO_FEATURES, TOOLS, ListKind, ServerCatalog

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Entry:
    """One federated item: what clients see, and where it really lives."""

    exposed: JsonObject
    server: str
    original_name: str


@dataclass(frozen=True, slots=True)
class Collision:
    kind: str
    name: str
    kept: str  # server whose item is exposed
    dropped: str

    def to_json(self) -> JsonObject:
        return {"kind": self.kind, "name": self.name, "kept": self.kept, "dropped": self.dropped}


@dataclass(frozen=True, slots=True)
class Federation:
    entries: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    by_name: dict[str, dict[str, Entry]] = field(default_factory=dict)
    collisions: tuple[Collision, ...] = ()
    # Serialized pages, filled on first use; a Federation is rebuilt (not changed) on updates.
    pages: dict[tuple[str, int, int], bytes] = field(default_factory=dict, compare=False)

    def items(self, kind: ListKind) -> tuple[Entry, ...]:
        return self.entries.get(kind.kind, ())

    def lookup(self, kind: ListKind, name: str) -> Entry | None:
        return self.by_name.get(kind.kind, {}).get(name)

    def fingerprint(self, kind: ListKind) -> int:
        """Changes whenever what a client would list for `kind` changes."""
        return hash(json.dumps([e.exposed for e in self.items(kind)], sort_keys=True, default=str))


def federate(
    catalog: Sequence[tuple[ServerConfig, ServerCatalog]], features: frozenset[str] = NO_FEATURES
) -> Federation:
    """The federation a client declaring `features` (catalog.client_features) sees: each
    upstream's base items plus those of its capability variants the client qualifies for."""
    catalog = [(server, items.for_client(features)) for server, items in catalog]
    entries: dict[str, tuple[Entry, ...]] = {}
    by_name: dict[str, dict[str, Entry]] = {}
    collisions: list[Collision] = []
    # Longer prefix first, then server name: the first claim on a name wins.
    ranked = sorted(catalog, key=lambda pair: (-len(pair[0].prefix), pair[0].name))
    for kind in KINDS:
        winners: dict[str, Entry] = {}
        for server, server_catalog in ranked:
            for item in server_catalog.of(kind):
                original = str(item[kind.id_field])
                try:
                    exposed_name = _exposed_name(kind, server.prefix, original)
                except ValueError:
                    continue  # cannot be named here (the supervisor already rejects these)
                kept = winners.get(exposed_name)
                if kept is not None:
                    collisions.append(Collision(kind.kind, exposed_name, kept.server, server.name))
                    continue
                exposed = dict(item)
                exposed[kind.id_field] = exposed_name
                winners[exposed_name] = Entry(exposed, server.name, original)
        # Present items in config order of their servers, each server's items in its own order.
        order = {server.name: index for index, (server, _) in enumerate(catalog)}
        listed = sorted(winners.values(), key=lambda e: order[e.server])
        entries[kind.kind] = tuple(listed)
        by_name[kind.kind] = winners
    return Federation(entries, by_name, tuple(collisions))


def variants_fingerprint(
    catalog: Sequence[tuple[ServerConfig, ServerCatalog]], kind: ListKind
) -> int:
    """Changes whenever what capability variants add to `kind` (items the base listing lacks
    or lists differently) changes, on any upstream: the lists some clients see then changed,
    while the base federation did not. A variant adding nothing counts for nothing."""
    added = []
    for server, server_catalog in catalog:
        for variant in server_catalog.variants:
            extra = variant.added(server_catalog.items, kind)
            if extra:
                added.append((server.name, sorted(variant.requires), extra))
    return hash(json.dumps(added, sort_keys=True, default=str))


def relevant_features(catalog: Sequence[tuple[ServerConfig, ServerCatalog]]) -> frozenset[str]:
    """The client features that change some client's view: those required by a variant that
    adds something. A client's view depends only on which of these it declared, so views are
    built per `declared & relevant_features(...)` (none at all for most gateways)."""
    relevant: set[str] = set()
    for _, server_catalog in catalog:
        for variant in server_catalog.variants:
            if variant.extra(server_catalog.items):
                relevant |= variant.requires
    return frozenset(relevant)


def restrict(federation: Federation, virtual: VirtualServer) -> Federation:
    """What a virtual server exposes of `federation`: its tools, its prompts, and the resources
    and resource templates whose exposed URI (template) it lists; nothing else. Names are the
    exposed (prefixed) ones, as in Kuadrant's MCPVirtualServer."""
    allowed = {
        "tools": frozenset(virtual.tools),
        "prompts": frozenset(virtual.prompts),
        "resources": frozenset(virtual.resources),
        "resource_templates": frozenset(virtual.resources),
    }
    entries: dict[str, tuple[Entry, ...]] = {}
    by_name: dict[str, dict[str, Entry]] = {}
    for kind in KINDS:
        names = allowed[kind.kind]
        kept = tuple(e for e in federation.items(kind) if e.exposed[kind.id_field] in names)
        entries[kind.kind] = kept
        by_name[kind.kind] = {str(e.exposed[kind.id_field]): e for e in kept}
    return Federation(entries, by_name, federation.collisions)


def _exposed_name(kind: ListKind, prefix: str, original: str) -> str:
    if kind.id_field == "name":
        return apply_prefix(prefix, original)
    return expose_uri(prefix, original)


# -- resource URIs --------------------------------------------------------------------------------
#
# Two upstreams may both serve `file:///README.md`. A prefixed server's resource URIs (and URI
# templates) are exposed as `mcp-gateway:<prefix><original>`, e.g. `mcp-gateway:dyn_file:///x`:
# a valid URI of our own scheme, reversible by string operations alone (prefixes never overlap),
# so a URI a client expanded from an exposed template resolves as well as a listed one. The
# unprefixed server (at most one) keeps its URIs as they are.

URI_SCHEME = "mcp-gateway:"


def expose_uri(prefix: str, original: str) -> str:
    return original if not prefix else f"{URI_SCHEME}{prefix}{original}"


def resolve_uri(uri: str, servers: Sequence[ServerConfig]) -> tuple[ServerConfig, str] | None:
    """The server and its own URI behind an exposed URI, or None if no server owns it."""
    if uri.startswith(URI_SCHEME):
        rest = uri[len(URI_SCHEME) :]
        for server in servers:
            if server.prefix and rest.startswith(server.prefix) and len(rest) > len(server.prefix):
                return server, rest[len(server.prefix) :]
    for server in servers:
        if not server.prefix:
            return server, uri
    return None


# -- pagination ---------------------------------------------------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(kind: ListKind, offset: int) -> str:
    raw = json.dumps({"k": kind.kind, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: ListKind, cursor: str) -> int:
    """The offset a cursor we issued for `kind` stands for; BadCursor for anything else."""
    if len(cursor) > 200:
        raise BadCursor("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("not a cursor this server issued") from exc
    if not isinstance(data, dict) or data.get("k") != kind.kind:
        raise BadCursor("not a cursor this server issued for this list")
    offset = data.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BadCursor("not a cursor this server issued")
    return offset


def page(federation: Federation, kind: ListKind, cursor: str | None, page_size: int) -> JsonObject:
    """One page of a federated list result; raises BadCursor for a cursor we did not issue."""
    items = federation.items(kind)
    start = 0 if cursor is None else decode_cursor(kind, cursor)
    chunk = items[start : start + page_size]
    result: JsonObject = {kind.result_key: [entry.exposed for entry in chunk]}
    if start + page_size < len(items):
        result["nextCursor"] = encode_cursor(kind, start + page_size)
    return result


def page_json(federation: Federation, kind: ListKind, cursor: str | None, page_size: int) -> bytes:
    """`page` serialized, computed once per federation, page and size: a list request then
    costs a lookup however many upstreams and tools there are."""
    start = 0 if cursor is None else decode_cursor(kind, cursor)
    key = (kind.kind, start, page_size)
    cached = federation.pages.get(key)
    if cached is None:
        result = page(federation, kind, cursor, page_size)
        cached = _ENCODER.encode(result).encode()
        federation.pages[key] = cached
    return cached


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


__all__ = [
    "TOOLS",
    "BadCursor",
    "Collision",
    "Entry",
    "Federation",
    "decode_cursor",
    "encode_cursor",
    "expose_uri",
    "federate",
    "page",
    "page_json",
    "relevant_features",
    "resolve_uri",
    "restrict",
    "variants_fingerprint",
]
