"""A routed call to a modern upstream (MCP 2026-07-28): what changes after `decision.forward`.

Pure, like the decision: the call already has its `_meta` envelope in the body (the router adds
the client's capabilities, `upstream/modern.py body_with_meta`) and no backend session
(`forward(need, None)` removes the client's Mcp-Session-Id). What the revision adds on top are
its headers: the version the upstream speaks (the legacy client's own MCP-Protocol-Version is
replaced), and the method and name mirrored from the body the upstream gets, prefix stripped.
On a tools/call, the tool's `x-mcp-header` parameters (upstream/tool_params.py, read once per
listing) travel as `Mcp-Param-*` headers too: a legacy client never sends them, so they are
mirrored here from the arguments; a modern client's own are checked against its arguments
(`param_mismatch`) and then pass as it sent them, as do any no annotation declares.
docs/router.md, "Modern upstreams".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_gateway.protocol import (
    ParamHeader,
    check_param_headers,
    encode_header_value,
    mirror_param_headers,
    modern_http_status,
)
from mcp_gateway.router.decision import NeedsBackend, Reply, ToUpstream
from mcp_gateway.upstream.modern import METHOD_HEADER, NAME_BEARING, NAME_HEADER
from mcp_gateway.upstream.tool_params import declared_params

VERSION_HEADER = "mcp-protocol-version"


def to_modern_upstream(to: ToUpstream, need: NeedsBackend, protocol_version: str) -> ToUpstream:
    """`to` (forward's mutations) with the revision's headers for `need`'s upstream."""
    extra: dict[str, str] = {VERSION_HEADER: protocol_version}
    if not need.follow_up:
        extra[METHOD_HEADER] = need.method
        if need.method in NAME_BEARING:
            extra[NAME_HEADER] = encode_header_value(need.routed_name)
        if not need.modern and (declared := _declared(need)):
            extra.update(mirror_param_headers(_arguments(to.body), declared))
    kept = tuple((name, value) for name, value in to.set_headers if name not in extra)
    removed = tuple(name for name in to.remove_headers if name not in extra)
    return ToUpstream(kept + tuple(extra.items()), removed, to.body)


def param_mismatch(headers: Mapping[str, str], need: NeedsBackend) -> Reply | None:
    """A modern client's tools/call whose Mcp-Param-* headers (names lowercase, as the ext_proc
    has them) disagree with its arguments: the client's 400/-32020 with its id, answered here
    rather than sent on (the upstream would refuse it too). Its headers name the parameters as
    the upstream does (only the tool's name has a prefix), so the valid ones pass unchanged."""
    declared = _declared(need)
    if not declared:
        return None
    error = check_param_headers(headers, _arguments(need.body), declared, need.request_id)
    return None if error is None else Reply(modern_http_status(error.code), error.to_json())


def _declared(need: NeedsBackend) -> tuple[ParamHeader, ...]:
    """One dict lookup: what the upstream's tool declares (most declare nothing)."""
    return declared_params(need.upstream.server, need.routed_name) if need.method == "tools/call" else ()


def _arguments(body: bytes) -> Mapping[str, Any] | None:
    """A tools/call's arguments; parsed only for a tool that declares parameters."""
    try:
        params = json.loads(body).get("params")
        arguments = params.get("arguments") if isinstance(params, dict) else None
    except (ValueError, AttributeError):
        return None
    return arguments if isinstance(arguments, dict) else None
