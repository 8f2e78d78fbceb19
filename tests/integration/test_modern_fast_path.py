"""The fast path for 2026-07-28 ("modern") clients (envoy/fast_path.lua, docs/router.md "Modern
clients on the fast path"): after the router has routed a modern call once, Envoy applies that
decision to the next calls with the same inputs itself, without the ext_proc, to a modern
upstream (the official SDK 2.x server, stateless) and to a legacy one (the same SDK, stateful,
on the gateway's shared backend session). Each invariant of the router's own modern path and of
the legacy fast path is checked here on calls that took the fast path, through a real Envoy.

How a test knows a call took the fast path: Envoy's ext_proc counts the streams it opens
(`http.mcp.ext_proc.streams_started`); a fast call opens none. How it knows the broker was not
involved: Envoy's request count on the broker's cluster."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.transport_security import TransportSecuritySettings

from mcp_gateway.config import GatewayConfig, VirtualServer
from mcp_gateway.router.fast_path import BINDING_KEY_PURPOSE, seal_binding
from mcp_gateway.sessions.request_state import TOKEN_PREFIX, RequestBinding
from mcp_gateway.upstream.variants import settled_without_variants
from tests.integration.test_modern_routing import (
    CAPS,
    INFO,
    MODERN,
    TO_BROKER,
    UPSTREAM_STATE,
    VERSION,
    asking_server,
    modern_call,
    modern_headers,
)
from tests.support.changing import changing_upstream
from tests.support.envoy import RunningEnvoy
from tests.support.modern import modern_server, serve_modern
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    gateway_stack,
    serve_asgi,
    serve_sdk_server,
    sse_result,
)
from tests.support.servers import sample_process

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
LUA_ERRORS = "http.mcp.lua.errors"
# Decisions that outlive a test on a loaded machine: in a decision's last fifth one call goes
# through the router again (the renewal) by design, which would count as an ext_proc stream.
LONG_LIVED: dict[str, Any] = {"envoy": {"fast_path": {"ttl_seconds": 30}}}


async def streams(envoy: RunningEnvoy) -> int:
    return await envoy.stat(EXT_PROC_STREAMS)


@asynccontextmanager
async def both_upstreams(
    tmp_path: Path, virtual_servers: tuple[VirtualServer, ...] = (), **gateway: Any
) -> AsyncIterator[tuple[Stack, Callable[[], None]]]:
    """The gateway in front of a legacy upstream (prefix old_) and a modern one (new_)."""
    async with trio.open_nursery() as nursery:
        legacy_port = await nursery.start(serve_sdk_server, modern_server("legacy"))
        modern_port = await nursery.start(serve_modern, asking_server("modern"))
        servers = [
            ("legacy", f"http://127.0.0.1:{legacy_port}/mcp", "old_"),
            ("modern", f"http://127.0.0.1:{modern_port}/mcp", "new_"),
        ]
        async with gateway_stack(servers, tmp_path, virtual_servers, **gateway) as stack:
            yield stack, nursery.cancel_scope.cancel
        nursery.cancel_scope.cancel()


async def post(http: httpx.AsyncClient, stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await http.post(stack.url, json=body, headers=headers)


async def warm(http: httpx.AsyncClient, stack: Stack, name: str, **headers: str) -> None:
    """The router's call of `name`: Envoy learns its decision from it."""
    first = await post(http, stack, modern_call(name, {"a": 1, "b": 1} if name.endswith("add") else None), modern_headers(name, **headers))
    assert first.status_code == 200, first.text


def observed(response: httpx.Response) -> dict[str, Any]:
    message = sse_result(response)
    assert message["result"]["resultType"] == "complete", message
    return dict(json.loads(message["result"]["content"][0]["text"]))


