"""stdio and WebSocket upstreams behind the whole gateway: the official SDK client, through
Envoy and `mcp-gateway serve`, lists and calls tools of a stdio upstream (the SDK fixture run
over stdio by the gateway itself) and of a WebSocket upstream.

Envoy cannot reach either, so these calls must go through the broker over the upstream's own
link (docs/transports.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import types
from mcp.client.client import Client

from tests.support.conformance import running_fixture, running_gateway

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

FIXTURE_STDIO_COMMAND = [
    sys.executable, "-m", "mcp_gateway.samples.conformance_fixture", "--transport", "stdio"
]
SIMPLE_TEXT = "This is a simple text response for testing."


async def test_stdio_and_websocket_upstreams_answer_tool_calls_through_the_gateway(
    tmp_path: Path,
) -> None:
    async with running_fixture("websocket") as websocket_url, running_gateway(
        [
            {"name": "fx-stdio", "transport": "stdio", "command": FIXTURE_STDIO_COMMAND,
             "prefix": "st_"},
            {"name": "fx-ws", "transport": "websocket", "url": websocket_url, "prefix": "ws_"},
        ],
        tmp_path,
    ) as gateway, Client(gateway.url) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        answers = {
            prefix: await client.call_tool(f"{prefix}test_simple_text", {})
            for prefix in ("st_", "ws_")
        }

    assert {"st_test_simple_text", "ws_test_simple_text"} <= tools
    for prefix, result in answers.items():
        assert not result.is_error, (prefix, result)
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == SIMPLE_TEXT
