"""A Claude Desktop config, imported, is served: the gateway runs the stdio server it names
(`mcp-gateway sample-server many --transport stdio`, with the entry's environment) and the
official SDK client lists its tools through the broker under the derived prefix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.config import GatewayConfig, load_config
from tests.support.servers import gateway_config, running_broker

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("mcp-gateway"))


async def test_an_imported_claude_desktop_config_is_served(tmp_path: Path) -> None:
    claude = tmp_path / "claude_desktop_config.json"
    claude.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "many-tools": {
                        "command": CLI,
                        "args": ["sample-server", "many", "--transport", "stdio"],
                        "env": {"MCP_SAMPLE_TOOLS": "3"},  # reaches the server: 3 tools, not 150
                    }
                }
            }
        )
    )
    imported = tmp_path / "gateway.yaml"
    await trio.run_process([CLI, "import", str(claude), "-o", str(imported)], capture_stderr=True)
    await trio.run_process([CLI, "check-config", str(imported)], capture_stdout=True)

    config = load_config(imported)
    local = GatewayConfig.model_validate(
        {
            **config.model_dump(by_alias=True, exclude_defaults=True),
            "gateway": gateway_config([]).gateway.model_dump(),  # loopback, free ports
        }
    )
    async with running_broker(local) as broker, Client(streamable_http_client(broker.url)) as client:
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        answer = await client.call_tool("many_tools_tool_0002", {})
    assert names == ["many_tools_tool_0000", "many_tools_tool_0001", "many_tools_tool_0002"]
    assert answer.content[0].text == "2"  # type: ignore[union-attr]
