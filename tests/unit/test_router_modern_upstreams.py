"""A routed call of a legacy client to a modern upstream (MCP 2026-07-28): no backend session,
the `_meta` envelope in the body, the revision's headers set from the body the upstream gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from mcp_gateway.config import parse_config
from mcp_gateway.protocol import encode_header_value
from mcp_gateway.router.decision import (
    SESSION_HEADER,
    NeedsBackend,
    RoutingTable,
    forward,
    route_request,
)
from mcp_gateway.router.modern_upstreams import param_mismatch, to_modern_upstream
from mcp_gateway.sessions import SessionTokens, derive_key
from mcp_gateway.upstream.catalog import ServerCatalog
from mcp_gateway.upstream.modern import (
    CLIENT_CAPABILITIES_META,
    MODERN_VERSION,
    PROTOCOL_VERSION_META,
    body_with_meta,
    request_meta,
)
from mcp_gateway.upstream.tool_params import record_tool_params

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


REGION_TOOL = {
    "name": "where",
    "inputSchema": {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "retries": {"type": "integer", "x-mcp-header": "Retries"},
        },
    },
}


@pytest.fixture(autouse=True)
def _region_tool() -> Iterator[None]:
    """The upstream's tools/list as the supervisor records it (process-wide: undone after)."""
    record_tool_params("modern", ServerCatalog({"tools": (REGION_TOOL,)}))
    yield
    record_tool_params("modern", ServerCatalog())


def _call(name: str, arguments: dict[str, object]) -> NeedsBackend:
    need = _need(name)
    body = json.loads(need.body)
    body["params"]["arguments"] = arguments
    return replace(need, body=json.dumps(body).encode())


def test_a_legacy_clients_call_gets_the_tools_mcp_param_headers_mirrored_from_its_arguments() -> None:
    need = _call("new_where", {"region": "Zürich", "retries": 3})
    headers = dict(to_modern_upstream(forward(need, None), need, MODERN_VERSION).set_headers)
    assert headers["mcp-param-region"] == encode_header_value("Zürich") != "Zürich"
    assert headers["mcp-param-retries"] == "3"
    # A tool that declares nothing gets nothing (and its body is not even read for it).
    plain = _call("new_add", {"region": "x"})
    assert not [n for n, _ in to_modern_upstream(forward(plain, None), plain, MODERN_VERSION).set_headers if n.startswith("mcp-param-")]


def test_a_modern_clients_mcp_param_headers_are_checked_against_its_arguments() -> None:
    need = replace(_call("new_where", {"region": "eu", "retries": 2}), modern=True)
    good = {"mcp-param-region": "eu", "mcp-param-retries": "2", "mcp-param-other": "anything"}
    assert param_mismatch(good, need) is None
    # Its own headers pass as sent: nothing mirrored over them.
    assert not [n for n, _ in to_modern_upstream(forward(need, None), need, MODERN_VERSION).set_headers if n.startswith("mcp-param-")]
    for bad in ({**good, "mcp-param-region": "us"}, {"mcp-param-retries": "2"}, {**good, "mcp-param-retries": "=?base64?%?="}):
        refused = param_mismatch(bad, need)
        assert refused is not None and refused.status == 400
        error = json.loads(refused.body)
        assert (error["id"], error["error"]["code"]) == (3, -32020)
