"""A routed call to a modern upstream (MCP 2026-07-28): what changes after `decision.forward`.

Pure, like the decision: the call already has its `_meta` envelope in the body (the router adds
the client's capabilities, `upstream/modern.py body_with_meta`) and no backend session
(`forward(need, None)` removes the client's Mcp-Session-Id). What the revision adds on top are
its headers: the version the upstream speaks (the legacy client's own MCP-Protocol-Version is
replaced), and the method and name mirrored from the body the upstream gets, prefix stripped.
docs/router.md, "Modern upstreams".
"""

from __future__ import annotations

from mcp_gateway.protocol import encode_header_value
from mcp_gateway.router.decision import NeedsBackend, ToUpstream
from mcp_gateway.upstream.modern import METHOD_HEADER, NAME_BEARING, NAME_HEADER

VERSION_HEADER = "mcp-protocol-version"


def to_modern_upstream(to: ToUpstream, need: NeedsBackend, protocol_version: str) -> ToUpstream:
    """`to` (forward's mutations) with the revision's headers for `need`'s upstream."""
    extra: dict[str, str] = {VERSION_HEADER: protocol_version}
    if not need.follow_up:
        extra[METHOD_HEADER] = need.method
        if need.method in NAME_BEARING:
            extra[NAME_HEADER] = encode_header_value(need.routed_name)
    kept = tuple((name, value) for name, value in to.set_headers if name not in extra)
    removed = tuple(name for name in to.remove_headers if name not in extra)
    return ToUpstream(kept + tuple(extra.items()), removed, to.body)
