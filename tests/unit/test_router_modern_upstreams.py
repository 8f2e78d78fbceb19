"""A routed call of a legacy client to a modern upstream (MCP 2026-07-28): no backend session,
the `_meta` envelope in the body, the revision's headers set from the body the upstream gets."""

from __future__ import annotations

import json
from dataclasses import replace

from mcp_gateway.config import parse_config
from mcp_gateway.protocol import encode_header_value
from mcp_gateway.router.decision import (
    SESSION_HEADER,
    NeedsBackend,
    RoutingTable,
    forward,
    route_request,
)
from mcp_gateway.router.modern_upstreams import to_modern_upstream
from mcp_gateway.sessions import SessionTokens, derive_key
from mcp_gateway.upstream.modern import (
    CLIENT_CAPABILITIES_META,
    MODERN_VERSION,
    PROTOCOL_VERSION_META,
    body_with_meta,
    request_meta,
)

CONFIG = parse_config(
    """
servers:
  - name: modern
    url: http://127.0.0.1:9101/mcp
    prefix: new_
"""
)
TOKENS = SessionTokens([derive_key("k" * 32)])
TOKEN = TOKENS.issue("2025-11-25")


def _need(name: str, method: str = "tools/call") -> NeedsBackend:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 3, "method": method,
         "params": {"name": name, "arguments": {}, "_meta": {"progressToken": 9}}}
    ).encode()
    headers = {
        ":method": "POST", ":path": "/mcp", SESSION_HEADER: TOKEN,
        "mcp-protocol-version": "2025-11-25", "mcp-name": encode_header_value(name),
    }
    need = route_request(headers, body, RoutingTable.from_config(CONFIG), TOKENS)
    assert isinstance(need, NeedsBackend)
    return need


def test_the_call_goes_without_a_session_with_the_envelope_and_the_revisions_headers() -> None:
    need = _need("new_add")
    meta = request_meta(MODERN_VERSION, {"roots": {}}, {"name": "legacy-client", "version": "1"})
    need = replace(need, body=body_with_meta(need.body, meta))
    mutations = to_modern_upstream(forward(need, None), need, MODERN_VERSION)
    headers = dict(mutations.set_headers)
    assert len(headers) == len(mutations.set_headers)  # each header set once
    assert headers["mcp-protocol-version"] == MODERN_VERSION
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"] == "add"  # the client's prefixed name is not what the upstream has
    assert SESSION_HEADER not in headers and SESSION_HEADER in mutations.remove_headers
    assert not set(headers) & set(mutations.remove_headers)
    body = json.loads(mutations.body)
    assert headers["content-length"] == str(len(mutations.body))
    assert body["params"]["name"] == "add"
    assert body["params"]["_meta"] == {
        "progressToken": 9,
        PROTOCOL_VERSION_META: MODERN_VERSION,
        CLIENT_CAPABILITIES_META: {"roots": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "legacy-client", "version": "1"},
    }
