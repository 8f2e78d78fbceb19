"""The router never treats a request on /mcp/stateful as a 2026-07-28 one to route: Envoy sends
those to the broker past the ext_proc, but a deployment that puts every request through the
ext_proc (Istio, Envoy Gateway) must not have them routed either."""

from __future__ import annotations

from mcp_gateway.router.modern_clients import STATEFUL_PATH, is_modern_request


def test_a_modern_request_is_routed_as_one_on_mcp_only() -> None:
    modern = {":method": "POST", "mcp-protocol-version": "2026-07-28"}
    assert is_modern_request({**modern, ":path": "/mcp"})
    assert not is_modern_request({**modern, ":path": STATEFUL_PATH})
    assert not is_modern_request({**modern, ":path": STATEFUL_PATH + "?x=1"})
    # In a session, or with a handshake revision, it never was one.
    assert not is_modern_request({**modern, ":path": "/mcp", "mcp-session-id": "t"})
    assert not is_modern_request({":path": "/mcp", "mcp-protocol-version": "2025-11-25"})
