"""The gateway-held sessions behind modern (2026-07-28) clients.

A modern client has no session, but a legacy upstream (one that opens with initialize) serves
calls only inside a backend session. Modern clients therefore share one gateway-held session
per declared client feature set (roots, sampling, elicitation: what changes an upstream's lists
and what it may ask during a call); its backend sessions are opened lazily per upstream, as for
a legacy client's gateway session, and live in the same store under a key no token can name.

What lives in such a backend session is only what every client of that feature set would
establish identically: the initialize (the gateway's clientInfo, the declared features). Nothing
a client sets for itself (a log level, resource subscriptions, a GET stream) is ever put there:
modern clients have no method that would (docs/router.md, "Modern clients"). One exception to
the sharing: a call the broker holds for a client's InputRequiredResult rounds (a legacy HTTP
upstream that may ask it something) runs on a session of its own (`held_call_session_id`,
broker/held_sessions.py), since what such an upstream asks on the session's own stream names no
call, and what it keeps per session (a client's roots) belongs to that client.

Whether a routed call needs a backend session at all is decided by `needs_backend_session`,
the one place an upstream that is itself modern (no initialize) is to be recognised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mcp_gateway.sessions.store import SessionStore

SHARED_PREFIX: Final = "modern."
# The revision the gateway-held backend sessions are opened at (the newest with a handshake).
BACKEND_PROTOCOL_VERSION: Final = "2025-11-25"
GATEWAY_CLIENT_INFO: Final[Mapping[str, str]] = {"name": "mcp-gateway", "version": "modern-shared"}


def shared_session_id(features: frozenset[str]) -> str:
    """The store key of the session modern clients declaring `features` share. Real session
    ids are 32 hex characters sealed in a token, so this one can never be presented by a client."""
    return SHARED_PREFIX + ("+".join(sorted(features)) or "none")


def held_call_session_id(key: str) -> str:
    """The store key of a held call's own session (broker/held_sessions.py): under the same
    prefix, so no client can present it either; `key` is the held call's random key."""
    return SHARED_PREFIX + "call." + key


def is_shared_session(sid: str) -> bool:
    return sid.startswith(SHARED_PREFIX)


def needs_backend_session(server: str) -> bool:
    """Does a modern client's call to `server` need a gateway-held backend session? Yes for
    every upstream that opens with initialize, which today is every upstream; the place to
    answer no for an upstream that speaks 2026-07-28 itself."""
    del server
    return True


async def ensure_shared_session(
    store: SessionStore, features: frozenset[str], capabilities: Mapping[str, Any], ttl: float
) -> str:
    """The shared session for `features`, created in the store when missing (or expired: the
    reaper then ended its backend sessions, and the next call opens new ones)."""
    sid = shared_session_id(features)
    if not await store.exists(sid):
        await store.create(
            sid, ttl, client={"capabilities": dict(capabilities), "clientInfo": dict(GATEWAY_CLIENT_INFO)}
        )
    return sid
