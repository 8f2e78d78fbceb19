"""A request in a session names the handshake revision it negotiated (or none): any other
`MCP-Protocol-Version` is 400/-32600 with the request's id, alike from the broker (lists) and
the router (routed calls), on a session's first routed call and on later ones (Envoy's fast
path). Before, a routed call carried the client's header to the upstream, which read
2026-07-28 (or an unknown value) as a session-less modern request and refused it in its own
words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.routing import gateway_stack, initialize_raw, probes

pytestmark = pytest.mark.integration

CALL = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "a_observe", "arguments": {}}}
LIST = {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {}}


def in_session(sid: str, version: str | None) -> dict[str, str]:
    headers = {"mcp-session-id": sid, "accept": "application/json, text/event-stream"}
    if version is not None:
        headers["mcp-protocol-version"] = version
    return headers


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("2099-01-01", "unsupported MCP-Protocol-Version '2099-01-01'"),
        ("2026-07-28", "MCP-Protocol-Version '2026-07-28' has no sessions"),
    ],
)
async def test_a_version_the_session_cannot_have_is_refused_by_router_and_broker_alike(
    tmp_path: Path, version: str, reason: str
) -> None:
    async with (
        probes("alpha") as urls,
        gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack,
        httpx.AsyncClient(timeout=10) as http,
    ):
        sid = await initialize_raw(http, stack.url)
        # Twice: the first call is the router's, the second Envoy's fast path would serve.
        for _ in range(2):
            served = await http.post(stack.url, json=CALL, headers=in_session(sid, "2025-11-25"))
            assert served.status_code == 200, served.text
            for body in (CALL, LIST):
                refused = await http.post(stack.url, json=body, headers=in_session(sid, version))
                assert refused.status_code == 400, refused.text
                error: dict[str, Any] = refused.json()
                assert error["id"] == body["id"]
                assert error["error"]["code"] == -32600
                assert reason in error["error"]["message"]
        # No header at all is a 2025-03-26 client's way, and served.
        served = await http.post(stack.url, json=CALL, headers=in_session(sid, None))
        assert served.status_code == 200, served.text