async def test_repeated_modern_calls_skip_the_ext_proc_and_reach_both_kinds_of_upstream_as_the_router_sends_them(
    tmp_path: Path,
) -> None:
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        slow = {}
        for name in ("old_observe", "new_observe"):
            first = await post(http, stack, modern_call(name, request_id=1), modern_headers(name))
            slow[name] = observed(first)
        before, to_broker = await streams(stack.envoy), await stack.envoy.stat(TO_BROKER)
        answers = {
            (name, request_id): await post(http, stack, modern_call(name, request_id=request_id), modern_headers(name))
            for name in ("old_observe", "new_observe")
            for request_id in (2, "two", 3)
        }
        assert await streams(stack.envoy) == before, "a call went through the ext_proc"
        assert await stack.envoy.stat(TO_BROKER) == to_broker
        for (name, request_id), answer in answers.items():
            assert answer.status_code == 200, answer.text
            assert sse_result(answer)["id"] == request_id  # the client's own id, of either type
            assert "mcp-session-id" not in answer.headers  # the shared backend session never shows
            assert not [h for h in answer.headers if h.lower().startswith("x-mcp-")]
            # The upstream saw what the router's call showed it: the prefix stripped in the body
            # (the tool ran) and in Mcp-Name, the revision and the session of its kind.
            assert observed(answer) == slow[name]
        assert slow["old_observe"]["session"] and slow["old_observe"]["version"] == "2025-11-25"
        assert slow["new_observe"]["session"] is None and slow["new_observe"]["version"] == MODERN
        assert slow["new_observe"]["name"] == "observe" == slow["old_observe"]["name"]
        assert await stack.envoy.stat(LUA_ERRORS) == 0


async def test_clients_using_one_id_at_once_on_the_shared_session_each_get_their_own_answer_on_the_fast_path(
    tmp_path: Path,
) -> None:
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        await warm(http, stack, "old_add")
        before = await streams(stack.envoy)
        answers: dict[int, dict[str, Any]] = {}

        async def add(a: int) -> None:
            response = await post(http, stack, modern_call("old_add", {"a": a, "b": 1}, request_id=7), modern_headers("old_add"))
            answers[a] = sse_result(response)

        async with trio.open_nursery() as nursery:
            for a in range(8):
                nursery.start_soon(add, a)
        assert await streams(stack.envoy) == before, "a call went through the ext_proc"
    for a, message in answers.items():
        # Each went out under an id of the gateway's (the SDK server routes answers by id on
        # the one backend session they share) and came back with the client's.
        assert message["id"] == 7
        assert message["result"]["content"][0]["text"] == str(a + 1)
        assert message["result"]["resultType"] == "complete"


def error_of(response: httpx.Response, status: int, request_id: Any) -> int:
    assert response.status_code == status, response.text
    message = response.json()
    assert message["id"] == request_id, message
    return int(message["error"]["code"])


async def test_a_later_call_the_router_would_refuse_gets_its_exact_answer(tmp_path: Path) -> None:
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        for name in ("new_add", "old_add"):
            await warm(http, stack, name)
            # Mcp-Name or Mcp-Method disagreeing with the body, after the agreeing pair was learnt.
            other = name.replace("add", "observe")
            mismatch = await post(http, stack, modern_call(name, request_id=11), modern_headers(other))
            assert error_of(mismatch, 400, 11) == -32020
            wrong_method = await post(http, stack, modern_call(name, request_id=12), modern_headers(name, **{"mcp-method": "prompts/get"}))
            assert error_of(wrong_method, 400, 12) == -32020
            # The version header and the envelope's disagree; both name one we do not serve.
            body = modern_call(name, request_id=13)
            body["params"]["_meta"][VERSION] = "2099-01-01"
            assert error_of(await post(http, stack, body, modern_headers(name)), 400, 13) == -32020
            unsupported = await post(http, stack, body, modern_headers(name, **{"mcp-protocol-version": "2099-01-01"}))
            assert error_of(unsupported, 400, 13) == -32022
            # No envelope, or one without capabilities.
            body = modern_call(name, request_id=14)
            del body["params"]["_meta"]
            assert error_of(await post(http, stack, body, modern_headers(name)), 400, 14) == -32602
            body = modern_call(name, request_id=15)
            del body["params"]["_meta"][CAPS]
            assert error_of(await post(http, stack, body, modern_headers(name)), 400, 15) == -32602
            # ...and the learnt call itself still takes the fast path.
            before = await streams(stack.envoy)
            fine = await post(http, stack, modern_call(name, {"a": 2, "b": 3}, request_id=16), modern_headers(name))
            assert sse_result(fine)["result"]["content"][0]["text"] == "5"
            assert await streams(stack.envoy) == before
        assert await stack.envoy.stat(LUA_ERRORS) == 0


