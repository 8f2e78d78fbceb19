"""Upstreams that die, hang, come back, and configs that change under running clients.

Real sample servers as subprocesses (so "killed" means SIGKILL), the broker in the test's own
Trio run, the official SDK client where a client's view matters.
"""

from __future__ import annotations

import gc
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.config import load_config
from mcp_gateway.serve import watch_config
from tests.support.servers import (
    Broker,
    gateway_config,
    initialize_body,
    running_broker,
    sample_in_process,
    sample_process,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def _session(http: httpx.AsyncClient, broker: Broker) -> dict[str, str]:
    init = initialize_body()
    response = await http.post(broker.url, json=init, headers=HEADERS)
    return {
        **HEADERS,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }


async def _tool_names(
    http: httpx.AsyncClient, broker: Broker, session: dict[str, str]
) -> list[str]:
    body = (
        await http.post(
            broker.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session
        )
    ).json()
    return [t["name"] for t in body["result"]["tools"]]


async def _wait_for(predicate: Any, *, within: float) -> float:
    """Poll an HTTP-observable condition; return how long it took."""
    started = trio.current_time()
    with trio.fail_after(within):
        while not await predicate():  # noqa: ASYNC110 - the condition lives in another process
            await trio.sleep(0.05)
    return trio.current_time() - started


async def test_a_killed_upstream_leaves_the_list_and_returns_on_its_own() -> None:
    async with sample_process("dynamic") as dynamic, sample_process("echo") as echo:
        config = gateway_config([("dynamic", dynamic.url, "dyn_"), ("echo", echo.url, "echo_")])
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=10) as http:
            session = await _session(http, broker)
            assert await _tool_names(http, broker, session) == [
                "dyn_add_tool",
                "dyn_remove_tool",
                "dyn_hello",
                "echo_echo",
                "echo_add",
            ]
            async with Client(streamable_http_client(broker.url), mode="legacy") as client:
                await dynamic.kill()

                async def dynamic_gone() -> bool:
                    return await _tool_names(http, broker, session) == ["echo_echo", "echo_add"]

                await _wait_for(dynamic_gone, within=5)
                status = (await http.get(f"{broker.admin}/status/dynamic")).json()
                assert status["state"] in ("failed", "connecting")
                assert status["reason"]  # says why: the GET stream broke / connection refused
                # The other upstream is untouched, and calls to it still work.
                added = await client.call_tool("echo_add", {"a": 2, "b": 3})
                assert added.structured_content == {"result": 5}

                async with sample_process("dynamic", port=dynamic.port):
                    restarted = trio.current_time()

                    async def dynamic_back() -> bool:
                        return "dyn_hello" in await _tool_names(http, broker, session)

                    await _wait_for(dynamic_back, within=5)
                    assert trio.current_time() - restarted < 5
                    # The same client calls the restarted upstream with no action of its own:
                    # its old backend session is gone, the broker opens a new one and replays.
                    hello = await client.call_tool("dyn_hello", {})
                    assert hello.content[0].text == "hello"  # type: ignore[union-attr]
                    assert (await http.get(f"{broker.admin}/status/dynamic")).json()[
                        "state"
                    ] == "ready"
            gc.collect()


