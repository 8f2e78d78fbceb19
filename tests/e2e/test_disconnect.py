"""A client that drops its connection cancels the upstream work it asked for (issue 7), for calls
the broker answers itself: through a real Envoy and `mcp-gateway serve`, to a stdio upstream,
with a JSON answer pending, an SSE answer streaming, and over the `/mcp/ws` WebSocket.

How it happens (envoy/bootstrap.yaml.tmpl, cluster `mcp_broker`, HTTP/1.1): Envoy cannot reuse an
upstream HTTP/1.1 connection whose answer is unfinished, so when its client leaves it closes that
connection; hypercorn keeps reading the socket while the app answers, sees the EOF and hands the
app `http.disconnect` (`websocket.disconnect` for a socket); quart-trio then cancels the handler,
and the broker's forwarder tells the upstream `notifications/cancelled`. The same tests pass with
an HTTP/2 broker cluster (a stream reset instead of a close); see the bootstrap for why it stays
HTTP/1.1. They fail when the cancellation is not relayed (checked by disabling it once).

Calls Envoy routes straight to an HTTP upstream are the other half: there Envoy only closes the
upstream connection, and a Streamable HTTP server must not take that as a cancellation, so the
router tells the upstream. A JSON answer still pending: Envoy ends the router's ext_proc stream
early. An SSE answer already streaming (past the router, body mode NONE): Envoy's gRPC access
logger reports the call, marked by the router, because its downstream ended it (flag DC), and
only then (router/accesslog.py).

The client is a raw TCP socket on purpose: the SDK client, when its call is cancelled, sends
`notifications/cancelled` itself, which would hide the path under test. The upstream is a small
official-SDK server (written out below, run over stdio by the gateway) that reports "started" and
"cancelled" to the test over a loopback socket, so the test waits on events, not on sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import trio
from mcp import types
from mcp.client.client import Client
from trio_websocket import wrap_client_stream

from tests.support.conformance import RunningGateway, running_gateway
from tests.support.processes import stop_process
from tests.support.redis import free_port
from tests.support.servers import initialize_body

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

# The upstream: one tool that holds until cancelled and says so on the test's report socket.
PROBE_SERVER = """
import sys

import json

import anyio
from mcp.server.mcpserver import Context, MCPServer

REPORT_PORT = int(sys.argv[1])
server = MCPServer("disconnect-probe")


async def report(event: str) -> None:
    async with await anyio.connect_tcp("127.0.0.1", REPORT_PORT) as stream:
        await stream.send(event.encode() + b"\\n")


@server.tool(description="Holds until cancelled (at most `seconds`); reports start and cancel")
async def hold(label: str, seconds: float = 60) -> str:
    await report(f"started {label}")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await report(f"cancelled {label}")
        raise
    await report(f"completed {label}")
    return f"{label} held to the end"


@server.tool(description="Answers at once")
def quick() -> str:
    return "quick answer"


@server.tool(description="The names of the x-mcp-* headers this call arrived with")
def seen_headers(ctx: Context) -> str:
    return json.dumps(sorted(k.lower() for k in (ctx.headers or {}) if k.lower().startswith("x-mcp-")))


if len(sys.argv) > 2:  # "json|sse PORT": Streamable HTTP on loopback, answering that way
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[3]),
        json_response=sys.argv[2] == "json",
    )
else:
    server.run("stdio")
