"""The router behind a real Envoy, with the real broker and real MCP servers (official SDK).

Each test starts: upstream MCP servers (SDK `MCPServer`s on hypercorn), the broker and the
ext_proc router (serve_broker / serve_router in this Trio run, sharing tokens and store), and
the `envoy` binary in front of them. Clients are the official SDK client (asyncio and trio
backends) and, where raw bytes matter, httpx.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream.body import send_post
from tests.support.envoy import RunningEnvoy
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    WAIT_CANCELLED,
    WAIT_STARTED,
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
    text_of,
)
from tests.support.servers import gateway_config, sample_process

pytestmark = pytest.mark.integration

# ---------------------------------------------------------------------------------------------
# Tests


@SDK_CLIENT_WARNINGS
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_sdk_client_lists_and_calls_tools_of_two_upstreams_through_envoy(
    tmp_path: Path, backend: str
) -> None:
    async with probes("alpha", "beta") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path
    ) as stack:
        if backend == "trio":
            observed = await _list_and_call(stack.url)
        else:
            # The SDK client on asyncio, in a worker thread with its own event loop.
            import asyncio

            observed = await trio.to_thread.run_sync(lambda: asyncio.run(_list_and_call(stack.url)))
        tools, alpha, beta, added = observed
        assert {"a_observe", "a_add", "b_observe", "b_add"} <= set(tools)
        assert alpha["server"] == "alpha" and beta["server"] == "beta"
        # Reached the upstream with the prefix stripped and the routing headers set by the router.
        assert (alpha["servername"], alpha["toolname"], alpha["method"]) == ("alpha", "observe", "tools/call")
        assert (beta["servername"], beta["toolname"]) == ("beta", "observe")
        # ...and with a backend session of its own.
        assert alpha["session_hash"] and beta["session_hash"]
        assert added == "5"
        # Envoy's access log: the calls went straight from Envoy to each upstream's cluster.
        calls = await stack.envoy.wait_for_access(
            lambda e: e["mcp_method"] == "tools/call" and e["upstream_cluster"] == "mcp_upstream_beta"
        )
        assert calls[0]["mcp_server"] == "beta" and calls[0]["status"] == 200
        alpha_adds = await stack.envoy.wait_for_access(
            lambda e: e["upstream_cluster"] == "mcp_upstream_alpha" and e["mcp_tool"] == "add"
        )
        assert alpha_adds[0]["mcp_server"] == "alpha"


async def _list_and_call(url: str) -> tuple[list[str], dict[str, Any], dict[str, Any], str]:
    # The handshake: Envoy routes a session's calls straight to the upstream. A 2026-07-28
    # client's calls go through the broker for now (tests/integration/test_modern_clients.py).
    async with Client(url, mode="legacy") as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        alpha = json.loads(text_of(await client.call_tool("a_observe", {})))
        beta = json.loads(text_of(await client.call_tool("b_observe", {})))
        added = text_of(await client.call_tool("a_add", {"a": 2, "b": 3}))
    return tools, alpha, beta, added


async def test_client_forged_internal_headers_cannot_steer_routing(tmp_path: Path) -> None:
    async with probes("alpha", "beta") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path
    ) as stack, httpx.AsyncClient(timeout=10) as client:
        session = await initialize_raw(client, stack.url)
        forged = session_headers(
            session,
            **{"x-mcp-servername": "beta", "x-mcp-toolname": "add", "x-mcp-method": "tools/list",
               "X-MCP-Evil": "1", "x-mcp-anything": "yes"},
        )
        response = await client.post(stack.url, json=call_body("a_observe"), headers=forged)
        observed = json.loads(sse_result(response)["result"]["content"][0]["text"])
        assert observed["server"] == "alpha"
        assert (observed["servername"], observed["toolname"], observed["method"]) == ("alpha", "observe", "tools/call")
        assert observed["forged"] == []
        # A forged x-mcp-servername on a broker request does not send it to an upstream either.
        listed = await client.post(
            stack.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=forged
        )
        assert "a_observe" in json.dumps(sse_result(listed))
        await stack.envoy.wait_for_access(lambda e: e["upstream_cluster"] == "mcp_broker")
        assert not [e for e in stack.envoy.access_entries() if e["upstream_cluster"] == "mcp_upstream_beta"]


async def test_no_backend_session_id_reaches_the_client(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=10) as client:
        session = await initialize_raw(client, stack.url)
        response = await client.post(stack.url, json=call_body("a_add", {"a": 1, "b": 1}), headers=session_headers(session))
        claims = stack.broker.tokens.verify(session)
        assert claims is not None
        backend = await stack.broker.store.get_backend(claims.session_id, "alpha")
        assert backend  # a backend session exists...
        assert response.headers["mcp-session-id"] == session  # ...but the client sees its own
        everything = json.dumps(dict(response.headers)) + response.text
        assert backend not in everything
        assert sse_result(response)["result"]["content"][0]["text"] == "2"


async def test_unknown_tool_and_malformed_bodies_get_precise_errors_through_envoy(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=10) as client:
        session = await initialize_raw(client, stack.url)
        headers = session_headers(session, **{"content-type": "application/json"})
        unknown = await client.post(stack.url, json=call_body("zzz_x", request_id=41), headers=headers)
        assert unknown.status_code == 200
        assert unknown.json()["id"] == 41 and unknown.json()["error"]["code"] == -32602
        cases = [
            (b"{broken", 400, -32700),
            (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":"x"}', 400, None),
            (b"", 400, None),
            (b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{}}', 400, -32602),
        ]
        for body, status, code in cases:
            response = await client.post(stack.url, content=body, headers=headers)
            assert response.status_code == status, (body, response.status_code, response.text)
            assert response.status_code < 500
            document = response.json()
            assert "error" in document
            if code is not None:
                assert document["error"]["code"] == code
        unknown_session = await client.post(stack.url, json=call_body("a_add"), headers=session_headers("bogus"))
        assert unknown_session.status_code == 404
        assert unknown_session.json()["id"] == 1


async def test_ten_concurrent_first_calls_share_one_backend_session(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        hashes: list[str] = []

        async def first_call(i: int) -> None:
            response = await client.post(stack.url, json=call_body("a_observe", request_id=100 + i), headers=session_headers(session))
            hashes.append(json.loads(sse_result(response)["result"]["content"][0]["text"])["session_hash"])

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(first_call, i)
        # One backend initialize: every call used the same backend session.
        assert len(hashes) == 10 and len(set(hashes)) == 1


async def test_upstream_restart_between_calls_is_invisible_to_the_client(tmp_path: Path) -> None:
    async with sample_process("echo") as echo:
        port = echo.port
        async with gateway_stack([("echo", echo.url, "e_")], tmp_path) as stack, \
                httpx.AsyncClient(timeout=20) as client:
            session = await initialize_raw(client, stack.url)
            first = await client.post(stack.url, json=call_body("e_add", {"a": 1, "b": 2}), headers=session_headers(session))
            assert sse_result(first)["result"]["content"][0]["text"] == "3"
            claims = stack.broker.tokens.verify(session)
            assert claims is not None
            old_backend = await stack.broker.store.get_backend(claims.session_id, "echo")
            await echo.kill()
            async with sample_process("echo", port=port):
                second = await client.post(
                    stack.url, json=call_body("e_add", {"a": 20, "b": 22}, request_id=2), headers=session_headers(session)
                )
                assert second.status_code == 200, second.text
                assert second.headers["mcp-session-id"] == session
                assert sse_result(second)["result"]["content"][0]["text"] == "42"
                new_backend = await stack.broker.store.get_backend(claims.session_id, "echo")
                assert new_backend and new_backend != old_backend
                # Later calls use the new backend session directly.
                third = await client.post(
                    stack.url, json=call_body("e_add", {"a": 1, "b": 1}, request_id=3), headers=session_headers(session)
                )
                assert sse_result(third)["result"]["content"][0]["text"] == "2"


@SDK_CLIENT_WARNINGS
async def test_progress_streams_through_envoy_before_the_result(tmp_path: Path) -> None:
    async with sample_process("slow") as slow, gateway_stack([("slow", slow.url, "slow_")], tmp_path) as stack:
        arrivals: list[tuple[float, float]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            arrivals.append((trio.current_time(), progress))

        async with Client(stack.url) as client:
            started = trio.current_time()
            result = await client.call_tool(
                "slow_count", {"steps": 3, "delay_seconds": 0.4}, progress_callback=on_progress
            )
            finished = trio.current_time()
        assert text_of(result) == "counted to 3"
        assert [p for _, p in arrivals] == [1, 2, 3]
        # Incremental: progress kept the upstream's spacing and the first one arrived long before
        # the result. Buffered by Envoy or the router, all would arrive together at the end.
        assert arrivals[2][0] - arrivals[0][0] > 0.6
        assert finished - arrivals[0][0] > 0.6
        assert finished - started > 1.2


@SDK_CLIENT_WARNINGS
async def test_added_server_is_callable_without_an_envoy_restart(tmp_path: Path) -> None:
    async with probes("alpha", "gamma") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack:
        envoy_pid = stack.envoy.process.pid
        new_config = with_xds(
            gateway_config([("alpha", urls["alpha"], "a_"), ("gamma", urls["gamma"], "g_")], router_listen="127.0.0.1:0"),
            stack.envoy,
        )
        await stack.broker.reload(new_config)
        await stack.router_reloads.send(new_config)
        async with Client(stack.url, mode="legacy") as client:  # routed by Envoy (see above)
            with trio.fail_after(10):
                # Broker and router apply the reload independently, each in the background:
                # ask until both have (the router after Envoy confirmed the new cluster).
                while "g_observe" not in [t.name for t in (await client.list_tools()).tools]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                while True:
                    try:
                        observed = json.loads(text_of(await client.call_tool("g_observe", {})))
                        break
                    except MCPError as error:
                        assert "Unknown tool" in str(error)
                        await trio.sleep(0.05)
        assert observed["server"] == "gamma"
        assert stack.envoy.process.poll() is None and stack.envoy.process.pid == envoy_pid
        await stack.envoy.wait_for_access(lambda e: e["upstream_cluster"] == "mcp_upstream_gamma")



async def test_upstream_down_gives_a_json_rpc_error_with_the_id_not_a_5xx(tmp_path: Path) -> None:
    async with sample_process("echo") as echo, gateway_stack([("echo", echo.url, "e_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        first = await client.post(stack.url, json=call_body("e_add", {"a": 1, "b": 2}), headers=session_headers(session))
        assert sse_result(first)["result"]["content"][0]["text"] == "3"
        await echo.kill()
        # Mapped backend session, upstream gone: Envoy cannot connect (its local 503 is not the
        # upstream's answer) → a JSON-RPC error for this request id.
        down = await client.post(stack.url, json=call_body("e_add", request_id=8), headers=session_headers(session))
        assert down.status_code == 200, down.text
        assert down.json()["id"] == 8 and down.json()["error"]["code"] == -32603
        assert down.headers["mcp-session-id"] == session
        # A new session's first call (lazy backend initialize fails) gets the same answer.
        other = await initialize_raw(client, stack.url)
        first_down = await client.post(stack.url, json=call_body("e_add", request_id=9), headers=session_headers(other))
        assert first_down.status_code == 200
        assert first_down.json()["id"] == 9 and first_down.json()["error"]["code"] == -32603


def with_xds(config: GatewayConfig, envoy: RunningEnvoy) -> GatewayConfig:
    """The config with Envoy's xDS directory and admin port, so the router writes xDS on reload."""
    admin_port = int(envoy.admin_url.rsplit(":", 1)[1])
    settings = config.gateway.envoy.model_copy(update={"xds_dir": str(envoy.xds.xds_dir), "admin_port": admin_port})
    return config.model_copy(update={"gateway": config.gateway.model_copy(update={"envoy": settings})})