async def test_a_hanging_upstream_delays_neither_discovery_nor_tools_list() -> None:
    async def never_answer(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery, sample_in_process("echo") as echo:
        [listener] = await nursery.start(partial(trio.serve_tcp, never_answer, 0, host="127.0.0.1"))
        hang_port = listener.socket.getsockname()[1]
        config = gateway_config(
            [("hang", f"http://127.0.0.1:{hang_port}/mcp", "hang_"), ("echo", echo, "echo_")]
        )
        async with (
            running_broker(config, wait_ready=False) as broker,
            httpx.AsyncClient(timeout=10) as http,
        ):
            session = await _session(http, broker)

            async def echo_listed() -> bool:
                return await _tool_names(http, broker, session) == ["echo_echo", "echo_add"]

            assert await _wait_for(echo_listed, within=2) < 1.0
            started = time.perf_counter()
            for _ in range(20):
                assert await _tool_names(http, broker, session) == ["echo_echo", "echo_add"]
            assert (time.perf_counter() - started) / 20 < 0.1
            hang = (await http.get(f"{broker.admin}/status/hang")).json()
            assert hang["state"] == "connecting"
            assert (await http.get(f"{broker.admin}/readyz")).status_code == 503
        nursery.cancel_scope.cancel()


async def test_list_changed_reaches_every_open_get_stream_and_keepalives_flow() -> None:
    async with sample_in_process("dynamic") as dynamic:
        config = gateway_config([("dynamic", dynamic, "dyn_")])
        async with (
            running_broker(config, keepalive_seconds=0.2) as broker,
            httpx.AsyncClient(timeout=10) as http,
        ):
            sessions = [await _session(http, broker) for _ in range(3)]
            received: list[tuple[int, str]] = []
            all_heard = trio.Event()
            kept_alive = trio.Event()

            async def listen(index: int, session: dict[str, str], *, task_status: Any) -> None:
                headers = {**session, "accept": "text/event-stream"}
                async with http.stream("GET", broker.url, headers=headers) as response:
                    assert response.status_code == 200
                    task_status.started()
                    async for line in response.aiter_lines():
                        if line.startswith(":"):
                            received.append((index, line))
                            if {i for i, seen in received if seen == ": keep-alive"} == {0, 1, 2}:
                                kept_alive.set()
                        elif line.startswith("data:"):
                            received.append((index, line[5:].strip()))
                            if sum(1 for _, d in received if "list_changed" in d) == 3:
                                all_heard.set()

            async with trio.open_nursery() as nursery:
                for index, session in enumerate(sessions):
                    await nursery.start(listen, index, session)
                with trio.fail_after(5):  # idle: keep-alive comments arrive on every stream
                    await kept_alive.wait()
                call = {
                    "jsonrpc": "2.0",
                    "id": 3,
                    "method": "tools/call",
                    "params": {"name": "dyn_add_tool", "arguments": {"name": "fresh"}},
                }
                started = trio.current_time()
                answer = await http.post(broker.url, json=call, headers=sessions[0])
                assert answer.json()["result"]["content"][0]["text"] == "added fresh"
                with trio.fail_after(1):
                    await all_heard.wait()
                assert trio.current_time() - started < 1
                nursery.cancel_scope.cancel()
            assert {i for i, line in received if line == ": keep-alive"} == {0, 1, 2}
            notes = [d for _, d in received if "list_changed" in d]
            assert notes == ['{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'] * 3
            assert "dyn_fresh" in await _tool_names(http, broker, sessions[1])


async def test_three_hundred_tools_page_through_the_sdk_client() -> None:
    async with sample_process("many", env={"MCP_SAMPLE_TOOLS": "300"}) as many:
        config = gateway_config([("many", many.url, "m_")], page_size=100)
        async with running_broker(config) as broker:
            async with Client(streamable_http_client(broker.url), mode="legacy") as client:
                names: list[str] = []
                cursor = None
                pages = 0
                while True:
                    result = await client.list_tools(cursor=cursor)
                    names.extend(t.name for t in result.tools)
                    pages += 1
                    cursor = result.next_cursor
                    if cursor is None:
                        break
            gc.collect()
    assert pages == 3
    assert names == [f"m_tool_{i:04d}" for i in range(300)]


def _write(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(document))
    tmp.replace(path)  # atomic, like an editor or a Secret volume


async def test_config_reload_adds_and_removes_servers_and_a_broken_file_changes_only_status(
    tmp_path: Path,
) -> None:
    async with sample_in_process("echo") as echo, sample_in_process("dynamic") as dynamic:
        path = tmp_path / "config.yaml"

        def document(*servers: tuple[str, str, str]) -> dict[str, Any]:
            return {
                "servers": [
                    {"name": n, "url": u, "prefix": p, "timeoutSeconds": 5.0} for n, u, p in servers
                ],
                "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
            }

        _write(path, document(("echo", echo, "echo_")))
        config = load_config(path)
        async with (
            running_broker(config) as broker,
            httpx.AsyncClient(timeout=10) as http,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(
                watch_config, str(path), config, [broker.reloads], broker.reload_state, 0.05
            )
            session = await _session(http, broker)
            assert await _tool_names(http, broker, session) == ["echo_echo", "echo_add"]

            _write(path, document(("dynamic", dynamic, "dyn_")))

            async def swapped() -> bool:
                return await _tool_names(http, broker, session) == [
                    "dyn_add_tool",
                    "dyn_remove_tool",
                    "dyn_hello",
                ]

            await _wait_for(swapped, within=5)
            # The client session survived the reload.
            ping = await http.post(
                broker.url, json={"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers=session
            )
            assert ping.json()["result"] == {}

            path.write_text("servers:\n  - name: broken\n    url: ftp://nope\n")

            async def refused() -> bool:
                status = (await http.get(f"{broker.admin}/status")).json()
                return status["config"]["lastError"] is not None

            await _wait_for(refused, within=5)
            status = (await http.get(f"{broker.admin}/status")).json()
            assert "servers[0].url" in status["config"]["lastError"]
            assert [u["name"] for u in status["upstreams"]] == ["dynamic"]
            assert await _tool_names(http, broker, session) == [
                "dyn_add_tool",
                "dyn_remove_tool",
                "dyn_hello",
            ]
            nursery.cancel_scope.cancel()


async def test_delete_ends_the_backend_sessions_the_broker_opened() -> None:
    async with sample_in_process("echo") as echo:
        config = gateway_config([("echo", echo, "echo_")])
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=10) as http:
            session = await _session(http, broker)
            call = {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "echo_echo", "arguments": {"text": "x"}},
            }
            answer = await http.post(broker.url, json=call, headers=session)
            assert answer.json()["result"]["content"][0]["text"] == "x"
            # The backend session id stays inside the gateway: not in the answer's headers.
            claims = broker.tokens.verify(session["mcp-session-id"])
            assert claims is not None
            backend = (await broker.store.backends(claims.session_id))["echo"]
            assert backend not in answer.text and backend not in str(answer.headers)
            on_upstream = {
                **HEADERS,
                "mcp-session-id": backend,
                "mcp-protocol-version": "2025-11-25",
            }
            ping = {"jsonrpc": "2.0", "id": 4, "method": "ping"}
            assert (await http.post(echo, json=ping, headers=on_upstream)).status_code == 200
            assert (await http.delete(broker.url, headers=session)).status_code == 200
            assert (await http.post(echo, json=ping, headers=on_upstream)).status_code == 404


async def test_a_clients_cancellation_reaches_the_upstream_running_its_call() -> None:
    from mcp_gateway.upstream import open_backend_session

    async with sample_in_process("conformance") as fixture:
        config = gateway_config([("fx", fixture, "fx_")])
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            session = await _session(http, broker)

            async def call(name: str, arguments: dict[str, Any], rid: int) -> dict[str, Any]:
                body = {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "method": "tools/call",
                    "params": {"name": name, "arguments": arguments},
                }
                return dict((await http.post(broker.url, json=body, headers=session)).json())

            async def cancelled_labels() -> list[str]:
                answer = await call("fx_test_cancelled_operations", {}, 99)
                return list(json.loads(answer["result"]["content"][0]["text"]))

            async def running(label: str) -> bool:
                """The upstream has started the slow operation `label` (its own word for it)."""
                answer = await call("fx_test_started_operations", {}, 98)
                return label in json.loads(answer["result"]["content"][0]["text"])

            async def cancel(rid: int) -> None:
                note = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": rid, "reason": "user"},
                }
                assert (await http.post(broker.url, json=note, headers=session)).status_code == 202

            # 1. A call the broker forwards itself.
            answers: list[dict[str, Any]] = []

            async def slow_call() -> None:
                answers.append(await call("fx_test_slow_operation", {"label": "fallback"}, 41))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await _wait_for(lambda: running("fallback"), within=3)
                started = trio.current_time()
                await cancel(41)
            assert trio.current_time() - started < 3
            assert answers[0]["id"] == 41 and answers[0]["error"]["code"] == -32800

            async def fallback_cancelled() -> bool:
                return "fallback" in await cancelled_labels()

            await _wait_for(fallback_cancelled, within=3)

            # 2. A call Envoy routed straight to the upstream on this client's backend session.
            claims = broker.tokens.verify(session["mcp-session-id"])
            assert claims is not None
            server = config.server("fx")
            assert server is not None
            backend = await broker.store.get_backend(claims.session_id, "fx")
            if backend is None:
                backend = await open_backend_session(
                    server, "2025-11-25", {"name": "t", "version": "1"}
                )
                await broker.store.set_backend(claims.session_id, "fx", backend)
            on_upstream = {
                **HEADERS,
                "mcp-session-id": backend,
                "mcp-protocol-version": "2025-11-25",
            }
            routed = {
                "jsonrpc": "2.0",
                "id": 77,
                "method": "tools/call",
                "params": {"name": "test_slow_operation", "arguments": {"label": "routed"}},
            }
            async with trio.open_nursery() as nursery:

                async def routed_call() -> None:
                    with trio.move_on_after(10):
                        await http.post(fixture, json=routed, headers=on_upstream)

                nursery.start_soon(routed_call)
                await _wait_for(lambda: running("routed"), within=3)
                await cancel(77)

                async def routed_cancelled() -> bool:
                    return "routed" in await cancelled_labels()

                await _wait_for(routed_cancelled, within=3)
                nursery.cancel_scope.cancel()