"""

# "Within a few seconds": the broker relays the cancel at once; this bounds a loaded machine.
CANCEL_PATIENCE_SECONDS = 5.0


@dataclass
class Probe:
    """What the upstream reports: `started <label>`, `cancelled <label>`, `completed <label>`."""

    events: trio.MemoryReceiveChannel[str]

    async def expect(self, event: str, patience: float) -> None:
        label = event.split(" ", 1)[1]
        with trio.fail_after(patience):
            while (seen := await self.events.receive()) != event:
                assert seen != f"completed {label}", f"the upstream call ran to its end: {seen!r}"


async def _collect_reports(
    listeners: list[trio.SocketListener], sink: trio.MemorySendChannel[str]
) -> None:
    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while chunk := await stream.receive_some(1024):
                data += chunk
        for line in data.decode().splitlines():
            await sink.send(line)

    await trio.serve_listeners(one, listeners)


@asynccontextmanager
async def gateway_with_probe(workdir: Path) -> AsyncIterator[tuple[RunningGateway, Probe]]:
    send, receive = trio.open_memory_channel[str](64)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    report_port = listeners[0].socket.getsockname()[1]
    script = workdir / "probe_server.py"
    script.write_text(PROBE_SERVER)
    probe = {
        "name": "probe",
        "transport": "stdio",
        "command": [sys.executable, str(script), str(report_port)],
        "prefix": "probe_",
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_collect_reports, listeners, send)
        async with running_gateway([probe], workdir) as gateway:
            yield gateway, Probe(receive)
        nursery.cancel_scope.cancel()


async def _open_session(url: str, capabilities: dict[str, Any] | None = None) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=10) as http:
        accept = {"accept": "application/json, text/event-stream"}
        init = await http.post(url, json=initialize_body(capabilities), headers=accept)
        assert init.status_code == 200, init.text
        session = {
            "mcp-session-id": init.headers["mcp-session-id"],
            "mcp-protocol-version": init.json()["result"]["protocolVersion"],
        }
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        done = await http.post(url, json=initialized, headers={**accept, **session})
        assert done.status_code == 202, done.text
    return session


def _raw_post(port: int, headers: dict[str, str], message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    lines = [
        "POST /mcp HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _hold_call(label: str, request_id: int, *, progress: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "probe_hold", "arguments": {"label": label}}
    if progress:
        params["_meta"] = {"progressToken": f"progress-{label}"}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def _read_head(stream: trio.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, f"connection closed before the answer's head: {head!r}"
        head += chunk
    return head


async def _still_works(gateway: RunningGateway) -> None:
    """The upstream link survives a client leaving: the next client's call is answered (in a
    session: what this file checks is how a session's routed calls are logged and cancelled)."""
    async with Client(gateway.url, mode="legacy") as client:
        with trio.fail_after(10):
            answer = await client.call_tool("probe_quick", {})
    assert not answer.is_error
    assert isinstance(answer.content[0], types.TextContent)
    assert answer.content[0].text == "quick answer"


async def test_a_client_leaving_while_its_json_answer_is_pending_cancels_the_upstream_call(
    tmp_path: Path,
) -> None:
    async with gateway_with_probe(tmp_path) as (gateway, probe):
        session = await _open_session(gateway.url)
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.envoy.port)
        # application/json only: the broker must answer JSON, so nothing is written before the
        # answer and nothing on the broker's side ever fails a write while the call runs.
        headers = {**session, "accept": "application/json"}
        await stream.send_all(
            _raw_post(gateway.envoy.port, headers, _hold_call("json", 7, progress=False))
        )
        await probe.expect("started json", patience=15)
        with trio.move_on_after(0.2):
            early = await stream.receive_some(4096)
            pytest.fail(f"the JSON answer should still be pending, got {early!r}")
        await stream.aclose()

        await probe.expect("cancelled json", patience=CANCEL_PATIENCE_SECONDS)
        await _still_works(gateway)


