"""HttpUpstreamClient against scripted HTTP answers (httpx's MockTransport is the I/O seam)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream import HttpUpstreamClient, UpstreamError, open_backend_session

SERVER = ServerConfig(
    name="up", url="http://up.test/mcp", prefix="up_", credential="s3cret", timeoutSeconds=5
)
Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler, **kwargs: Any) -> HttpUpstreamClient:
    return HttpUpstreamClient(
        SERVER, http=httpx.AsyncClient(transport=httpx.MockTransport(handler)), **kwargs
    )


def sse(*messages: dict[str, Any]) -> httpx.Response:
    body = "".join(f"event: message\ndata: {json.dumps(m)}\n\n" for m in messages)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


async def test_initialize_keeps_the_session_and_sends_it_with_version_and_credential() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(200)
        body = json.loads(request.content)
        if body.get("method") == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}
            return httpx.Response(
                200,
                json={"jsonrpc": "2.0", "id": body["id"], "result": result},
                headers={"mcp-session-id": "backend-1"},
            )
        if "id" not in body:
            return httpx.Response(202)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {}})

    async with client_with(handler) as client:
        result = await client.initialize()
        await client.ping()
    assert result["protocolVersion"] == "2025-06-18"
    assert (client.session_id, client.protocol_version) == ("backend-1", "2025-06-18")
    initialized, ping = seen[1], seen[2]
    assert json.loads(initialized.content)["method"] == "notifications/initialized"
    assert ping.headers["mcp-session-id"] == "backend-1"
    assert ping.headers["mcp-protocol-version"] == "2025-06-18"
    assert ping.headers["authorization"] == "Bearer s3cret"
    assert (
        "application/json" in ping.headers["accept"]
        and "text/event-stream" in ping.headers["accept"]
    )
    assert seen[-1].method == "DELETE"  # the context ends the session


@pytest.mark.parametrize(
    ("credential", "header"),
    [("abc.def", "Bearer abc.def"), ("Bearer abc.def", "Bearer abc.def"), ("APIKEY k-1", "APIKEY k-1")],
)
async def test_the_credential_is_sent_as_the_servers_authorization(credential: str, header: str) -> None:
    """The same header a routed call gets (ServerConfig.authorization): a whole header value as
    it is, a bare token as Bearer; never `Bearer Bearer …`."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(202)

    server = SERVER.model_copy(update={"credential": credential})
    client = HttpUpstreamClient(server, http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    await client.notify("notifications/initialized")
    assert seen == [header]


async def test_an_sse_answer_hands_notifications_over_before_the_result() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        other = {"jsonrpc": "2.0", "id": "someone-else", "result": {}}
        return sse(progress, other, {"jsonrpc": "2.0", "id": rid, "result": {"done": True}})

    received: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> None:
        received.append(message)

    async with client_with(handler) as client:
        assert await client.request("tools/call", {"name": "x"}, on_message) == {"done": True}
    assert [m.get("method") for m in received] == ["notifications/progress", None]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404), {"status": 404, "session_expired": True}),
        (httpx.Response(500, text="boom"), {"status": 500, "session_expired": False}),
        (httpx.Response(307, headers={"location": "http://evil.test/"}), {"status": 307}),
        (
            httpx.Response(200, content=b"not json", headers={"content-type": "application/json"}),
            {},
        ),
        (
            httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"}),
            {"status": 200},
        ),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 999, "result": {}}), {}),
        (
            httpx.Response(
                200, json={"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}
            ),
            {"rpc_code": -32601},
        ),
        (sse(), {}),
    ],
)
async def test_every_bad_answer_is_an_upstream_error(
    response: httpx.Response, expected: dict[str, Any]
) -> None:
    async with client_with(lambda request: response) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.request("tools/list")
    for attribute, value in expected.items():
        assert getattr(caught.value, attribute) == value


async def test_a_transport_failure_is_an_upstream_error_too() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client_with(handler) as client:
        with pytest.raises(UpstreamError, match="ConnectError"):
            await client.ping()


async def test_list_all_follows_cursors_and_refuses_a_loop() -> None:
    pages = {None: (["a", "b"], "c1"), "c1": (["c"], "c2"), "c2": (["d"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        cursor = (body.get("params") or {}).get("cursor")
        names, next_cursor = pages[cursor]
        result: dict[str, Any] = {"tools": [{"name": n} for n in names]}
        if next_cursor:
            result["nextCursor"] = next_cursor
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    async with client_with(handler) as client:
        assert [t["name"] for t in await client.list_all("tools/list", "tools")] == [
            "a",
            "b",
            "c",
            "d",
        ]
        pages["c2"] = (["d"], "c1")
        with pytest.raises(UpstreamError, match="repeats"):
            await client.list_all("tools/list", "tools")


async def test_open_backend_session_returns_the_upstreams_session_id_and_leaves_it_open() -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        body = json.loads(request.content)
        if "id" not in body:
            return httpx.Response(202)
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}}
        return httpx.Response(
            200,
            json={"jsonrpc": "2.0", "id": body["id"], "result": result},
            headers={"mcp-session-id": "b-7"},
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    assert (
        await open_backend_session(SERVER, "2025-11-25", {"name": "c", "version": "1"}, http=http)
        == "b-7"
    )
    assert methods == ["POST", "POST"]  # initialize, initialized; no DELETE


async def test_open_backend_session_refuses_a_stateless_upstream() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "id" not in body:
            return httpx.Response(202)
        result = {"protocolVersion": "2025-11-25", "capabilities": {}}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError, match="no Mcp-Session-Id"):
        await open_backend_session(SERVER, "2025-11-25", {"name": "c", "version": "1"}, http=http)