async def test_resource_updates_reach_only_the_subscribing_client() -> None:
    async with sample_in_process("conformance") as fixture:
        config = gateway_config([("fx", fixture, "fx_")])
        async with (
            running_broker(config) as broker,
            httpx.AsyncClient(timeout=20) as http,
            trio.open_nursery() as nursery,
        ):
            subscriber, bystander = await _session(http, broker), await _session(http, broker)
            heard: dict[str, list[dict[str, Any]]] = {"subscriber": [], "bystander": []}
            got_update = trio.Event()

            async def listen(who: str, session: dict[str, str], *, task_status: Any) -> None:
                headers = {**session, "accept": "text/event-stream"}
                async with http.stream("GET", broker.url, headers=headers) as response:
                    task_status.started()
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            heard[who].append(json.loads(line[5:]))
                            if who == "subscriber":
                                got_update.set()

            await nursery.start(listen, "subscriber", subscriber)
            await nursery.start(listen, "bystander", bystander)
            uri = "mcp-gateway:fx_test://watched-resource"
            subscribe = {
                "jsonrpc": "2.0",
                "id": 5,
                "method": "resources/subscribe",
                "params": {"uri": uri},
            }
            answer = await http.post(broker.url, json=subscribe, headers=subscriber)
            # The backend session's own stream is held before the subscribe is answered.
            assert answer.json() == {"jsonrpc": "2.0", "id": 5, "result": {}}
            update = {
                "jsonrpc": "2.0",
                "id": 6,
                "method": "tools/call",
                "params": {"name": "fx_test_update_watched_resource", "arguments": {}},
            }
            result = (await http.post(broker.url, json=update, headers=bystander)).json()
            assert result["result"]["content"][0]["text"] == "notified 1 subscriber(s)"
            with trio.fail_after(2):
                await got_update.wait()
            # The positive signal that the first update is over for the bystander too: it
            # subscribes now, and the second update is the first thing its stream carries (its
            # stream is ordered, so a wrongly delivered first update would come before it).
            answer = await http.post(broker.url, json={**subscribe, "id": 7}, headers=bystander)
            assert answer.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
            result = (await http.post(broker.url, json={**update, "id": 8}, headers=bystander)).json()
            assert result["result"]["content"][0]["text"] == "notified 2 subscriber(s)"
            with trio.fail_after(2):
                while not (heard["bystander"] and len(heard["subscriber"]) == 2):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            updated = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
            assert heard["subscriber"] == [updated, updated]
            assert heard["bystander"] == [updated]
            nursery.cancel_scope.cancel()


