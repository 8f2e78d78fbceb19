"""The MCP surface beyond tools, end to end with the official SDK client (`mcp.client.client.Client`)
against the npm `@modelcontextprotocol/server-everything` and our Python SDK fixture server:
prompts, resources (read, templates, subscribe, update), completion, sampling and elicitation
round trips, roots, progress, logging and cancellation.

Every test runs twice: `direct` (the client talks to the upstream itself) and `gateway` (the
same client, the same assertions, through Envoy + `mcp-gateway serve` with the upstream
federated under an empty prefix). Switching is the one line in `endpoint()`. The gateway cases
that do not pass yet are xfail(strict=True) with the reason verified against the gateway; they
turn into failures the moment they start passing, so the list stays true.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import types
from mcp.client.client import Client

from tests.support.conformance import running_fixture, running_gateway, serve_everything

pytestmark = [
    pytest.mark.integration,
    # The SDK client's streams (httpx2 on Trio) are garbage-collected unexhausted when a client
    # closes; that is the SDK's, and it is not what these tests are about.
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
        # logging/setLevel and resources/subscribe are deprecated from revision 2026-07-28 on
        # (SEP-2577, subscriptions/listen); these handshake-era features are what is tested.
        "ignore::mcp.shared.exceptions.MCPDeprecationWarning",
    ),
]

# test function -> why it fails through the gateway (verified). Empty: every feature passes
# through the gateway too. A gap found later goes here as a strict xfail, with its reason.
GATEWAY_GAPS: dict[str, str] = {}

ROOT_URI = "file:///srv/projects/gateway-e2e"


@pytest.fixture(params=["direct", "gateway"])
def target(request: pytest.FixtureRequest) -> str:
    name = request.node.originalname
    if request.param == "gateway" and name in GATEWAY_GAPS:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=GATEWAY_GAPS[name]))
    return str(request.param)


@asynccontextmanager
async def endpoint(upstream_url: str, target: str, workdir: Path) -> AsyncIterator[str]:
    """The URL the client uses: the upstream itself, or the gateway in front of it."""
    if target == "direct":
        yield upstream_url
        return
    federated = [{"name": "upstream", "url": upstream_url, "prefix": ""}]
    async with running_gateway(federated, workdir) as gateway:
        yield gateway.url


@pytest.fixture
async def everything(nursery: trio.Nursery, target: str, tmp_path: Path) -> AsyncIterator[str]:
    upstream_url = await nursery.start(serve_everything)
    async with endpoint(upstream_url, target, tmp_path) as url:
        yield url


@pytest.fixture
async def fixture_server(target: str, tmp_path: Path) -> AsyncIterator[str]:
    async with running_fixture() as upstream_url, endpoint(upstream_url, target, tmp_path) as url:
        yield url


def text_of(result: types.CallToolResult | types.GetPromptResult) -> str:
    if isinstance(result, types.GetPromptResult):
        blocks = [message.content for message in result.messages]
    else:
        assert not result.is_error, result
        blocks = list(result.content)
    return "".join(block.text for block in blocks if isinstance(block, types.TextContent))


class Received:
    """Server notifications a client saw, with an event per kind to wait on."""

    def __init__(self) -> None:
        self.notifications: list[types.ServerNotification] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self._arrived = trio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            raise message
        self.notifications.append(message)
        self._arrived.set()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self._arrived.set()

    def resource_updates(self) -> list[str]:
        return [
            str(n.params.uri)
            for n in self.notifications
            if isinstance(n, types.ResourceUpdatedNotification)
        ]

    async def wait_for(self, seen: Any) -> None:
        with trio.fail_after(5):
            while not seen():
                self._arrived = trio.Event()
                await self._arrived.wait()


# -- prompts, resources, completion ----------------------------------------------------------


async def test_prompts_are_listed_and_rendered_with_arguments(everything: str) -> None:
    async with Client(everything) as client:
        names = {prompt.name for prompt in (await client.list_prompts()).prompts}
        rendered = await client.get_prompt("args-prompt", {"city": "Paris", "state": "Texas"})
    assert {"simple-prompt", "args-prompt", "completable-prompt"} <= names
    assert text_of(rendered) == "What's weather in Paris, Texas?"


async def test_resources_are_listed_read_and_read_through_a_template(everything: str) -> None:
    async with Client(everything) as client:
        listed = (await client.list_resources()).resources
        static = next(r for r in listed if str(r.uri).startswith("demo://resource/static/document/"))
        read = await client.read_resource(str(static.uri))
        templates = (await client.list_resource_templates()).resource_templates
        dynamic = await client.read_resource("demo://resource/dynamic/text/7")
    assert str(read.contents[0].uri) == str(static.uri)
    assert isinstance(read.contents[0], types.TextResourceContents) and read.contents[0].text
    assert "demo://resource/dynamic/text/{resourceId}" in {t.uri_template for t in templates}
    assert str(dynamic.contents[0].uri) == "demo://resource/dynamic/text/7"


async def test_completion_of_a_prompt_argument(everything: str) -> None:
    async with Client(everything) as client:
        completed = await client.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "department", "value": "Sa"},
        )
    assert completed.completion.values == ["Sales"]


async def test_resource_subscription_delivers_updates(everything: str) -> None:
    received = Received()
    uri = "demo://resource/dynamic/text/1"
    # resources/subscribe is a session's (a 2026-07-28 client listens: test_modern_listen.py).
    async with Client(everything, mode="legacy", message_handler=received.on_message) as client:
        await client.subscribe_resource(uri)
        # server-everything then notifies every subscribed URI of this session (every 5 s).
        await client.call_tool("toggle-subscriber-updates", {})
        await received.wait_for(lambda: uri in received.resource_updates())
        await client.call_tool("toggle-subscriber-updates", {})
        await client.unsubscribe_resource(uri)


async def test_resource_update_reaches_only_the_subscribed_client(fixture_server: str) -> None:
    subscriber, bystander = Received(), Received()
    # resources/subscribe exists only in the handshake era; an SDK 2.x server would otherwise
    # keep the client on revision 2026-07-28 (subscriptions/listen).
    async with Client(
        fixture_server, mode="legacy", message_handler=subscriber.on_message
    ) as watching, Client(fixture_server, mode="legacy", message_handler=bystander.on_message) as other:
        await watching.subscribe_resource("test://watched-resource")
        changed = await other.call_tool("test_update_watched_resource", {})
        assert text_of(changed) == "notified 1 subscriber(s)"
        await subscriber.wait_for(lambda: subscriber.resource_updates())
        await other.send_ping()
        read = await watching.read_resource("test://watched-resource")
    assert subscriber.resource_updates() == ["test://watched-resource"]
    assert bystander.resource_updates() == []
    assert isinstance(read.contents[0], types.TextResourceContents)
    assert read.contents[0].text == "watched resource, version 1"


# -- server→client requests during a call ------------------------------------------------------


async def test_sampling_request_reaches_the_client_and_its_answer_the_server(everything: str) -> None:
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

    async with Client(everything, sampling_callback=sample) as client:
        result = await client.call_tool("trigger-sampling-request", {"prompt": "say hi"})
    assert len(prompts) == 1 and prompts[0].endswith("say hi")
    assert "sampled by the e2e client" in text_of(result)


async def test_elicitation_request_reaches_the_client_and_its_answer_the_server(
    everything: str,
) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(
            action="accept", content={"name": "Ada Lovelace", "check": True, "email": "ada@example.com"}
        )

    async with Client(everything, elicitation_callback=elicit) as client:
        result = await client.call_tool("trigger-elicitation-request", {})
    assert asked == ["Please provide inputs for the following fields:"]
    assert "Ada Lovelace" in text_of(result)


async def test_roots_request_reaches_the_client(everything: str) -> None:
    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=ROOT_URI, name="e2e project")])

    # The default mode: through the gateway a 2026-07-28 round (InputRequiredResult), directly
    # a request mid-call in a session.
    async with Client(everything, list_roots_callback=roots) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("get-roots-list", {})
    assert "get-roots-list" in tools  # offered only to clients that declare roots
    assert ROOT_URI in text_of(result)


# -- notifications during a call, and cancellation ---------------------------------------------


async def test_progress_notifications_reach_the_caller(everything: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with Client(everything) as client:
        result = await client.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
    assert progress == [1, 2, 3]
    assert "Steps: 3" in text_of(result)


async def test_log_notifications_reach_the_client_that_set_a_level(everything: str) -> None:
    received = Received()
    # logging/setLevel is a session's: 2026-07-28 removed it.
    async with Client(everything, mode="legacy", logging_callback=received.on_log) as client:
        await client.set_logging_level("debug")
        # server-everything then logs at a random level (all pass at debug) right away and every
        # 5 s, on the session's own stream, until toggled off.
        await client.call_tool("toggle-simulated-logging", {})
        await received.wait_for(lambda: received.logs)
        await client.call_tool("toggle-simulated-logging", {})
    assert "-level message" in str(received.logs[0].data).replace(" level-", "-level ")


async def test_a_cancelled_call_is_cancelled_on_the_upstream(fixture_server: str) -> None:
    # notifications/cancelled in a session (a 2026-07-28 client cancels by closing its request).
    async with Client(fixture_server, mode="legacy") as client:
        with trio.move_on_after(0.5) as scope:
            await client.call_tool("test_slow_operation", {"label": "e2e-cancel", "seconds": 30})
        assert scope.cancelled_caught
        with trio.fail_after(5):
            while True:
                answer = await client.call_tool("test_cancelled_operations", {})
                if "e2e-cancel" in json.loads(text_of(answer)):
                    break
                await trio.sleep(0.05)  # the upstream cancels its handler asynchronously


async def test_roots_request_from_a_python_sdk_server_reaches_the_client(fixture_server: str) -> None:
    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=ROOT_URI, name="e2e project")])

    # Server→client requests during a call belong to the handshake era (2026-07-28 replaces them
    # with input-required results), so this session is a legacy one.
    async with Client(fixture_server, mode="legacy", list_roots_callback=roots) as client:
        with trio.fail_after(5):
            result = await client.call_tool("test_list_roots", {})
    assert json.loads(text_of(result)) == [ROOT_URI]
