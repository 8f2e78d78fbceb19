"""Server→client requests during a call the broker forwards: sampling, elicitation and roots
from the conformance fixture (official SDK server) reach the official SDK client on the call's
SSE stream under gateway ids, and the client's answers reach the upstream that asked.

The fixture runs twice: over stdio (spawned by the broker's supervisor; Envoy cannot reach it,
so the broker is the only path) and over Streamable HTTP (the broker's fallback forwarding).
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import httpx
import pytest
import trio
from mcp import types
from mcp.client.client import Client

from mcp_gateway.config import GatewayConfig
from tests.support.servers import open_session, running_broker, sample_in_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

FIXTURE_STDIO = [sys.executable, "-m", "mcp_gateway.samples.conformance_fixture", "--transport", "stdio"]
ROOT = "file:///srv/projects/broker-relay"


def _config(http_fixture: str) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "servers": [
                {"name": "local", "transport": "stdio", "command": FIXTURE_STDIO, "prefix": "io_"},
                {"name": "remote", "url": http_fixture, "prefix": "web_"},
            ],
            "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "page_size": 1000},
        }
    )


class Callbacks:
    """The SDK client's answers, and what it was asked."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.elicited: list[str] = []
        self.roots_asked = 0

    async def sample(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        prompt = content.text if isinstance(content, types.TextContent) else ""
        self.prompts.append(prompt)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled: {prompt}"),
            model="relay-test",
            stop_reason="endTurn",
        )

    async def elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri=ROOT, name="project")])


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("prefix", ["io_", "web_"])
async def test_sampling_elicitation_and_roots_round_trip_through_the_broker(prefix: str) -> None:
    answers = Callbacks()
    async with sample_in_process("conformance") as http_fixture, running_broker(
        _config(http_fixture)
    ) as broker:
        # Requests to the client during a call need a stream that carries them: 2025-11-25 (the
        # 2026-07-28 revision asks through InputRequiredResult, not relayed yet: README gaps).
        async with Client(
            broker.url,
            mode="legacy",
            sampling_callback=answers.sample,
            elicitation_callback=answers.elicit,
            list_roots_callback=answers.roots,
        ) as client:
            with trio.fail_after(20):
                sampled = await client.call_tool(f"{prefix}test_sampling", {"prompt": "say hi"})
                elicited = await client.call_tool(f"{prefix}test_elicitation", {"message": "who?"})
                rooted = await client.call_tool(f"{prefix}test_list_roots", {})
        gc.collect()
    assert answers.prompts == ["say hi"]
    assert _text(sampled) == "LLM response: sampled: say hi"
    assert answers.elicited == ["who?"]
    assert "ada" in _text(elicited) and not elicited.is_error
    assert answers.roots_asked == 1
    assert json.loads(_text(rooted)) == [ROOT]


async def test_ids_never_collide_and_answers_go_to_the_upstream_that_asked() -> None:
    """One client, two upstreams asking at once: each request reaches the client under its own
    gateway id, and each answer completes the call that asked (never the other one). An answer
    from another session, or to an id we never issued, reaches no upstream."""
    async with sample_in_process("conformance") as http_fixture, running_broker(
        _config(http_fixture)
    ) as broker, httpx.AsyncClient(timeout=20) as http:
        session = await open_session(http, broker.url, capabilities={"sampling": {}})
        intruder = await open_session(http, broker.url, capabilities={"sampling": {}})
        shown: dict[str, dict[str, Any]] = {}
        results: dict[str, str] = {}
        both_asked = trio.Event()

        async def call(prefix: str) -> None:
            body = {
                "jsonrpc": "2.0",
                "id": 7,  # the same client id on both calls, as two upstreams' ids may be too
                "method": "tools/call",
                "params": {"name": f"{prefix}test_sampling", "arguments": {"prompt": prefix}},
            }
            async with http.stream("POST", broker.url, json=body, headers=session) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    message = json.loads(line[6:])
                    if message.get("method") == "sampling/createMessage":
                        shown[prefix] = message
                        if len(shown) == 2:
                            both_asked.set()
                        await both_asked.wait()
                        # Foreign answers first: a forged id, and the right id from another session.
                        for headers, rid in ((session, "mcp-gateway-forged-1"), (intruder, message["id"])):
                            wrong = {"jsonrpc": "2.0", "id": rid, "result": _sampled("intruder")}
                            assert (await http.post(broker.url, json=wrong, headers=headers)).status_code == 202
                        answer = {"jsonrpc": "2.0", "id": message["id"], "result": _sampled(f"for {prefix}")}
                        assert (await http.post(broker.url, json=answer, headers=session)).status_code == 202
                    elif message.get("id") == 7:
                        results[prefix] = message["result"]["content"][0]["text"]

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "io_")
                nursery.start_soon(call, "web_")
    assert shown["io_"]["id"] != shown["web_"]["id"]
    assert all(str(m["id"]).startswith("mcp-gateway-") for m in shown.values())
    assert shown["io_"]["params"]["messages"][0]["content"]["text"] == "io_"
    assert results == {"io_": "LLM response: for io_", "web_": "LLM response: for web_"}


def _sampled(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": {"type": "text", "text": text}, "model": "m"}


@pytest.mark.parametrize("prefix", ["io_", "web_"])
async def test_a_client_answering_in_json_only_gets_the_request_refused_not_a_hang(prefix: str) -> None:
    """A client that takes only JSON cannot be asked mid-call: the upstream is told at once."""
    async with sample_in_process("conformance") as http_fixture, running_broker(
        _config(http_fixture)
    ) as broker, httpx.AsyncClient(timeout=20) as http:
        session = {**await open_session(http, broker.url, capabilities={"sampling": {}}), "accept": "application/json"}
        body = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": f"{prefix}test_sampling", "arguments": {"prompt": "x"}},
        }
        with trio.fail_after(10):
            answer = (await http.post(broker.url, json=body, headers=session)).json()
    assert answer["id"] == 3
    # The SDK server fails the tool call with the error the gateway answered its request with.
    assert answer["error"]["code"] == -32601
    assert "cannot ask it during this call" in answer["error"]["message"]