async def test_set_level_reaches_the_clients_backend_sessions() -> None:
    async with sample_in_process("conformance") as fixture:
        config = gateway_config([("fx", fixture, "fx_")])
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            session = await _session(http, broker)

            async def log_messages(rid: int) -> list[dict[str, Any]]:
                call = {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "method": "tools/call",
                    "params": {
                        "name": "fx_test_tool_with_logging",
                        "arguments": {},
                        "_meta": {"progressToken": rid},
                    },
                }
                answer = await http.post(broker.url, json=call, headers=session)
                messages = [
                    json.loads(line[5:])
                    for line in answer.text.splitlines()
                    if line.startswith("data:")
                ]
                assert messages[-1]["id"] == rid and "result" in messages[-1]
                return [m for m in messages if m.get("method") == "notifications/message"]

            assert [m["params"]["level"] for m in await log_messages(1)] == ["info"] * 3
            set_level = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "logging/setLevel",
                "params": {"level": "error"},
            }
            assert (await http.post(broker.url, json=set_level, headers=session)).json()[
                "result"
            ] == {}
            assert await log_messages(3) == []
            bad = {**set_level, "params": {"level": "loud"}}
            assert (await http.post(broker.url, json=bad, headers=session)).json()["error"][
                "code"
            ] == -32602


async def test_completion_goes_to_the_owner_of_the_prompt_it_names() -> None:
    async with sample_in_process("conformance") as fixture:
        config = gateway_config([("fx", fixture, "fx_")])
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            session = await _session(http, broker)
            complete = {
                "jsonrpc": "2.0",
                "id": 31,
                "method": "completion/complete",
                "params": {
                    "ref": {"type": "ref/prompt", "name": "fx_test_prompt_with_arguments"},
                    "argument": {"name": "arg1", "value": "a"},
                },
            }
            answer = (await http.post(broker.url, json=complete, headers=session)).json()
            assert answer["id"] == 31
            assert isinstance(answer["result"]["completion"]["values"], list)
            unknown = {
                **complete,
                "params": {**complete["params"], "ref": {"type": "ref/prompt", "name": "nope"}},
            }
            missing = (await http.post(broker.url, json=unknown, headers=session)).json()
            assert missing["error"]["code"] == -32602
            bad = {**complete, "params": {"ref": "x"}}
            assert (await http.post(broker.url, json=bad, headers=session)).json()["error"][
                "code"
            ] == -32602
