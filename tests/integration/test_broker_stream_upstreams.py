"""A stdio upstream supervised and federated by the broker, its tools called through it.

Envoy cannot reach a subprocess, so calls to it take the broker's fallback path over the one
link the supervisor keeps; two clients calling at once must not mix up their answers.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig
from tests.support.servers import initialize_body, running_broker, sample_in_process

pytestmark = pytest.mark.integration

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
FIXTURE_STDIO = [
    sys.executable,
    "-m",
    "mcp_gateway.samples.conformance_fixture",
    "--transport",
    "stdio",
]


async def test_a_stdio_upstream_is_listed_and_called_next_to_an_http_one() -> None:
    async with sample_in_process("echo") as echo:
        config = GatewayConfig.model_validate(
            {
                "servers": [
                    {
                        "name": "fixture",
                        "transport": "stdio",
                        "command": FIXTURE_STDIO,
                        "prefix": "fx_",
                    },
                    {"name": "echo", "url": echo, "prefix": "echo_"},
                ],
                "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "page_size": 1000},
            }
        )
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            init = initialize_body()
            response = await http.post(broker.url, json=init, headers=HEADERS)
            session = {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"]}
            listed = await http.post(
                broker.url,
                json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                headers=session,
            )
            names = [t["name"] for t in listed.json()["result"]["tools"]]
            assert "fx_test_simple_text" in names and "echo_echo" in names
            status = (await http.get(f"{broker.admin}/status/fixture")).json()
            assert status["state"] == "ready"

            other = await http.post(broker.url, json=init, headers=HEADERS)
            second = {**HEADERS, "mcp-session-id": other.headers["mcp-session-id"]}
            answers: dict[str, dict[str, Any]] = {}

            async def call(key: str, headers: dict[str, str], name: str) -> None:
                body = {
                    "jsonrpc": "2.0",
                    "id": "same",
                    "method": "tools/call",
                    "params": {"name": name, "arguments": {}},
                }
                answers[key] = (await http.post(broker.url, json=body, headers=headers)).json()

            # Two clients, one request id, one shared stdio link: each gets its own answer.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "text", session, "fx_test_simple_text")
                nursery.start_soon(call, "error", second, "fx_test_error_handling")
            assert answers["text"]["id"] == answers["error"]["id"] == "same"
            assert answers["text"]["result"]["content"][0]["text"] == (
                "This is a simple text response for testing."
            )
            assert answers["error"]["result"]["isError"] is True

            prompt = {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "prompts/get",
                "params": {
                    "name": "fx_test_prompt_with_arguments",
                    "arguments": {"arg1": "a", "arg2": "b"},
                },
            }
            got = (await http.post(broker.url, json=prompt, headers=session)).json()
            assert got["id"] == 9 and got["result"]["messages"]
            echoed = {
                "jsonrpc": "2.0",
                "id": 10,
                "method": "tools/call",
                "params": {"name": "echo_echo", "arguments": {"text": "hi"}},
            }
            answer = (await http.post(broker.url, json=echoed, headers=session)).json()
            assert answer["result"]["content"][0]["text"] == "hi"

            listed_prompts = await http.post(
                broker.url,
                json={"jsonrpc": "2.0", "id": 11, "method": "prompts/list"},
                headers=session,
            )
            prompt_names = [p["name"] for p in listed_prompts.json()["result"]["prompts"]]
            assert "fx_test_simple_prompt" in prompt_names
            listed_resources = await http.post(
                broker.url,
                json={"jsonrpc": "2.0", "id": 12, "method": "resources/list"},
                headers=session,
            )
            uris = [r["uri"] for r in listed_resources.json()["result"]["resources"]]
            assert "mcp-gateway:fx_test://static-text" in uris
            read = {
                "jsonrpc": "2.0",
                "id": 13,
                "method": "resources/read",
                "params": {"uri": "mcp-gateway:fx_test://static-text"},
            }
            contents = (await http.post(broker.url, json=read, headers=session)).json()
            assert contents["id"] == 13
            assert contents["result"]["contents"][0]["uri"] == "mcp-gateway:fx_test://static-text"
            unknown = {**read, "params": {"uri": "mcp-gateway:nobody_x"}}
            missing = (await http.post(broker.url, json=unknown, headers=session)).json()
            assert missing["error"]["code"] == -32002
