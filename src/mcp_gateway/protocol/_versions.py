"""MCP protocol revisions and version negotiation."""

from __future__ import annotations

# Oldest to newest. 2026-07-28 is supported but not yet what we offer unasked.
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
)
LATEST_STABLE = "2025-11-25"
# JSON-RPC batching existed in 2025-03-26 only; 2025-06-18 removed it again.
_BATCH_VERSIONS = frozenset({"2025-03-26"})


def negotiate_version(requested: str) -> str:
    """The revision to answer an initialize with: the client's if we support it, else our
    latest stable one (the spec lets the client disconnect if it cannot speak that)."""
    return requested if requested in SUPPORTED_VERSIONS else LATEST_STABLE


def supports_batch(version: str) -> bool:
    return version in _BATCH_VERSIONS