async def envoy_clusters(envoy: RunningEnvoy) -> set[str]:
    async with httpx.AsyncClient(base_url=envoy.admin_url) as admin:
        statuses = (await admin.get("/clusters", params={"format": "json"})).json()["cluster_statuses"]
    return {str(item["name"]) for item in statuses}


async def test_removed_server_loses_its_route_and_cluster_without_an_envoy_restart(tmp_path: Path) -> None:
    async with probes("alpha", "beta") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path
    ) as stack, httpx.AsyncClient(timeout=10) as client:
        session = await initialize_raw(client, stack.url)
        before = await client.post(stack.url, json=call_body("b_add", {"a": 1, "b": 1}), headers=session_headers(session))
        assert sse_result(before)["result"]["content"][0]["text"] == "2"
        assert "mcp_upstream_beta" in await envoy_clusters(stack.envoy)
        smaller = with_xds(gateway_config([("alpha", urls["alpha"], "a_")], router_listen="127.0.0.1:0"), stack.envoy)
        await stack.router_reloads.send(smaller)
        with trio.fail_after(10):
            while "mcp_upstream_beta" in await envoy_clusters(stack.envoy):  # noqa: ASYNC110
                await trio.sleep(0.05)
        after = await client.post(stack.url, json=call_body("b_add", request_id=2), headers=session_headers(session))
        assert after.status_code == 200
        assert after.json()["error"]["code"] == -32602  # unknown tool now, with the id
        assert after.json()["id"] == 2
        still = await client.post(stack.url, json=call_body("a_add", {"a": 2, "b": 2}, request_id=3), headers=session_headers(session))
        assert sse_result(still)["result"]["content"][0]["text"] == "4"
        assert stack.envoy.process.poll() is None


