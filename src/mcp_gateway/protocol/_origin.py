"""Origin allowlist: the transport's DNS-rebinding protection, shared by the broker and the router.

Pure, so it is tested without a server; both the broker (before it answers) and the router
(before it routes a call past the broker) apply exactly this rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

# A browser page on the user's own machine may talk to a local gateway on any port.
LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (not a browser) passes; `*` allows all; else exact match or a loopback origin."""
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed:
        return True
    normalized = origin.rstrip("/").lower()
    if normalized in (a.rstrip("/").lower() for a in allowed):
        return True
    try:
        parts = urlsplit(normalized)
        _ = parts.port  # a malformed port makes the origin foreign, not an error
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in LOCAL_HOSTS and not parts.path
