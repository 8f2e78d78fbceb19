"""What the supervisor publishes about each upstream: its state, why, what it lists, and its
capability variants; read by /status, /metrics and the controller (docs/broker.md)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp_gateway.upstream.catalog import TOOLS, Rejected, Variant

JsonObject = dict[str, Any]


class UpstreamState(enum.StrEnum):
    CONNECTING = "connecting"
    READY = "ready"
    DEGRADED = "degraded"  # serving its items, but something is partly wrong (see reason)
    FAILED = "failed"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    name: str
    url: str
    prefix: str
    state: UpstreamState
    reason: str | None
    counts: Mapping[str, int]
    last_refresh: float | None  # unix time of the last successful listing
    protocol_version: str | None
    server_info: Mapping[str, Any] | None
    consecutive_failures: int
    stateless: bool = False  # no backend session: calls go without one (docs/upstream.md)
    rejected: tuple[Rejected, ...] = ()
    variants_state: str = "off"  # see VariantsState
    variants_reason: str | None = None
    variants: tuple[Variant, ...] = ()
    base_items: Mapping[str, tuple[JsonObject, ...]] = field(default_factory=dict)
    relists: int = 0  # listings done on request (list_changed, the backstop), all sessions
    relist_pending: bool = False  # one in flight or queued now

    @property
    def tool_count(self) -> int:
        return self.counts.get(TOOLS.kind, 0)

    def to_json(self) -> JsonObject:
        return {
            "name": self.name,
            "url": public_url(self.url),
            "prefix": self.prefix,
            "state": self.state.value,
            "reason": self.reason,
            "toolCount": self.tool_count,
            "counts": dict(self.counts),
            "lastRefresh": self.last_refresh,
            "protocolVersion": self.protocol_version,
            "stateless": self.stateless,
            "serverInfo": dict(self.server_info) if self.server_info else None,
            "consecutiveFailures": self.consecutive_failures,
            "rejected": [{"item": r.item, "reason": r.reason} for r in self.rejected],
            "relists": {"done": self.relists, "pending": self.relist_pending},
            "capabilityVariants": {
                "state": self.variants_state,
                "reason": self.variants_reason,
                "variants": [
                    {
                        "requires": sorted(v.requires),
                        "counts": {kind: len(items) for kind, items in v.items.items()},
                        "extra": v.extra(self.base_items),
                    }
                    for v in self.variants
                ],
            },
        }


class VariantsState(enum.StrEnum):
    """Where an upstream's capability variants stand (docs/upstream.md, "Capability variants")."""

    OFF = "off"  # gateway.capability_variants is false
    SHARED_LINK = "shared-link"  # stdio/WebSocket: one link declaring every relayed capability
    PENDING = "pending"  # the base session is not serving yet
    PROBING = "probing"
    NONE = "none"  # a session declaring every client feature lists what the base one lists
    ACTIVE = "active"  # variant sessions are held; their items reach the clients that qualify
    FAILED = "failed"  # probing or a variant session failed (reason); the base is unaffected


def public_url(url: str) -> str:
    """The URL without user info or query: either may carry a credential; /status is public."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


__all__ = ["UpstreamState", "UpstreamStatus", "VariantsState", "public_url"]