async def test_get_skips_the_router_and_timer_extensions_are_honoured(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=10) as client:
        session = await initialize_raw(client, stack.url)
        started = await stack.envoy.stat("http.mcp.ext_proc.streams_started")
        # A GET on /mcp without a session: the broker's own refusal, not alpha's answer.
        refused = await client.get(stack.url, headers={"x-mcp-servername": "alpha", "accept": "text/event-stream"})
        assert refused.status_code == 400 and "x-mcp-upstream" not in refused.headers
        assert await stack.envoy.stat("http.mcp.ext_proc.streams_started") == started
        # A POST for the broker costs two ext_proc messages (headers, body): the router ends the
        # stream with its body reply, so the broker's response headers never come to it.
        sent = await stack.envoy.stat("http.mcp.ext_proc.stream_msgs_sent")
        listed = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, headers=session_headers(session))
        assert "a_add" in json.dumps(sse_result(listed))
        assert await stack.envoy.stat("http.mcp.ext_proc.stream_msgs_sent") == sent + 2
        # The first routed call initialises a backend: the router extends Envoy's timer first.
        call = await client.post(stack.url, json=call_body("a_add", {"a": 1, "b": 1}), headers=session_headers(session))
        assert sse_result(call)["result"]["content"][0]["text"] == "2"
        assert await stack.envoy.stat("http.mcp.ext_proc.override_message_timeout_received") >= 1
        assert await stack.envoy.stat("http.mcp.ext_proc.override_message_timeout_ignored") == 0
        assert await stack.envoy.stat("http.mcp.ext_proc.streams_failed") == 0
        assert await stack.envoy.stat("http.mcp.ext_proc.rejected_header_mutations") == 0