async def test_a_base64_mcp_name_is_routed_by_envoy_once_learnt_and_a_wrong_one_refused(tmp_path: Path) -> None:
    encoded = "=?base64?bmV3X29ic2VydmU=?="  # new_observe
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        first = await post(http, stack, modern_call("new_observe", request_id=1), modern_headers(encoded))
        assert observed(first)["name"] == "observe"
        before = await streams(stack.envoy)
        again = await post(http, stack, modern_call("new_observe", request_id=2), modern_headers(encoded))
        assert await streams(stack.envoy) == before
        assert observed(again)["name"] == "observe" and sse_result(again)["id"] == 2
        # The same header on a body naming another tool: the router's -32020.
        wrong = await post(http, stack, modern_call("new_add", request_id=3), modern_headers(encoded))
        assert error_of(wrong, 400, 3) == -32020


async def test_what_the_decision_did_not_see_is_the_routers_or_the_brokers(tmp_path: Path) -> None:
    narrow = VirtualServer(name="team/narrow", tools=["new_add"])
    async with both_upstreams(tmp_path, (narrow,), **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        await warm(http, stack, "old_add")
        await warm(http, stack, "new_observe")
        to_broker = await stack.envoy.stat(TO_BROKER)
        # Calls declaring a feature, and retries: the broker's, every time.
        declaring: list[dict[str, Any]] = [{"elicitation": {}}, {"roots": {}}, {"sampling": {}}]
        for request_id, capabilities in enumerate(declaring, start=1):
            asked = await post(
                http, stack, modern_call("old_add", {"a": 1, "b": 2}, request_id, capabilities), modern_headers("old_add")
            )
            assert sse_result(asked)["result"]["content"][0]["text"] == "3"
            assert await stack.envoy.stat(TO_BROKER) == to_broker + request_id
        await post(http, stack, modern_call("old_add", requestState="mgw1.x"), modern_headers("old_add"))
        await post(http, stack, modern_call("old_add", inputResponses={}), modern_headers("old_add"))
        assert await stack.envoy.stat(TO_BROKER) == to_broker + 5
        # Another virtual server: another decision (this one does not offer new_observe).
        outside = await post(
            http, stack, modern_call("new_observe", request_id=6), modern_headers("new_observe", **{"x-mcp-virtualserver": "team/narrow"})
        )
        assert error_of(outside, 400, 6) == -32602
        # An Origin the gateway does not allow.
        foreign = await post(http, stack, modern_call("new_observe", request_id=7), modern_headers("new_observe", origin="http://evil.example"))
        assert error_of(foreign, 403, 7) == -32600
        # Another Authorization (the router decides for a bearer token): the router's call.
        before = await streams(stack.envoy)
        bearer = await post(http, stack, modern_call("new_observe", request_id=8), modern_headers("new_observe", authorization="Bearer x"))
        assert observed(bearer)["server"] == "modern"
        assert await streams(stack.envoy) == before + 1
        # Another clientInfo in the envelope: the router's call too.
        body = modern_call("new_observe", request_id=9)
        body["params"]["_meta"][INFO] = {"name": "another", "version": "2"}
        assert observed(await post(http, stack, body, modern_headers("new_observe")))["server"] == "modern"
        assert await streams(stack.envoy) == before + 2


async def test_an_input_required_answer_to_a_fast_call_reaches_the_client_sealed_and_its_retry_opens(
    tmp_path: Path,
) -> None:
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        await warm(http, stack, "new_ask")
        sealed_by_router = len([e for e in stack.envoy.access_entries() if e["details"] == "mcp_gateway_router"])
        before = await streams(stack.envoy)
        response = await post(http, stack, modern_call("new_ask", request_id=5), modern_headers("new_ask"))
        assert response.status_code == 200, response.text
        assert UPSTREAM_STATE not in response.text
        message = sse_result(response)
        assert message["id"] == 5
        result = message["result"]
        assert result["resultType"] == "input_required"
        state = result["requestState"]
        assert state.startswith(TOKEN_PREFIX)
        # The call was Envoy's; its answer's one trip through the router was the seal, the Lua
        # filter's own request over the internal listener, which the router answers itself.
        assert await streams(stack.envoy) == before + 1
        await stack.envoy.wait_for_access(lambda e: e["details"] == "mcp_gateway_router" and e["mcp_method"] in (None, "-"))
        assert len([e for e in stack.envoy.access_entries() if e["details"] == "mcp_gateway_router"]) == sealed_by_router + 1
        # The retry goes to the broker, which opens the state: it was sealed for this upstream,
        # method, name and caller (the upstream asks again: a new sealed state, not an error).
        to_broker = await stack.envoy.stat(TO_BROKER)
        retry = await post(
            http, stack,
            modern_call("new_ask", request_id=6, inputResponses={"q": {"action": "accept", "content": {}}}, requestState=state),
            modern_headers("new_ask"),
        )
        assert await stack.envoy.stat(TO_BROKER) == to_broker + 1
        assert retry.status_code == 200, retry.text
        again = retry.json()["result"] if retry.headers["content-type"].startswith("application/json") else sse_result(retry)["result"]
        assert again["resultType"] == "input_required" and again["requestState"].startswith(TOKEN_PREFIX)
        assert UPSTREAM_STATE not in retry.text


async def test_a_fast_calls_progress_from_a_legacy_upstream_streams_as_it_is_written(tmp_path: Path) -> None:
    async with sample_process("slow") as slow, gateway_stack(
        [("slow", slow.url, "slow_")], tmp_path, envoy={"fast_path": {"ttl_seconds": 10}}
    ) as stack, httpx.AsyncClient(timeout=20) as http:
        warmup = modern_call("slow_count", {"steps": 1, "delay_seconds": 0}, request_id=1)
        assert (await post(http, stack, warmup, modern_headers("slow_count"))).status_code == 200
        before = await streams(stack.envoy)
        body = modern_call("slow_count", {"steps": 3, "delay_seconds": 0.4}, request_id="seven")
        body["params"]["_meta"]["progressToken"] = "p7"
        arrivals: list[tuple[float, dict[str, Any]]] = []
        async with http.stream("POST", stack.url, json=body, headers=modern_headers("slow_count")) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            async for line in answer.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((trio.current_time(), json.loads(line[5:])))
        assert await streams(stack.envoy) == before
        progress = [t for t, message in arrivals if message.get("method") == "notifications/progress"]
        assert len(progress) == 3
        assert all(m["params"]["progressToken"] == "p7" for _, m in arrivals if m.get("method") == "notifications/progress")
        last = arrivals[-1][1]
        assert last["id"] == "seven" and last["result"]["resultType"] == "complete"
        # Each event when the upstream wrote it (0.4 s apart), not all together at the end.
        assert progress[2] - progress[0] > 0.6
        assert arrivals[-1][0] - progress[0] > 0.6


def with_fast_path_ttl(stack: Stack, ttl_seconds: float) -> GatewayConfig:
    """The stack's config with another decision lifetime (a new generation), and Envoy's xDS
    directory and admin port, so the router writes the routes on reload."""
    admin_port = int(stack.envoy.admin_url.rsplit(":", 1)[1])
    gateway = stack.config.gateway
    fast = gateway.envoy.fast_path.model_copy(update={"ttl_seconds": ttl_seconds})
    envoy = gateway.envoy.model_copy(update={"xds_dir": str(stack.envoy.xds.xds_dir), "admin_port": admin_port, "fast_path": fast})
    return stack.config.model_copy(update={"gateway": gateway.model_copy(update={"envoy": envoy})})


async def test_decisions_expire_and_a_reload_drops_them(tmp_path: Path) -> None:
    async with both_upstreams(tmp_path, envoy={"fast_path": {"ttl_seconds": 0.5}}) as (stack, _), \
            httpx.AsyncClient(timeout=15) as http:
        await warm(http, stack, "new_add")
        learnt_at = trio.current_time()
        before = await streams(stack.envoy)
        await post(http, stack, modern_call("new_add", {"a": 1, "b": 1}), modern_headers("new_add"))
        if trio.current_time() - learnt_at < 0.4:  # inside the lifetime, before its last fifth
            assert await streams(stack.envoy) == before
        await trio.sleep_until(learnt_at + 0.6)  # past the decision's end, whatever the machine's load
        expired = await streams(stack.envoy)
        await post(http, stack, modern_call("new_add", {"a": 1, "b": 1}), modern_headers("new_add"))
        assert await streams(stack.envoy) == expired + 1

        # A reload (a new generation): Envoy drops what it learnt under the old one.
        reloads = await stack.envoy.stat("http.mcp.rds.mcp_routes.config_reload")
        await stack.router_reloads.send(with_fast_path_ttl(stack, 30))
        with trio.fail_after(10):
            while await stack.envoy.stat("http.mcp.rds.mcp_routes.config_reload") == reloads:  # noqa: ASYNC110
                await trio.sleep(0.02)
        learnt = await streams(stack.envoy)
        await post(http, stack, modern_call("new_add", {"a": 1, "b": 1}), modern_headers("new_add"))
        assert await streams(stack.envoy) == learnt + 1
        await post(http, stack, modern_call("new_add", {"a": 1, "b": 1}), modern_headers("new_add"))
        assert await streams(stack.envoy) == learnt + 1  # learnt again, under the new generation


async def test_a_tool_limit_refuses_a_fast_modern_call_with_its_id(tmp_path: Path) -> None:
    limits = {"per_tool": [{"tool": "*_add", "requests": 3, "per_seconds": 60}]}
    async with both_upstreams(tmp_path, rate_limits=limits, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        await warm(http, stack, "old_add")  # 1 (the router's)
        before = await streams(stack.envoy)
        for request_id in (2, 3):
            answer = await post(http, stack, modern_call("old_add", {"a": 1, "b": 1}, request_id), modern_headers("old_add"))
            assert sse_result(answer)["id"] == request_id
        refused = await post(http, stack, modern_call("old_add", {"a": 1, "b": 1}, "fourth"), modern_headers("old_add"))
        assert await streams(stack.envoy) == before, "these calls did not all take the fast path"
        assert refused.status_code == 429, refused.text
        assert refused.json() == {"jsonrpc": "2.0", "id": "fourth", "error": {"code": -32029, "message": "Rate limit exceeded"}}
        assert "mcp-session-id" not in refused.headers


async def test_fast_modern_calls_are_counted_in_the_routed_call_metrics(tmp_path: Path) -> None:
    from tests.integration.test_routed_call_metrics import labels, metrics_until

    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        for name in ("old_add", "new_add"):
            await warm(http, stack, name)
        before = await streams(stack.envoy)
        for request_id in (2, 3, 4):
            for name in ("old_add", "new_add"):
                await post(http, stack, modern_call(name, {"a": 1, "b": 1}, request_id), modern_headers(name))
        assert await streams(stack.envoy) == before
        for server in ("legacy", "modern"):
            key = labels(server=server, method="tools/call", name="add", status="200")
            await metrics_until(http, stack, "mcp_gateway_routed_calls_total", key, 4)


async def modern_tool_names(http: httpx.AsyncClient, stack: Stack) -> list[str]:
    """tools/list as a modern client asks it (the broker answers)."""
    params = {"_meta": modern_call("x")["params"]["_meta"]}
    headers = modern_headers("x", **{"mcp-method": "tools/list"})
    del headers["mcp-name"]
    listed = await http.post(stack.url, json={"jsonrpc": "2.0", "id": 90, "method": "tools/list", "params": params}, headers=headers)
    assert listed.status_code == 200, listed.text
    page = listed.json() if listed.headers["content-type"].startswith("application/json") else sse_result(listed)
    return [tool["name"] for tool in page["result"]["tools"]]


async def test_a_change_told_in_a_fast_modern_calls_answer_is_listed_before_the_client_reads_it(tmp_path: Path) -> None:
    async with changing_upstream() as upstream, gateway_stack([("ch", upstream.url, "ch_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=20) as http:
        for request_id, name in ((1, "first"), (2, "second")):
            before = await streams(stack.envoy)
            body = modern_call("ch_add_tool_in_answer", {"name": name}, request_id)
            listed_on_notice: list[str] | None = None
            result: dict[str, Any] = {}
            async with http.stream("POST", stack.url, json=body, headers=modern_headers("ch_add_tool_in_answer")) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                async for line in answer.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("method") == "notifications/tools/list_changed":
                        listed_on_notice = await modern_tool_names(http, stack)
                    elif message.get("id") == request_id:
                        result = message
            assert result["result"]["content"][0]["text"] == f"added {name}"
            assert listed_on_notice is not None, "the list_changed in the answer never reached the client"
            assert f"ch_{name}" in listed_on_notice
            if request_id == 2:  # the second call was Envoy's alone (the listing is the broker's)
                assert await streams(stack.envoy) == before + 1


async def test_an_upstream_restart_under_a_fast_modern_call_is_invisible_and_a_dead_one_is_a_json_rpc_error(
    tmp_path: Path,
) -> None:
    async with sample_process("echo") as echo:
        port = echo.port
        async with gateway_stack([("echo", echo.url, "e_")], tmp_path, envoy={"fast_path": {"ttl_seconds": 20}}) as stack, \
                httpx.AsyncClient(timeout=20) as http:
            await warm(http, stack, "e_add")
            await echo.kill()
            async with sample_process("echo", port=port):
                # The router routes a modern call itself only to an upstream whose capability
                # variants are known (else the broker does): once the supervisor is back on it.
                with trio.fail_after(10):
                    while not settled_without_variants("echo"):  # noqa: ASYNC110
                        await trio.sleep(0.02)
                # Envoy sends it on the old shared backend session; the upstream answers 404; the
                # Lua filter replays it through the router, which opens a new one.
                replayed = await post(http, stack, modern_call("e_add", {"a": 20, "b": 22}, 3), modern_headers("e_add"))
                assert replayed.status_code == 200, replayed.text
                message = sse_result(replayed)
                assert message["id"] == 3 and message["result"]["content"][0]["text"] == "42"
                assert message["result"]["resultType"] == "complete"
                assert "mcp-session-id" not in replayed.headers
                # It was Envoy's call: besides the call itself, Envoy's log has its replay through
                # the router (which opened a new backend session and sent it again).
                with trio.fail_after(5):
                    while len(adds := [e for e in stack.envoy.access_entries() if e["mcp_tool"] == "add"]) < 3:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                assert sorted(str(e["details"]) for e in adds[1:]) == ["mcp_gateway_router", "via_upstream"]
                relearn = await post(http, stack, modern_call("e_add", {"a": 1, "b": 1}, 4), modern_headers("e_add"))
                assert sse_result(relearn)["result"]["content"][0]["text"] == "2"
                before = await streams(stack.envoy)
                later = await post(http, stack, modern_call("e_add", {"a": 2, "b": 2}, 5), modern_headers("e_add"))
                assert sse_result(later)["result"]["content"][0]["text"] == "4"
                assert await streams(stack.envoy) == before
            # The upstream gone: the router's JSON-RPC error, with the id, from Envoy's own answer.
            down = await post(http, stack, modern_call("e_add", {"a": 1, "b": 1}, 8), modern_headers("e_add"))
            assert down.status_code == 200, down.text
            assert down.json() == {"jsonrpc": "2.0", "id": 8, "error": {"code": -32603, "message": "Upstream 'echo' is unavailable"}}
            assert not [h for h in down.headers if h.lower().startswith("x-mcp-") or h.lower() == "mcp-session-id"]
            assert await stack.envoy.stat(LUA_ERRORS) == 0


async def test_a_client_cannot_have_a_state_sealed(tmp_path: Path) -> None:
    """Only the Lua filter's own request over Envoy's internal listener reaches the router as a
    seal request: from a client, even with a binding the router made, both header spellings are
    dropped before the router, and the body is judged as the client's request it is."""
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        binding = seal_binding(
            stack.broker.tokens.derived_key(BINDING_KEY_PURPOSE), RequestBinding("modern", "tools/call", "new_ask", "")
        )
        answer = {"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required", "requestState": "forged", "inputRequests": {}}}
        for header in ("mcp-gateway-seal", "x-mcp-seal"):
            response = await http.post(stack.url, json=answer, headers={**modern_headers("new_ask"), header: binding})
            assert TOKEN_PREFIX not in response.text, response.text
            assert response.status_code >= 400, response.text


async def test_a_legacy_upstreams_json_answers_small_and_large_get_the_clients_id_back(tmp_path: Path) -> None:
    """A JSON answer is restored whole: read at once when small (its content-length), streamed
    through when larger (here 200 KB, over what the filter reads at once)."""
    server = modern_server("legacy")

    @server.tool(description="A long text.")
    def big(size: int) -> str:
        return "x" * size

    app = server.streamable_http_app(
        json_response=True,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=[]
        ),
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, app)
        async with gateway_stack([("legacy", f"http://127.0.0.1:{port}/mcp", "old_")], tmp_path, **LONG_LIVED) as stack, \
                httpx.AsyncClient(timeout=15) as http:
            for name in ("old_add", "old_big"):
                first = await post(http, stack, modern_call(name, {"a": 1, "b": 1, "size": 1}), modern_headers(name))
                assert first.status_code == 200, first.text
            before = await streams(stack.envoy)
            small = await post(http, stack, modern_call("old_add", {"a": 2, "b": 2}, "small"), modern_headers("old_add"))
            large = await post(http, stack, modern_call("old_big", {"size": 200_000}, 9), modern_headers("old_big"))
            assert await streams(stack.envoy) == before
            for answer, request_id in ((small, "small"), (large, 9)):
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"].startswith("application/json")
                message = answer.json()
                assert message["id"] == request_id and message["result"]["resultType"] == "complete"
                assert "mcp-session-id" not in answer.headers
            assert small.json()["result"]["content"][0]["text"] == "4"
            assert large.json()["result"]["content"][0]["text"] == "x" * 200_000
        nursery.cancel_scope.cancel()


async def test_the_official_sdk_client_reads_fast_answers_of_both_kinds_of_upstream(tmp_path: Path) -> None:
    """The SDK's own 2026-07-28 client, calling each tool again and again: the calls after the
    first are Envoy's, and the client reads their answers (its id, `resultType`, progress from
    the legacy upstream as it comes) as it reads the router's."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _):
        with trio.fail_after(30):
            async with Client(streamable_http_client(stack.url), mode=MODERN) as client:
                for name in ("old_add", "new_add"):
                    await client.call_tool(name, {"a": 0, "b": 0})
                await client.call_tool("old_count", {"steps": 1}, progress_callback=on_progress)
                before = await streams(stack.envoy)
                sums = [
                    (await client.call_tool(name, {"a": a, "b": 1})).structured_content
                    for a in range(3)
                    for name in ("old_add", "new_add")
                ]
                counted = await client.call_tool("old_count", {"steps": 3}, progress_callback=on_progress)
                assert await streams(stack.envoy) == before, "a call went through the ext_proc"
    gc.collect()  # the SDK client's warnings surface here, not in another test
    assert sums == [{"result": a + 1} for a in range(3) for _ in range(2)]
    assert counted.content[0].text == "legacy counted to 3"  # type: ignore[union-attr]
    assert progress == [1.0, 1.0, 2.0, 3.0]
