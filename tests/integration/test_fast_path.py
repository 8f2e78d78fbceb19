"""The fast path (envoy/fast_path.lua, docs/router.md): after the router's first decision for a
(session, name), Envoy routes the session's next calls itself, without the ext_proc. Each
invariant of the slow path is checked here on calls that took the fast path, through a real
Envoy, with real MCP servers (official SDK) and raw HTTP clients.

How a test knows a call took the fast path: Envoy's ext_proc counts the streams it opens
(`http.mcp.ext_proc.streams_started`); a fast call opens none, and its access-log line shows
the upstream's cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import VirtualServer
from tests.support.changing import changing_upstream
from tests.support.envoy import RunningEnvoy
from tests.support.routing import (
    Stack,
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
)
from tests.support.servers import sample_process

pytestmark = pytest.mark.integration

EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
# Tests that count ext_proc streams keep decisions longer than they run on a loaded machine: in the
# default 1 s lifetime's last fifth one call goes through the router (the renewal) by design.
LONG_LIVED = {"envoy": {"fast_path": {"ttl_seconds": 30}}}
LUA_ERRORS = "http.mcp.lua.errors"


async def ext_proc_streams(envoy: RunningEnvoy) -> int:
    return await envoy.stat(EXT_PROC_STREAMS)


async def call(client: httpx.AsyncClient, stack: Stack, session: str, name: str, request_id: int = 1,
               arguments: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return await client.post(
        stack.url, json=call_body(name, arguments, request_id), headers=session_headers(session, **headers)
    )


def observed(response: httpx.Response) -> dict[str, Any]:
    message = sse_result(response)
    assert "result" in message, message
    return dict(json.loads(message["result"]["content"][0]["text"]))


async def test_repeated_calls_skip_the_ext_proc_and_reach_the_upstream_as_the_slow_path_does(
    tmp_path: Path,
) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        first = await call(client, stack, session, "a_observe", 1)
        assert first.status_code == 200
        slow = observed(first)
        before = await ext_proc_streams(stack.envoy)
        answers = [await call(client, stack, session, "a_observe", 2 + i) for i in range(5)]
        assert await ext_proc_streams(stack.envoy) == before  # not one ext_proc stream
        for answer in answers:
            assert answer.status_code == 200
            # The gateway's session id, never the backend's, and no internal header.
            assert answer.headers["mcp-session-id"] == session
            assert not [h for h in answer.headers if h.lower().startswith("x-mcp-")]
            fast = observed(answer)
            # The upstream saw what the slow path sent: prefix stripped, the routing headers,
            # the same backend session, no client x-mcp-* header.
            assert fast == slow
            assert fast["toolname"] == "observe" and fast["servername"] == "alpha"
        assert sse_result(answers[2])["id"] == 4
        assert await stack.envoy.stat(LUA_ERRORS) == 0


async def warmed(client: httpx.AsyncClient, stack: Stack, name: str = "a_observe", **headers: str) -> str:
    """A session whose first call of `name` the router decided: the next ones are Envoy's."""
    session = await initialize_raw(client, stack.url)
    first = await call(client, stack, session, name, 1, **headers)
    assert first.status_code == 200, first.text
    before = await ext_proc_streams(stack.envoy)
    second = await call(client, stack, session, name, 2, **headers)
    assert second.status_code == 200, second.text
    assert await ext_proc_streams(stack.envoy) == before, "the second call did not take the fast path"
    return session


async def call_until_refused(
    client: httpx.AsyncClient, stack: Stack, session: str, clock: Callable[[], float]
) -> tuple[httpx.Response, int, float | None]:
    """Call every 50 ms (at most 5 s) until a call is refused: that answer, its request id, and
    when (by `clock`) the last call that was routed was sent (None: none was)."""
    request_id, last_routed_sent = 10, None
    with trio.fail_after(5):
        while True:
            sent = clock()
            answer = await call(client, stack, session, "a_observe", request_id)
            if answer.status_code != 200:
                return answer, request_id, last_routed_sent
            last_routed_sent = sent
            request_id += 1
            await trio.sleep(0.05)