async def test_a_client_leaving_its_sse_answer_cancels_the_upstream_call(tmp_path: Path) -> None:
    async with gateway_with_probe(tmp_path) as (gateway, probe):
        session = await _open_session(gateway.url)
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.envoy.port)
        # A progress token makes the broker answer on an SSE stream (docs/broker.md).
        headers = {**session, "accept": "application/json, text/event-stream"}
        await stream.send_all(
            _raw_post(gateway.envoy.port, headers, _hold_call("sse", 8, progress=True))
        )
        with trio.fail_after(15):
            head = await _read_head(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"content-type: text/event-stream" in head.lower(), head
        await probe.expect("started sse", patience=15)
        await stream.aclose()

        await probe.expect("cancelled sse", patience=CANCEL_PATIENCE_SECONDS)
        await _still_works(gateway)


async def test_a_websocket_client_leaving_cancels_the_upstream_call(tmp_path: Path) -> None:
    async with gateway_with_probe(tmp_path) as (gateway, probe):
        port = gateway.envoy.port
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with trio.open_nursery() as nursery:
            socket = await wrap_client_stream(
                nursery, stream, f"127.0.0.1:{port}", "/mcp/ws", subprotocols=["mcp"]
            )
            await socket.send_message(json.dumps(initialize_body()))
            with trio.fail_after(10):
                assert "result" in json.loads(await socket.get_message())
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await socket.send_message(json.dumps(initialized))
            await socket.send_message(json.dumps(_hold_call("ws", 9, progress=False)))
            await probe.expect("started ws", patience=15)
            # No close frame: the client's connection just goes away.
            await stream.aclose()
            nursery.cancel_scope.cancel()

        await probe.expect("cancelled ws", patience=CANCEL_PATIENCE_SECONDS)
        await _still_works(gateway)


@asynccontextmanager
async def gateway_with_http_probe(
    workdir: Path, *, json_answers: bool
) -> AsyncIterator[tuple[RunningGateway, Probe]]:
    """The probe as a Streamable HTTP upstream (its own process): Envoy routes calls to it
    straight, past the broker."""
    send, receive = trio.open_memory_channel[str](64)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    script = workdir / "probe_server.py"
    script.write_text(PROBE_SERVER)
    http_port = free_port()
    report_port = listeners[0].socket.getsockname()[1]
    command = [sys.executable, str(script), str(report_port), "json" if json_answers else "sse"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_collect_reports, listeners, send)
        process = await trio.lowlevel.open_process(
            [*command, str(http_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _wait_listening(http_port)
            url = f"http://127.0.0.1:{http_port}/mcp"
            # A fast-path decision outlives the test's steps on a loaded machine (a renewal in the
            # default 1 s lifetime's last fifth would send a fast call through the router).
            async with running_gateway(
                [{"name": "probe", "url": url, "prefix": "probe_"}], workdir,
                envoy={"fast_path": {"ttl_seconds": 30}},
            ) as gateway:
                yield gateway, Probe(receive)
        finally:
            with trio.CancelScope(shield=True):
                await stop_process(process)
            nursery.cancel_scope.cancel()


async def _wait_listening(port: int) -> None:
    with trio.fail_after(20):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)  # another process binds it: nothing to wait on but tries
                continue
            await stream.aclose()
            return


ABANDONED_CALLS_LOGGED = "access_logs.grpc_access_log.logs_written"
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"


async def _leave_over_http2(
    port: int,
    session: dict[str, str],
    message: dict[str, Any],
    leave: trio.Event,
    done: trio.Event,
    *,
    sse: bool,
) -> None:
    """POST over HTTP/2 (prior knowledge); for an SSE answer wait for its head; reset the
    stream (RST_STREAM CANCEL) once `leave` is set, and keep the connection open until `done`:
    how an HTTP/2 client drops one call and not its connection."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    body = json.dumps(message).encode()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", "/mcp"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("content-length", str(len(body))),
        *session.items(),
    ]
    connection.send_headers(1, headers)
    connection.send_data(1, body, end_stream=True)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(connection.data_to_send())
        with trio.fail_after(15):
            answered: list[h2.events.ResponseReceived] = []
            while sse and not answered:
                data = await stream.receive_some(65536)
                assert data, "connection closed before the answer's head"
                events = connection.receive_data(data)
                answered = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
                await stream.send_all(connection.data_to_send())
        if sse:
            assert (b"content-type", b"text/event-stream") in answered[0].headers
        await leave.wait()
        connection.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        await stream.send_all(connection.data_to_send())
        await done.wait()


@pytest.mark.parametrize(
    ("answer", "leave", "path"),
    [
        pytest.param("json", "http1-close", "slow", id="json"),
        pytest.param("sse", "http1-close", "slow", id="sse"),
        pytest.param("sse", "http2-reset", "slow", id="sse-http2-reset"),
        pytest.param("json", "http2-reset", "slow", id="json-http2-reset"),
        # A client that can be asked things gets its SSE answer through the router (ids tagged,
        # body STREAMED): its ext_proc stream outlives the answer's head, the access log still
        # tells the router.
        pytest.param("sse-askable", "http1-close", "slow", id="sse-askable"),
        # The session's second call of the tool: Envoy's Lua fast path routes it, no ext_proc
        # at all. The mark it puts on every such call is all the router ever hears of it.
        pytest.param("json", "http1-close", "fast", id="fast-json"),
        pytest.param("sse", "http1-close", "fast", id="fast-sse"),
        pytest.param("sse", "http2-reset", "fast", id="fast-sse-http2-reset"),
    ],
)
async def test_a_client_leaving_a_call_routed_to_an_http_upstream_cancels_it(
    tmp_path: Path, answer: str, leave: str, path: str
) -> None:
    label = f"routed-{answer}-{leave}-{path}"
    async with gateway_with_http_probe(tmp_path, json_answers=answer == "json") as (gateway, probe):
        askable = {"roots": {}} if answer == "sse-askable" else None
        session = await _open_session(gateway.url, askable)
        if path == "fast":
            # The first call of the name is the router's (slow path); Envoy keeps its decision
            # when the answer comes back, and applies it to the session's next calls.
            first = _hold_call(f"{label}-first", 9, progress=False)
            first["params"]["arguments"]["seconds"] = 0
            async with httpx.AsyncClient(timeout=15) as http:
                answered = await http.post(
                    gateway.url, json=first, headers={**session, "accept": "application/json, text/event-stream"}
                )
            assert answered.status_code == 200, answered.text
            await _last_access(gateway, "hold", count=1)
        streams_before = await gateway.envoy.stat(EXT_PROC_STREAMS)
        call = _hold_call(label, 10, progress=False)
        if leave == "http2-reset":
            leave_now, done = trio.Event(), trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(_leave_over_http2, sse=answer != "json"),
                    gateway.envoy.port,
                    session,
                    call,
                    leave_now,
                    done,
                )
                await probe.expect(f"started {label}", patience=15)
                leave_now.set()
                await probe.expect(f"cancelled {label}", patience=CANCEL_PATIENCE_SECONDS)
                done.set()
        else:
            await _leave_over_http1(gateway, probe, session, label, 10, sse=answer != "json")
        # The call went past the broker, to the upstream's own cluster, and Envoy saw the
        # downstream end it: DC when a connection closes, DR when an HTTP/2 stream is reset.
        routed = await _last_access(gateway, "hold", count=2 if path == "fast" else 1)
        assert routed["upstream_cluster"] == "mcp_upstream_probe", routed
        assert routed["flags"] == ("DR" if leave == "http2-reset" else "DC"), routed
        logged = await gateway.envoy.stat(ABANDONED_CALLS_LOGGED)
        if path == "fast":
            # Not one ext_proc stream for it; the access logger told the router, JSON or SSE.
            assert await gateway.envoy.stat(EXT_PROC_STREAMS) == streams_before
            assert logged == 1
        else:
            # A JSON answer still pending is seen by the router itself (its ext_proc stream
            # ends); an SSE answer's abandonment is the one entry the access logger sends it.
            assert logged == (0 if answer == "json" else 1)
        await _still_works(gateway)


async def _leave_over_http1(
    gateway: RunningGateway, probe: Probe, session: dict[str, str], label: str, request_id: int, *, sse: bool
) -> None:
    """Call `hold` over a raw HTTP/1.1 connection and close it mid-call: the upstream must hear
    of it."""
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.envoy.port)
    headers = {**session, "accept": "application/json, text/event-stream"}
    await stream.send_all(_raw_post(gateway.envoy.port, headers, _hold_call(label, request_id, progress=False)))
    await probe.expect(f"started {label}", patience=15)
    if sse:
        # The answer has begun (its head passed the router, which is now off the stream): only
        # Envoy's access log tells the router the client left.
        with trio.fail_after(15):
            head = await _read_head(stream)
        assert b"content-type: text/event-stream" in head.lower(), head
    await stream.aclose()
    await probe.expect(f"cancelled {label}", patience=CANCEL_PATIENCE_SECONDS)


async def _last_access(gateway: RunningGateway, tool: str, count: int) -> dict[str, object]:
    """The `count`-th access-log entry of a call to `tool` (Envoy writes the file in batches)."""
    with trio.fail_after(5):
        while len(entries := [e for e in gateway.envoy.access_entries() if e.get("mcp_tool") == tool]) < count:  # noqa: ASYNC110
            await trio.sleep(0.02)
    return entries[count - 1]


async def _access_of(gateway: RunningGateway, tool: str, count: int) -> list[dict[str, object]]:
    """The access-log entries of `count` calls to `tool` (Envoy writes the file in batches)."""

    def seen(entry: dict[str, object]) -> bool:
        return entry.get("mcp_tool") == tool

    with trio.fail_after(10):
        while len(found := await gateway.envoy.wait_for_access(seen)) < count:  # noqa: ASYNC110
            await trio.sleep(0.05)  # another process writes the file: polling is the only way
    return found


async def test_calls_that_end_normally_send_the_router_no_access_log_and_clients_cannot_mark_one(
    tmp_path: Path,
) -> None:
    """The normal path costs nothing: routed SSE answers read to their end (by a client that
    then drops its connection) are not logged to the router at all. And a client cannot mark a
    call: the mark is Envoy dynamic metadata that only the router's ext_proc reply sets, and a
    forged `x-mcp-call` header (what a header-based mark would be called) never reaches the
    upstream, stripped with every other client `x-mcp-*` header before routing."""
    async with gateway_with_http_probe(tmp_path, json_answers=False) as (gateway, _):
        session = await _open_session(gateway.url)
        forged = {"x-mcp-call": "forged", "x-mcp-servername": "probe", "x-mcp-toolname": "hold"}
        headers = {**session, **forged, "accept": "application/json, text/event-stream"}
        seen = {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}
        seen["params"] = {"name": "probe_seen_headers", "arguments": {}}
        for _ in range(3):
            async with httpx.AsyncClient(timeout=15) as http:
                answer = await http.post(gateway.url, json=seen, headers=headers)
            assert answer.headers["content-type"].startswith("text/event-stream"), answer.headers
            (data,) = [line[5:] for line in answer.text.splitlines() if line.startswith("data:")]
            arrived = json.loads(json.loads(data)["result"]["content"][0]["text"])
            # Only what the router set itself; the forged toolname was replaced, not kept.
            assert arrived == ["x-mcp-method", "x-mcp-servername", "x-mcp-toolname"], arrived
        routed = await _access_of(gateway, "seen_headers", 3)
        assert all(e["flags"] == "-" for e in routed), routed
        assert await gateway.envoy.stat(ABANDONED_CALLS_LOGGED) == 0


SDK_CLIENTS = 10


async def _logs_written_reaching(gateway: RunningGateway, expected: int) -> int:
    """The router access logger's count once it has caught up with `expected` (or after 10 s):
    it sends in batches, so it may lag the file log the test read the DC flags from; reading
    it once raced that flush under load."""
    with trio.move_on_after(10):
        while await gateway.envoy.stat(ABANDONED_CALLS_LOGGED) < expected:  # noqa: ASYNC110
            await trio.sleep(0.05)  # Envoy's admin counter: polling is the only way to read it
    return await gateway.envoy.stat(ABANDONED_CALLS_LOGGED)


async def test_only_calls_whose_client_left_early_are_logged_to_the_router(tmp_path: Path) -> None:
    """The official SDK client closes an SSE answer as soon as it has read the result, and so
    sometimes before the stream's last bytes reach Envoy, which then flags the call DC: exactly
    those calls, and no others, are logged to the router. What it then sends the upstream is a
    cancellation of a request that has just finished, which MCP lets it ignore; the next call
    on the session works."""
    async with gateway_with_http_probe(tmp_path, json_answers=False) as (gateway, _):
        for _ in range(SDK_CLIENTS):
            await _still_works(gateway)
        answered = await _access_of(gateway, "quick", SDK_CLIENTS)
        early = sum(e["flags"] == "DC" for e in answered)
        assert all(e["flags"] in ("-", "DC") for e in answered), answered
        assert await _logs_written_reaching(gateway, early) == early
        assert gateway.log().count("client left a routed call mid-answer") <= early
