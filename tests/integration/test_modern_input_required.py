"""Multi-round-trip results (MCP 2026-07-28 `InputRequiredResult`) through real Envoy + the
gateway, with the official SDK: a modern client (pinned to 2026-07-28; the SDK drives the
retries) against a modern upstream (SDK 2.x, stateless: it answers InputRequiredResult) and a
legacy one (stateful: it asks elicitation/create mid-call, the gateway holds the call); raw
requests for the refusals (an edited state, a state of another upstream); a legacy client
against the modern upstream through the broker (the gateway drives the rounds for it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from tests.support.modern import add_greeting, answering, serve_modern
from tests.support.routing import SDK_CLIENT_WARNINGS, Stack, gateway_stack, serve_sdk_server

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPS = "io.modelcontextprotocol/clientCapabilities"



def eliciting_server(label: str) -> MCPServer:
    """A tool that asks the user's name. The SDK asks by the negotiated revision: on 2026-07-28
    it answers InputRequiredResult (stateless), before it sends elicitation/create mid-call."""
    server = MCPServer(label, version="1.0.0")
    add_greeting(server, label)
    return server


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with trio.open_nursery() as nursery:
        modern = await nursery.start(serve_modern, eliciting_server("modern"))
        other = await nursery.start(serve_modern, eliciting_server("other"))
        legacy = await nursery.start(serve_sdk_server, eliciting_server("legacy"))
        servers = [
            ("modern", f"http://127.0.0.1:{modern}/mcp", "m_"),
            ("other", f"http://127.0.0.1:{other}/mcp", "o_"),
            ("legacy", f"http://127.0.0.1:{legacy}/mcp", "l_"),
        ]
        async with gateway_stack(servers, tmp_path) as running:
            yield running
        nursery.cancel_scope.cancel()



async def test_a_modern_client_answers_modern_and_legacy_upstreams_elicitation(stack: Stack) -> None:
    asked: list[str] = []
    with trio.fail_after(30):
        async with Client(
            streamable_http_client(stack.url), mode=MODERN, elicitation_callback=answering("Ada", asked)
        ) as client:
            assert client.protocol_version == MODERN
            from_modern = await client.call_tool("m_greet", {})
            from_legacy = await client.call_tool("l_greet", {})
    assert from_modern.content[0].text == "modern greets Ada"  # type: ignore[union-attr]
    assert from_legacy.content[0].text == "legacy greets Ada"  # type: ignore[union-attr]
    assert asked == ["modern: what is your name?", "legacy: what is your name?"]


def call(name: str, rid: int, **retry: Any) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {META_VERSION: MODERN, META_CAPS: {"elicitation": {}}}
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": {}, **retry, "_meta": meta}}
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    return body, headers


async def first_round(http: httpx.AsyncClient, url: str, name: str) -> dict[str, Any]:
    body, headers = call(name, 1)
    answer = await http.post(url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["result"]
    assert result["resultType"] == "input_required"
    return result


async def test_a_state_edited_or_of_another_upstream_is_refused(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        asked = await first_round(http, stack.url, "m_greet")
        (key, request), = asked["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        state = asked["requestState"]
        assert state.startswith("mgw1.")  # the gateway's seal, never the upstream's own state

        responses = {key: {"action": "accept", "content": {"name": "Ada"}}}
        edited = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
        for rid, (name, token) in enumerate([("m_greet", edited), ("o_greet", state)], start=11):
            body, headers = call(name, rid, inputResponses=responses, requestState=token)
            refused = await http.post(stack.url, json=body, headers=headers)
            assert refused.status_code == 400, refused.text
            error = refused.json()
            assert error["id"] == rid
            assert error["error"]["code"] == -32602

        # The state as it was, on the tool it was minted for, completes the call.
        body, headers = call("m_greet", 13, inputResponses=responses, requestState=state)
        done = await http.post(stack.url, json=body, headers=headers)
        assert done.status_code == 200, done.text
        assert done.json()["result"]["content"][0]["text"] == "modern greets Ada"


async def test_a_held_legacy_call_is_continued_by_its_state_only(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        asked = await first_round(http, stack.url, "l_greet")
        (key, request), = asked["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        assert request["params"]["message"] == "legacy: what is your name?"
        responses = {key: {"action": "accept", "content": {"name": "Grace"}}}
        # A continuation's state names its call and the tool: not usable on another.
        body, headers = call("m_greet", 21, inputResponses=responses, requestState=asked["requestState"])
        refused = await http.post(stack.url, json=body, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32602
        assert refused.json()["id"] == 21
        body, headers = call("l_greet", 22, inputResponses=responses, requestState=asked["requestState"])
        done = await http.post(stack.url, json=body, headers=headers)
        assert done.status_code == 200, done.text
        assert done.json()["id"] == 22
        assert done.json()["result"]["content"][0]["text"] == "legacy greets Grace"
        # Delivered: the held call is gone, and its state with it.
        body, headers = call("l_greet", 23, inputResponses=responses, requestState=asked["requestState"])
        again = await http.post(stack.url, json=body, headers=headers)
        assert again.status_code == 400 and again.json()["error"]["code"] == -32602


async def test_a_legacy_client_gets_the_modern_upstreams_question_mid_call(stack: Stack) -> None:
    # The broker's path (a routed call that reaches the broker: no Envoy in front of it here).
    asked: list[str] = []
    with trio.fail_after(30):
        async with Client(
            streamable_http_client(f"{stack.broker.base}/mcp"), mode="legacy", elicitation_callback=answering("Lin", asked)
        ) as client:
            greeted = await client.call_tool("m_greet", {})
    assert greeted.content[0].text == "modern greets Lin"  # type: ignore[union-attr]
    assert asked == ["modern: what is your name?"]


async def test_a_legacy_client_without_elicitation_is_told_what_is_missing(stack: Stack) -> None:
    with trio.fail_after(30):
        async with Client(streamable_http_client(f"{stack.broker.base}/mcp"), mode="legacy") as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("m_greet", {})
    # The upstream's own -32021 (its HTTP 400 carries it), passed on as a JSON-RPC error.
    assert refused.value.error.code == -32021
    assert "elicitation" in refused.value.error.message
    assert "elicitation" in refused.value.error.data["requiredCapabilities"]


async def test_tasks_methods_are_not_served(stack: Stack) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 31,
        "method": "tasks/get",
        "params": {"taskId": "t1", "_meta": {META_VERSION: MODERN, META_CAPS: {}}},
    }
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "tasks/get"}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(stack.url, json=body, headers=headers)
    assert answer.status_code == 404
    assert answer.json()["id"] == 31 and answer.json()["error"]["code"] == -32601