async def test_client_routing_headers_never_steer_a_fast_call(tmp_path: Path) -> None:
    async with probes("alpha", "beta") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path, **LONG_LIVED
    ) as stack, httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        forged = {
            "x-mcp-servername": "beta", "x-mcp-fast-path": "1", "x-mcp-toolname": "observe",
            "x-mcp-upstream": "beta via_upstream",
        }
        before = await ext_proc_streams(stack.envoy)
        answer = await call(client, stack, session, "a_observe", 3, **forged)
        assert await ext_proc_streams(stack.envoy) == before
        seen = observed(answer)
        assert seen["server"] == "alpha" and seen["forged"] == []
        # And a name the session never called takes the router, whatever the client claims.
        other = await call(client, stack, session, "b_observe", 4, **forged)
        assert observed(other)["server"] == "beta"
        assert await ext_proc_streams(stack.envoy) == before + 1


async def test_a_forged_or_unknown_session_never_reaches_an_upstream(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        tampered = session[:-2] + ("AA" if not session.endswith("AA") else "BB")
        for token, request_id in ((tampered, 5), ("not-a-session", 6), (session + "x", 7)):
            refused = await call(client, stack, token, "a_observe", request_id)
            assert refused.status_code == 404, refused.text
            assert refused.json()["id"] == request_id
        # Envoy's log (written in batches): the two calls of the real session reached the
        # upstream's cluster; the three refused ones never left the router.
        with trio.fail_after(5):
            while len(entries := [e for e in stack.envoy.access_entries() if e["method"] == "POST"]) < 7:  # noqa: ASYNC110
                await trio.sleep(0.02)
        routed = [e for e in entries if e["upstream_cluster"] == "mcp_upstream_alpha"]
        refused_here = [e for e in entries if e["status"] == 404 and e["details"] == "mcp_gateway_router"]
        assert len(routed) == 2 and len(refused_here) == 3, entries


async def test_a_session_deleted_through_envoy_stops_at_once(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        deleted = await client.delete(stack.url, headers=session_headers(session))
        assert deleted.status_code in (200, 202, 204)
        gone = await call(client, stack, session, "a_observe", 3)
        assert gone.status_code == 404 and gone.json()["id"] == 3


async def test_a_session_ended_elsewhere_stops_reaching_upstreams_within_the_fast_path_ttl(tmp_path: Path) -> None:
    """Ended where this Envoy worker cannot see it (another replica's DELETE, the store's expiry):
    its calls stop reaching the upstream within `envoy.fast_path.ttl_seconds` (1 s)."""
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        claims = stack.broker.tokens.verify(session)
        assert claims is not None
        ended_at = trio.current_time()
        await stack.broker.store.delete(claims.session_id)  # the backend session lives on upstream
        answer, request_id, last_routed_sent = await call_until_refused(client, stack, session, trio.current_time)
        last_routed_sent = last_routed_sent or ended_at
        assert answer.status_code == 404 and answer.json()["id"] == request_id
        # The bound is on when a call reaches Envoy: one sent later than ttl after the end never
        # reaches the upstream (sent times, not answer times: a slow answer says nothing).
        ttl = stack.config.gateway.envoy.fast_path.ttl_seconds
        routed_for = last_routed_sent - ended_at
        assert routed_for <= ttl + 0.05, f"a call sent {routed_for:.2f} s after the session ended was routed"
        print(f"session ended in the store; calls routed for {routed_for * 1000:.0f} ms after (bound {ttl} s)")


async def test_a_decision_never_outlives_its_session(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_")], tmp_path,
        sessions={"ttl_seconds": 2}, envoy={"fast_path": {"ttl_seconds": 30}},
    ) as stack, httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        created_by = time.time()  # the session was created (and its token issued) before this
        # The session lives 2 s from its creation; Envoy may keep a decision 30 s: not past the end.
        answer, request_id, last_routed_sent = await call_until_refused(client, stack, session, time.time)
        last_routed_sent = last_routed_sent or created_by
        assert answer.status_code == 404 and answer.json()["id"] == request_id
        assert last_routed_sent - created_by <= 2 + 0.05, (
            f"a call sent {last_routed_sent - created_by:.2f} s into a 2 s session was routed"
        )


async def test_an_upstream_restart_under_a_fast_call_is_invisible_to_the_client(tmp_path: Path) -> None:
    async with sample_process("echo") as echo:
        port = echo.port
        # A TTL that outlasts the restart: the call after it is Envoy's, not the router's.
        async with gateway_stack(
            [("echo", echo.url, "e_")], tmp_path, envoy={"fast_path": {"ttl_seconds": 20}}
        ) as stack, httpx.AsyncClient(timeout=20) as client:
            session = await warmed(client, stack, "e_add")
            claims = stack.broker.tokens.verify(session)
            assert claims is not None
            old_backend = await stack.broker.store.get_backend(claims.session_id, "echo")
            await echo.kill()
            async with sample_process("echo", port=port):
                # Envoy sends it with the old backend session; the upstream answers 404; the Lua
                # filter replays it the slow way, where the router opens a new backend session.
                replayed = await call(client, stack, session, "e_add", 3, {"a": 20, "b": 22})
                assert replayed.status_code == 200, replayed.text
                assert replayed.headers["mcp-session-id"] == session
                assert sse_result(replayed)["result"]["content"][0]["text"] == "42"
                assert sse_result(replayed)["id"] == 3
                new_backend = await stack.broker.store.get_backend(claims.session_id, "echo")
                assert new_backend and new_backend != old_backend
                # It was Envoy's call: besides the call itself, Envoy's log has its replay through
                # the router (which re-initialised and sent it again); the router alone would
                # have logged one entry.
                with trio.fail_after(5):
                    while len(adds := [e for e in stack.envoy.access_entries() if e["mcp_tool"] == "add"]) < 4:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                assert sorted(e["details"] for e in adds[2:]) == ["mcp_gateway_router", "via_upstream"]
                # Envoy forgot the stale decision: the router decides the next call (on the new
                # backend session), and Envoy the ones after it.
                relearn = await call(client, stack, session, "e_add", 4, {"a": 1, "b": 1})
                assert sse_result(relearn)["result"]["content"][0]["text"] == "2"
                before = await ext_proc_streams(stack.envoy)
                later = await call(client, stack, session, "e_add", 5, {"a": 2, "b": 2})
                assert sse_result(later)["result"]["content"][0]["text"] == "4"
                assert await ext_proc_streams(stack.envoy) == before
            assert await stack.envoy.stat(LUA_ERRORS) == 0


async def test_an_unreachable_upstream_gives_the_json_rpc_error_on_a_fast_call(tmp_path: Path) -> None:
    async with sample_process("echo") as echo, gateway_stack([("echo", echo.url, "e_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await warmed(client, stack, "e_add")
        await echo.kill()
        down = await call(client, stack, session, "e_add", 8)
        assert down.status_code == 200, down.text
        assert down.json() == {
            "jsonrpc": "2.0", "id": 8, "error": {"code": -32603, "message": "Upstream 'echo' is unavailable"}
        }
        assert down.headers["mcp-session-id"] == session
        assert not [h for h in down.headers if h.lower().startswith("x-mcp-")]


async def test_a_fast_calls_sse_answer_streams_as_the_upstream_writes_it(tmp_path: Path) -> None:
    # Warming up takes two calls of 0.6 s each: a TTL that outlasts them.
    async with sample_process("slow") as slow, gateway_stack(
        [("slow", slow.url, "slow_")], tmp_path, envoy={"fast_path": {"ttl_seconds": 10}}
    ) as stack, httpx.AsyncClient(timeout=20) as client:
        session = await warmed(client, stack, "slow_count")
        before = await ext_proc_streams(stack.envoy)
        body = call_body("slow_count", {"steps": 3, "delay_seconds": 0.4}, 7)
        body["params"]["_meta"] = {"progressToken": "p7"}
        arrivals: list[tuple[float, str]] = []
        async with client.stream("POST", stack.url, json=body, headers=session_headers(session)) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            async for line in answer.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((trio.current_time(), line))
        assert await ext_proc_streams(stack.envoy) == before
        progress = [t for t, line in arrivals if "notifications/progress" in line]
        assert len(progress) == 3 and '"counted to 3"' in arrivals[-1][1]
        # Each event when the upstream wrote it (0.4 s apart), not all together at the end.
        assert progress[2] - progress[0] > 0.6
        assert arrivals[-1][0] - progress[0] > 0.6


async def test_what_the_fast_path_cannot_vouch_for_gets_the_routers_precise_answer(tmp_path: Path) -> None:
    narrow = VirtualServer(name="team/narrow", tools=["a_add"])
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, [narrow], **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await warmed(client, stack)
        headers = session_headers(session, **{"content-type": "application/json"})

        async def post(raw: bytes, **extra: str) -> httpx.Response:
            return await client.post(stack.url, content=raw, headers={**headers, **extra})

        # A key twice in params: the router's strict reader refuses it (-32700, id null).
        twice = await post(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a_observe","name":"a_add"}}')
        assert twice.status_code == 400 and twice.json()["error"]["code"] == -32700
        # A member a request may not have.
        extra = await post(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"a_observe"},"x":1}')
        assert extra.status_code == 400 and extra.json() == {
            "jsonrpc": "2.0", "id": 4, "error": {"code": -32600, "message": "Invalid Request: unexpected member in a request"}
        }
        # Trailing data, a lone surrogate, a number out of range.
        for raw in (
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a_observe"}} {}',
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a_observe","arguments":{"s":"\\ud800"}}}',
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a_observe","arguments":{"n":1e999}}}',
        ):
            refused = await post(raw)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == -32700, raw
        # The mirrored 2026-07-28 header disagrees with the body: refused, never routed.
        mismatch = await call(client, stack, session, "a_observe", 6, **{"mcp-name": "a_add"})
        assert mismatch.status_code == 400, mismatch.text
        # Another virtual server, another decision: this one does not offer a_observe.
        outside = await call(client, stack, session, "a_observe", 7, **{"x-mcp-virtualserver": "team/narrow"})
        assert outside.json()["error"]["message"] == "Unknown tool: a_observe"
        # An Origin the gateway does not allow.
        foreign = await call(client, stack, session, "a_observe", 8, origin="http://evil.example")
        assert foreign.status_code == 403
        # ...and the session's own fast path still works.
        assert observed(await call(client, stack, session, "a_observe", 9))["server"] == "alpha"


async def test_a_change_told_in_a_routed_calls_answer_is_listed_before_the_client_reads_it(tmp_path: Path) -> None:
    """The upstream tells the change only inside the call's SSE answer, which Envoy streams past
    Python: Envoy's Lua filter holds that event until the broker has re-listed the upstream, so a
    client listing the moment it reads it sees the new tool. On the router's call and on a fast one."""
    async with changing_upstream() as upstream, gateway_stack([("ch", upstream.url, "ch_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        for request_id, name in ((1, "first"), (2, "second")):
            streams = await ext_proc_streams(stack.envoy)
            body = call_body("ch_add_tool_in_answer", {"name": name}, request_id)
            listed_on_notice: list[str] | None = None
            result: dict[str, Any] = {}
            async with client.stream("POST", stack.url, json=body, headers=session_headers(session)) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                async for line in answer.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:])
                    if message.get("method") == "notifications/tools/list_changed":
                        listed = await client.post(
                            stack.url, json={"jsonrpc": "2.0", "id": 90 + request_id, "method": "tools/list"},
                            headers=session_headers(session),
                        )
                        listed_on_notice = [tool["name"] for tool in sse_result(listed)["result"]["tools"]]
                    elif message.get("id") == request_id:
                        result = message
            assert result["result"]["content"][0]["text"] == f"added {name}"
            assert listed_on_notice is not None, "the list_changed in the answer never reached the client"
            assert f"ch_{name}" in listed_on_notice
            if request_id == 2:  # the second call of the name was Envoy's alone (the list is the broker's)
                assert await ext_proc_streams(stack.envoy) == streams + 1
