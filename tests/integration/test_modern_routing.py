"""A 2026-07-28 ("modern") client's routed calls, routed by the router straight to the owning
upstream through real Envoy, without the broker (router/modern_clients.py): a modern upstream
(the official SDK 2.x server, stateless) and a legacy one (the same SDK, stateful) side by side.

How a test knows the broker was not involved: Envoy counts the requests it sends to the broker's
cluster (`cluster.mcp_broker.upstream_rq_total`); a directly routed call adds none."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.server.mcpserver import MCPServer
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

from mcp_gateway.sessions.request_state import TOKEN_PREFIX
from tests.support.modern import modern_and_legacy, modern_server
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    sse_result,
)

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
VERSION = "io.modelcontextprotocol/protocolVersion"
CAPS = "io.modelcontextprotocol/clientCapabilities"
INFO = "io.modelcontextprotocol/clientInfo"
TO_BROKER = "cluster.mcp_broker.upstream_rq_total"
UPSTREAM_STATE = "the-upstreams-own-state"


def asking_server(name: str) -> MCPServer:
    """The modern test upstream, plus a tool that answers with the revision's InputRequiredResult."""
    server = modern_server(name)

    @server.tool(description="Ask the user something first (a multi-round-trip result).")
    def ask() -> InputRequiredResult:
        question = ElicitRequest(
            params=ElicitRequestFormParams(message="Your name?", requested_schema={"type": "object", "properties": {}})
        )
        return InputRequiredResult(input_requests={"q": question}, request_state=UPSTREAM_STATE)

    return server


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with modern_and_legacy(tmp_path, asking_server("modern"), modern_server("legacy")) as running:
        yield running


def modern_call(
    name: str,
    arguments: dict[str, Any] | None = None,
    request_id: int | str = 1,
    capabilities: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    meta = {VERSION: MODERN, CAPS: capabilities or {}, INFO: {"name": "t", "version": "1"}}
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {}, "_meta": meta, **params},
    }


def modern_headers(name: str, **extra: str) -> dict[str, str]:
    return {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
        **extra,
    }


async def post(http: httpx.AsyncClient, stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await http.post(stack.url, json=body, headers=headers)


def observed(response: httpx.Response) -> dict[str, Any]:
    message = sse_result(response)
    assert message["result"]["resultType"] == "complete", message
    return dict(json.loads(message["result"]["content"][0]["text"]))


async def test_a_modern_clients_calls_reach_both_kinds_of_upstream_without_the_broker(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        before = await stack.envoy.stat(TO_BROKER)
        legacy = await post(http, stack, modern_call("old_observe", request_id=3), modern_headers("old_observe"))
        modern = await post(http, stack, modern_call("new_observe", request_id=4), modern_headers("new_observe"))
        assert await stack.envoy.stat(TO_BROKER) == before, "a call went through the broker"
    for response, request_id in ((legacy, 3), (modern, 4)):
        assert response.status_code == 200, response.text
        assert sse_result(response)["id"] == request_id  # the client's id, whatever went upstream
        assert "mcp-session-id" not in response.headers  # no backend session id leaks
    seen = observed(legacy)
    # The legacy upstream: the gateway-held shared session, its revision, the prefix stripped
    # in the body (the tool ran) and in the mirrored header.
    assert seen["server"] == "legacy" and seen["session"]
    assert seen["version"] == "2025-11-25" and seen["name"] == "observe" and seen["method"] == "tools/call"
    seen = observed(modern)
    assert seen["server"] == "modern" and seen["session"] is None
    assert seen["version"] == MODERN and seen["name"] == "observe"


async def test_two_clients_using_one_id_at_once_on_the_shared_session_each_get_their_own_answer(stack: Stack) -> None:
    answers: dict[int, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=10) as http:

        async def add(a: int) -> None:
            response = await post(http, stack, modern_call("old_add", {"a": a, "b": 1}, request_id=7), modern_headers("old_add"))
            answers[a] = sse_result(response)

        async with trio.open_nursery() as nursery:
            for a in range(5):
                nursery.start_soon(add, a)
    for a, message in answers.items():
        assert message["id"] == 7
        assert message["result"]["content"][0]["text"] == str(a + 1)


async def test_a_base64_mcp_name_is_decoded_and_routed(stack: Stack) -> None:
    encoded = "=?base64?bmV3X29ic2VydmU=?="  # new_observe
    async with httpx.AsyncClient(timeout=10) as http:
        before = await stack.envoy.stat(TO_BROKER)
        response = await post(http, stack, modern_call("new_observe"), modern_headers(encoded))
        assert await stack.envoy.stat(TO_BROKER) == before
    assert response.status_code == 200, response.text
    assert observed(response)["name"] == "observe"


async def test_refusals_keep_the_revisions_status_and_code(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(2):  # the first call of a name and a later one get the same answer
            mismatch = await post(http, stack, modern_call("new_observe"), modern_headers("new_add"))
            assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020
        body = modern_call("new_add")
        body["params"]["_meta"][VERSION] = "2099-01-01"
        unsupported = await post(http, stack, body, modern_headers("new_add", **{"mcp-protocol-version": "2099-01-01"}))
        assert unsupported.status_code == 400 and unsupported.json()["error"]["code"] == -32022
        body = modern_call("new_add")
        del body["params"]["_meta"]
        no_envelope = await post(http, stack, body, modern_headers("new_add"))
        assert no_envelope.status_code == 400 and no_envelope.json()["error"]["code"] == -32602
        # A name no prefix owns is the router's to refuse (one a prefix owns, its upstream's).
        unknown = await post(http, stack, modern_call("zz_nothing"), modern_headers("zz_nothing"))
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == -32602


async def test_an_input_required_answer_reaches_the_client_with_a_sealed_state(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        before = await stack.envoy.stat(TO_BROKER)
        response = await post(http, stack, modern_call("new_ask"), modern_headers("new_ask"))
        assert await stack.envoy.stat(TO_BROKER) == before
    assert response.status_code == 200, response.text
    result = sse_result(response)["result"]
    assert result["resultType"] == "input_required"
    assert result["inputRequests"]["q"]["method"] == "elicitation/create"
    state = result["requestState"]
    assert state.startswith(TOKEN_PREFIX) and UPSTREAM_STATE not in state
    assert UPSTREAM_STATE not in response.text


async def test_retries_and_calls_that_can_be_asked_go_to_the_broker(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        before = await stack.envoy.stat(TO_BROKER)
        await post(http, stack, modern_call("new_ask", requestState="mgw1.x"), modern_headers("new_ask"))
        assert await stack.envoy.stat(TO_BROKER) == before + 1
        await post(http, stack, modern_call("new_ask", inputResponses={}), modern_headers("new_ask"))
        assert await stack.envoy.stat(TO_BROKER) == before + 2
        asked = await post(
            http, stack, modern_call("old_add", {"a": 1, "b": 2}, capabilities={"elicitation": {}}), modern_headers("old_add")
        )
        assert await stack.envoy.stat(TO_BROKER) == before + 3
    assert sse_result(asked)["result"]["content"][0]["text"] == "3"
