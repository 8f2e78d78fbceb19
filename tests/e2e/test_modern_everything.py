"""The official SDK client pinned to 2026-07-28 (no session, no back channel) calling
server-everything's tools that ask mid-call (roots/list, sampling/createMessage,
elicitation/create) through real Envoy + `mcp-gateway serve` with `gateway.serve_discover` on.

server-everything (the npm TypeScript server) is a legacy upstream: it opens with initialize and
asks on the backend session while the call is open. The gateway holds the call and answers the
client an InputRequiredResult; the SDK client answers with its callbacks and retries; the
upstream gets the answer and the call completes (docs/broker.md, "Multi-round-trip results").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import types
from mcp.client.client import Client

from tests.e2e.test_conformance_features import ROOT_URI, text_of
from tests.support.conformance import running_gateway, serve_everything

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

MODERN = "2026-07-28"
# A held call's answer comes within a round trip; the upstream timeout (30 s) is what a lost
# answer would look like, so fail well before it.
CALL_SECONDS = 10


@pytest.fixture
async def everything(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[str]:
    upstream_url = await nursery.start(serve_everything)
    federated = [{"name": "upstream", "url": upstream_url, "prefix": ""}]
    async with running_gateway(federated, tmp_path, serve_discover=True) as gateway:
        yield gateway.url


async def test_roots_request_reaches_a_modern_client(everything: str) -> None:
    asked: list[bool] = []

    async def roots(context: Any) -> types.ListRootsResult:
        asked.append(True)
        return types.ListRootsResult(roots=[types.Root(uri=ROOT_URI, name="e2e project")])

    async with Client(everything, mode=MODERN, list_roots_callback=roots) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        with trio.fail_after(CALL_SECONDS):
            result = await client.call_tool("get-roots-list", {})
    assert "get-roots-list" in tools  # offered only to clients that declare roots
    assert asked  # server-everything may ask twice (its own 350 ms after initialized too)
    assert ROOT_URI in text_of(result)


async def test_sampling_request_reaches_a_modern_client_and_its_answer_the_server(everything: str) -> None:
    prompts: list[str] = []

    async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        prompts.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the e2e client"),
            model="e2e-model",
            stop_reason="endTurn",
        )

    async with Client(everything, mode=MODERN, sampling_callback=sample) as client:
        with trio.fail_after(CALL_SECONDS):
            result = await client.call_tool("trigger-sampling-request", {"prompt": "say hi"})
    assert len(prompts) == 1 and prompts[0].endswith("say hi")
    assert "sampled by the e2e client" in text_of(result)


async def test_elicitation_request_reaches_a_modern_client_and_its_answer_the_server(everything: str) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(
            action="accept", content={"name": "Ada Lovelace", "check": True, "email": "ada@example.com"}
        )

    async with Client(everything, mode=MODERN, elicitation_callback=elicit) as client:
        with trio.fail_after(CALL_SECONDS):
            result = await client.call_tool("trigger-elicitation-request", {})
    assert asked == ["Please provide inputs for the following fields:"]
    assert "Ada Lovelace" in text_of(result)


async def roots_text(url: str, root: types.Root) -> str:
    """What get-roots-list answers a modern client whose only root is `root`."""

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[root])

    async with Client(url, mode=MODERN, list_roots_callback=roots) as client:
        with trio.fail_after(CALL_SECONDS):
            return text_of(await client.call_tool("get-roots-list", {}))


async def test_each_modern_client_gets_its_own_roots_not_an_earlier_clients(everything: str) -> None:
    # server-everything keeps the roots it got per session, for good: on a backend session
    # shared by modern clients the second client would be answered the first one's roots.
    first = await roots_text(everything, types.Root(uri="file:///srv/first-project", name="first"))
    second = await roots_text(everything, types.Root(uri="file:///srv/second-project", name="second"))
    assert "file:///srv/first-project" in first
    assert "file:///srv/second-project" in second
    assert "first-project" not in second