async def test_a_body_over_envoys_buffer_limit_is_a_json_rpc_413(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        huge = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a_add","arguments":{"x":"' + b"x" * 2_000_000 + b'"}}}'
        # A body of a plain iterator (send_post): Envoy answers before reading it all, and httpx's
        # own generator over `content=` would be dropped mid-send (a ResourceWarning when collected).
        response = await send_post(client, stack.url, huge, session_headers(session, **{"content-type": "application/json"}))
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request: body too large"}}


async def test_server_requests_of_two_upstreams_get_distinct_ids_and_answers_go_back_to_each(tmp_path: Path) -> None:
    """Both upstreams ask roots/list during a call, each under its own id (both SDK servers
    number from 0): the client sees two different gateway ids, and each answer, POSTed through
    Envoy, reaches the upstream that asked, which then finishes its call."""
    servers = [("alpha", "a_"), ("beta", "b_")]
    async with probes("alpha", "beta") as urls, \
            gateway_stack([(n, urls[n], p) for n, p in servers], tmp_path) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url, {"roots": {"listChanged": False}})
        headers = session_headers(session, **{"content-type": "application/json"})
        asked: dict[str, Any] = {}
        results: dict[str, str] = {}

        async def call_and_answer(tool: str, request_id: int, root: str) -> None:
            body = call_body(tool, request_id=request_id)
            async with client.stream("POST", stack.url, json=body, headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["mcp-session-id"] == session
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("method") == "roots/list":
                        asked[tool] = message["id"]
                        answer = {"jsonrpc": "2.0", "id": message["id"], "result": {"roots": [{"uri": root}]}}
                        posted = await client.post(stack.url, json=answer, headers=headers)
                        assert posted.status_code == 202, posted.text
                    elif message.get("id") == request_id:
                        # Read on to the end of the stream (the upstream closes it after this).
                        results[tool] = message["result"]["content"][0]["text"]

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call_and_answer, "a_roots", 1, "file:///alpha")
                nursery.start_soon(call_and_answer, "b_roots", 2, "file:///beta")

        assert results == {"a_roots": "alpha:file:///alpha", "b_roots": "beta:file:///beta"}
        assert asked["a_roots"] != asked["b_roots"]
        assert all(str(asked[t]).startswith("mcpgw:") for t in asked)

        # An answer nobody here asked for is refused at once, never left waiting.
        for stray in ('mcpgw:["nowhere",0]', "mcpgw:not-json"):
            refused = await client.post(
                stack.url, json={"jsonrpc": "2.0", "id": stray, "result": {}}, headers=headers
            )
            assert refused.status_code == 400
            assert (refused.json()["id"], refused.json()["error"]["code"]) == (stray, -32600)


async def test_a_cancellation_goes_through_envoy_to_the_upstream_running_the_call(tmp_path: Path) -> None:
    WAIT_STARTED["c1"], WAIT_CANCELLED["c1"] = trio.Event(), trio.Event()
    async with probes("alpha", "beta") as urls, \
            gateway_stack([("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        headers = session_headers(session, **{"content-type": "application/json"})
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 21}}

        async def slow_call() -> None:
            await client.post(stack.url, json=call_body("b_wait", {"label": "c1"}, request_id=21), headers=headers)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await WAIT_STARTED["c1"].wait()
                posted = await client.post(stack.url, json=cancel, headers=headers)
                assert posted.status_code == 202
                await WAIT_CANCELLED["c1"].wait()  # the upstream running request 21 saw it
                nursery.cancel_scope.cancel()
        # Envoy took the notification to beta's cluster, not to the broker.
        delivered = await stack.envoy.wait_for_access(
            lambda e: e.get("status") == 202 and e.get("mcp_server") == "beta"
        )
        assert delivered[0]["upstream_cluster"] == "mcp_upstream_beta"
