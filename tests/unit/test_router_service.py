"""The ext_proc servicer driven by a scripted stream (the gRPC transport is the only fake), and
backend-session single-flight. The upstream's `initialize` is faked at its network seam."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from mcp_gateway.config import ServerConfig, parse_config
from mcp_gateway.router.accesslog import (
    CALL_KEY,
    METADATA_NAMESPACE,
    AccessLogReceiver,
    CallMarks,
    MarkedCall,
)
from mcp_gateway.router.backends import (
    GATEWAY_CLIENT_INFO,
    BackendSessions,
    BackendUnavailable,
    SessionGone,
)
from mcp_gateway.router.decision import NeedsBackend, RoutingTable, route_request
from mcp_gateway.router.exchange import Router
from mcp_gateway.router.grpc_server import ExternalProcessor
from mcp_gateway.router.service import cancel_marked_call
from mcp_gateway.sessions import SessionTokens, derive_key
from mcp_gateway.sessions.memory_store import MemorySessionStore
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.redis_store import RedisSessionStore
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream.errors import UpstreamError
from tests.support.stores import STORE_KINDS, session_store

CONFIG = parse_config(
    """
servers:
  - name: weather
    url: http://127.0.0.1:9101/mcp
    prefix: w_
"""
)
TOKENS = SessionTokens([derive_key("k" * 32)])


@dataclass
class FakeUpstreams:
    """`open_backend_session` at the network seam: counts initializes, can be slow or fail."""

    delay: float = 0.0
    fail: bool = False
    calls: list[str] = field(default_factory=list)

    clients: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = field(default_factory=list)
    log_levels: list[str | None] = field(default_factory=list)
    http_clients: list[httpx.AsyncClient | None] = field(default_factory=list)
    # What the router POSTs itself (cancellations of calls whose client left), with the backend
    # session each went to: the HTTP seam is httpx's MockTransport, never a real socket.
    posted: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)

    def http(self) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.posted.append((request.headers.get("mcp-session-id"), json.loads(request.content)))
            return httpx.Response(202)

        return httpx.AsyncClient(transport=httpx.MockTransport(answer))

    async def open_session(
        self,
        server: ServerConfig,
        version: str,
        client_info: Mapping[str, Any],
        *,
        http: httpx.AsyncClient | None = None,
        capabilities: Mapping[str, Any] | None = None,
        log_level: str | None = None,
    ) -> str:
        self.calls.append(server.name)
        self.clients.append((client_info, capabilities))
        self.log_levels.append(log_level)
        self.http_clients.append(http)
        await trio.sleep(self.delay)
        if self.fail:
            raise UpstreamError(f"{server.name}: connection refused")
        return f"backend-{len(self.calls)}"


class ScriptedStream:
    """Hands the servicer a fixed list of requests and records every reply."""

    def __init__(self, requests: list[pb.ProcessingRequest]) -> None:
        self._requests = list(requests)
        self.replies: list[pb.ProcessingResponse] = []

    async def recv_message(self) -> pb.ProcessingRequest | None:
        return self._requests.pop(0) if self._requests else None

    async def send_message(self, message: pb.ProcessingResponse) -> None:
        self.replies.append(message)

    def all_answered(self) -> bool:
        return not self._requests

    @property
    def answers(self) -> list[pb.ProcessingResponse]:
        """The replies to our requests, without the timer extensions sent ahead of slow ones."""
        return [r for r in self.replies if not r.HasField("override_message_timeout")]

    @property
    def extensions(self) -> list[float]:
        return [r.override_message_timeout.ToMilliseconds() / 1000 for r in self.replies if r.HasField("override_message_timeout")]


def http_headers(headers: Mapping[str, str], end_of_stream: bool = False) -> pb.HttpHeaders:
    return pb.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
        ),
        end_of_stream=end_of_stream,
    )


def request_headers(headers: Mapping[str, str], end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_headers=http_headers(headers, end_of_stream))


def request_body(body: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))


def response_headers(headers: Mapping[str, str]) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_headers=http_headers(headers))


def set_headers_of(mutation: pb.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


@asynccontextmanager
async def routing(
    upstreams: FakeUpstreams, store: SessionStore | None = None, openings: BackendOpenings | None = None
) -> AsyncIterator[tuple[ExternalProcessor, Router, SessionStore]]:
    store = store or MemorySessionStore()
    async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
        servers = {s.name: s for s in CONFIG.servers}
        backends = BackendSessions(
            store,
            nursery,
            lambda: servers,
            open_session=upstreams.open_session,
            http=upstreams.http(),
            openings=openings,
        )
        router = Router(CONFIG, TOKENS, backends)
        try:
            yield ExternalProcessor(router), router, store
        finally:
            await backends.aclose()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def processor(
    upstreams: FakeUpstreams, store: SessionStore | None = None, openings: BackendOpenings | None = None
) -> AsyncIterator[tuple[ExternalProcessor, SessionStore]]:
    async with routing(upstreams, store, openings) as (service, _, store):
        yield service, store


async def run(service: ExternalProcessor, stream: ScriptedStream) -> None:
    await trio_asyncio.aio_as_trio(service.process)(stream)  # type: ignore[arg-type]
    assert stream.all_answered()
    assert len(stream.replies) > 0


def call(name: str, request_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}}).encode()


async def test_get_is_passed_on_without_client_internal_headers() -> None:
    async with processor(FakeUpstreams()) as (service, _):
        stream = ScriptedStream([request_headers({":method": "GET", ":path": "/mcp", "x-mcp-servername": "weather"}, True)])
        await run(service, stream)
    reply = stream.answers[0]
    assert reply.WhichOneof("response") == "request_headers"
    assert list(reply.request_headers.response.header_mutation.remove_headers) == ["x-mcp-servername"]


async def test_routed_call_end_to_end_over_the_stream() -> None:
    upstreams = FakeUpstreams()
    async with processor(upstreams) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        stream = ScriptedStream([
            request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token, "x-mcp-toolname": "evil"}),
            request_body(call("w_forecast")),
            response_headers({":status": "200", "mcp-session-id": "backend-1", "x-mcp-upstream": "weather via_upstream"}),
        ])
        await run(service, stream)
        assert await store.get_backend(claims.session_id, "weather") == "backend-1"
    headers_reply, body_reply, response_reply = stream.answers
    # The first call initialised a backend: Envoy was asked to wait up to the server's timeout.
    assert stream.extensions == [31.0]
    assert stream.replies[1].HasField("override_message_timeout")
    assert "x-mcp-toolname" in headers_reply.request_headers.response.header_mutation.remove_headers
    common = body_reply.request_body.response
    assert common.status == pb.CommonResponse.CONTINUE_AND_REPLACE
    assert common.clear_route_cache
    sent = set_headers_of(common.header_mutation)
    assert sent["x-mcp-servername"] == "weather"
    assert sent["x-mcp-toolname"] == "forecast"
    assert sent["mcp-session-id"] == "backend-1"
    assert json.loads(common.body_mutation.body)["params"]["name"] == "forecast"
    back = response_reply.response_headers.response.header_mutation
    assert set_headers_of(back) == {"mcp-session-id": token}
    assert "x-mcp-upstream" in back.remove_headers
    assert upstreams.calls == ["weather"]


async def test_backend_sessions_are_opened_on_the_routers_one_pooled_client() -> None:
    """Not a client (and a TCP connection, and a TLS setup) per backend session."""
    upstreams = FakeUpstreams()
    async with processor(upstreams) as (service, store):
        for request_id in (1, 2, 3):
            token = TOKENS.issue("2025-11-25")
            claims = TOKENS.verify(token)
            assert claims is not None
            await store.create(claims.session_id, 60)
            headers = {":method": "POST", ":path": "/mcp", "mcp-session-id": token}
            await run(service, ScriptedStream([request_headers(headers), request_body(call("w_forecast", request_id))]))
    assert len(upstreams.http_clients) == 3
    first = upstreams.http_clients[0]
    assert first is not None and all(http is first for http in upstreams.http_clients)


async def routed_body_reply(*, learn: bool, capabilities: dict[str, object] | None = None) -> pb.ProcessingResponse:
    upstreams = FakeUpstreams()
    async with processor(upstreams) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60, {"capabilities": capabilities or {}})
        headers = {":method": "POST", ":path": "/mcp", "mcp-session-id": token}
        if learn:
            headers["x-mcp-fast-path-learn"] = "1"
        stream = ScriptedStream([request_headers(headers), request_body(call("w_forecast"))])
        await run(service, stream)
    return stream.answers[1]


async def test_the_decision_goes_to_envoys_fast_path_only_when_its_lua_filter_asks() -> None:
    asked = await routed_body_reply(learn=True)
    decision = asked.dynamic_metadata.fields["mcp_gateway"].struct_value.fields["fast"].struct_value.fields
    assert decision["server"].string_value == "weather" and decision["routed"].string_value == "forecast"
    assert decision["backend"].string_value and decision["mark"].string_value.startswith("~")
    assert decision["ttl_ms"].number_value == 1000
    # The Lua filter's request never reaches the upstream.
    assert "x-mcp-fast-path-learn" in asked.request_body.response.header_mutation.remove_headers
    # No filter asked (an Envoy without it): no decision, so no credential left in its metadata.
    unasked = await routed_body_reply(learn=False)
    assert "mcp_gateway" not in unasked.dynamic_metadata.fields
    # A client that can be asked things: its SSE answers must pass through the router.
    askable = await routed_body_reply(learn=True, capabilities={"sampling": {}})
    assert "mcp_gateway" not in askable.dynamic_metadata.fields


@pytest.fixture(params=STORE_KINDS)
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """The client's declarations travel through the store: both kinds (Redis: a real server)."""
    async with session_store(request.param) as store:
        yield store


async def test_backend_session_carries_the_clients_own_capabilities_and_info(any_store: SessionStore) -> None:
    """An upstream may ask for sampling, elicitation or roots only if the client can answer: the
    backend initialize repeats what the client declared in its own initialize."""
    upstreams = FakeUpstreams()
    declared = {
        "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}},
        "clientInfo": {"name": "inspector", "version": "0.17"},
    }
    async with processor(upstreams, any_store) as (service, store):
        with_client, plain = TOKENS.issue("2025-11-25"), TOKENS.issue("2025-11-25")
        for token, client in ((with_client, declared), (plain, None)):
            claims = TOKENS.verify(token)
            assert claims is not None
            await store.create(claims.session_id, 60, client=client)
            await run(service, ScriptedStream([
                request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token}),
                request_body(call("w_forecast")),
            ]))
    assert upstreams.clients == [
        (declared["clientInfo"], declared["capabilities"]),
        (GATEWAY_CLIENT_INFO, {}),
    ]


async def test_backend_session_starts_at_the_clients_log_level(any_store: SessionStore) -> None:
    """logging/setLevel is the client's session's: a backend session the router opens after it
    starts at that level (one opened before got it from the broker when it was set)."""
    upstreams = FakeUpstreams()
    async with processor(upstreams, any_store) as (service, store):
        leveled, plain = TOKENS.issue("2025-11-25"), TOKENS.issue("2025-11-25")
        for token in (leveled, plain):
            claims = TOKENS.verify(token)
            assert claims is not None
            await store.create(claims.session_id, 60)
            if token == leveled:
                assert await store.set_log_level(claims.session_id, "debug")
            await run(service, ScriptedStream([
                request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token}),
                request_body(call("w_forecast")),
            ]))
    assert upstreams.log_levels == ["debug", None]


async def test_a_new_backend_session_is_announced_before_its_call_goes_out() -> None:
    """A listener of the gateway session (the broker holding the client's stream) hears of the
    new backend session, and the call waits until it has attached."""
    openings = BackendOpenings()
    upstreams = FakeUpstreams()
    heard: list[tuple[str, str]] = []
    async with processor(upstreams, openings=openings) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        stream = ScriptedStream([
            request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token}),
            request_body(call("w_forecast")),
        ])
        with openings.watch(claims.session_id) as announced:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, service, stream)
                opening = await announced.receive()
                heard.append((opening.server, opening.backend_id))
                # Every task (the asyncio side included: trio-asyncio runs it as a Trio task) is
                # blocked: nothing more happens until the listener attaches.
                await trio.testing.wait_all_tasks_blocked()
                assert len(stream.answers) == 1  # the body (the call) held until it attached
                opening.attached.set()
    assert heard == [("weather", "backend-1")]
    assert len(stream.answers) == 2


async def routed_answer(
    content_type: str,
    client: dict[str, Any] | None,
    chunks: list[bytes],
    store: SessionStore | None = None,
    **extra: str,
) -> ScriptedStream:
    """One routed call whose upstream answers with `content_type`; its body in `chunks`."""
    async with processor(FakeUpstreams(), store) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60, client=client)
        answer = {":status": "200", "content-type": content_type, "x-mcp-upstream": "weather via_upstream", **extra}
        bodies = [
            pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=i == len(chunks) - 1))
            for i, chunk in enumerate(chunks)
        ]
        stream = ScriptedStream([
            request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token}),
            request_body(call("w_forecast")),
            response_headers(answer),
            *bodies,
        ])
        await run(service, stream)
    return stream


ASKS = b'data: {"jsonrpc":"2.0","id":4,"method":"roots/list"}\n\n'
DONE = b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'


async def test_sse_answer_to_a_client_that_can_be_asked_streams_through_the_router_tagged(
    any_store: SessionStore,
) -> None:
    stream = await routed_answer(
        "text/event-stream", {"capabilities": {"roots": {}}}, [ASKS[:20], ASKS[20:] + DONE], any_store,
        **{"content-length": str(len(ASKS + DONE))},
    )
    headers_reply = stream.answers[2]
    assert headers_reply.mode_override.response_body_mode == processing_mode_pb2.ProcessingMode.STREAMED
    # The tagged body is longer than the upstream's: no stale content-length may reach the client.
    assert "content-length" in headers_reply.response_headers.response.header_mutation.remove_headers
    body = b"".join(r.response_body.response.body_mutation.body for r in stream.answers[3:])
    assert body == ASKS.replace(b'"id":4', b'"id":"mcpgw:[\\"weather\\",4]"') + DONE


async def test_json_answers_and_clients_that_cannot_be_asked_stay_off_the_router() -> None:
    for content_type, client in (("application/json", {"capabilities": {"roots": {}}}), ("text/event-stream", None)):
        async with processor(FakeUpstreams()) as (service, store):
            token = TOKENS.issue("2025-11-25")
            claims = TOKENS.verify(token)
            assert claims is not None
            await store.create(claims.session_id, 60, client=client)
            stream = ScriptedStream([
                request_headers({":method": "POST", ":path": "/mcp", "mcp-session-id": token}),
                request_body(call("w_forecast")),
                response_headers({":status": "200", "content-type": content_type, "x-mcp-upstream": "weather via_upstream"}),
            ])
            await run(service, stream)  # the stream ends with the response-headers reply
        assert not stream.answers[2].HasField("mode_override")


# --- A client leaving mid-SSE: the mark for Envoy's access log, and the log's receiver ------


def mark_of(reply: pb.ProcessingResponse) -> str | None:
    namespace = reply.dynamic_metadata.fields.get(METADATA_NAMESPACE)
    if namespace is None or CALL_KEY not in namespace.struct_value.fields:
        return None  # (the namespace may hold other keys: the answering server of an SSE answer)
    return str(namespace.struct_value.fields[CALL_KEY].string_value)


async def test_an_sse_answer_streaming_past_the_router_is_marked_for_the_access_log() -> None:
    async with routing(FakeUpstreams()) as (service, router, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        client = {":method": "POST", ":path": "/mcp", "mcp-session-id": token}
        sse = {":status": "200", "content-type": "text/event-stream", "x-mcp-upstream": "weather via_upstream"}
        answers = {}
        for request_id, answer in ((1, sse), ("two", sse), (3, {**sse, "content-type": "application/json"})):
            stream = ScriptedStream([
                request_headers(client), request_body(call("w_forecast", request_id)), response_headers(answer)
            ])
            await run(service, stream)
            answers[request_id] = stream.answers[2]
        # A follow-up (the client cancelling call 1) is not a call of its own: never marked.
        follow_up = ScriptedStream([request_headers(client), request_body(cancel(1)), response_headers(sse)])
        await run(service, follow_up)
        first, second = mark_of(answers[1]), mark_of(answers["two"])
        assert first is not None and second is not None
        assert router.marks.open(first) == MarkedCall("weather", claims.session_id, "2025-11-25", 1)
        assert router.marks.open(second) == MarkedCall("weather", claims.session_id, "2025-11-25", "two")
        assert mark_of(answers[3]) is None  # JSON: answered whole, nothing streams past us
        assert mark_of(follow_up.answers[2]) is None
        # Neither the client's token nor the backend session id is in it.
        assert token not in first and "backend-1" not in first
        # Every SSE answer names its upstream for Envoy's Lua filter (it watches it for list
        # changes told inside); a JSON answer cannot carry one.
        def answering(reply: pb.ProcessingResponse) -> str | None:
            fields = reply.dynamic_metadata.fields.get(METADATA_NAMESPACE)
            found = fields.struct_value.fields.get("server") if fields is not None else None
            return None if found is None else str(found.string_value)

        assert answering(answers[1]) == answering(follow_up.answers[2]) == "weather"
        assert answering(answers[3]) is None


def test_a_mark_opens_only_with_the_key_that_sealed_it_and_unaltered() -> None:
    marks, other = CallMarks(), CallMarks()
    call_ = MarkedCall("weather", "0" * 32, "2025-11-25", 7)
    mark = marks.seal(call_)
    assert mark is not None and marks.open(mark) == call_
    assert other.open(mark) is None  # another router process, or a guess
    mac, _, payload = mark.partition(".")
    assert marks.open(f"{mac}.{payload.replace('7', '8')}") is None  # someone else's call
    assert marks.open(payload) is None and marks.open("") is None
    # An id too long to carry in every log entry: the call is not marked (documented limit).
    assert marks.seal(MarkedCall("weather", "0" * 32, "2025-11-25", "x" * 600)) is None


def test_a_session_mark_names_any_call_of_its_session_and_server_but_nothing_else() -> None:
    """The Lua fast path appends "\n" + the raw JSON id to a mark sealed per (server, session)."""
    marks, other = CallMarks(), CallMarks()
    sealed = marks.seal_session("weather", "0" * 32, "2025-11-25")
    assert marks.open(sealed + "\n7") == MarkedCall("weather", "0" * 32, "2025-11-25", 7)
    assert marks.open(sealed + '\n"abc"') == MarkedCall("weather", "0" * 32, "2025-11-25", "abc")
    # The Lua filter's own call number after the id is not part of the call.
    assert marks.open(sealed + "\n7\n4096") == MarkedCall("weather", "0" * 32, "2025-11-25", 7)
    assert other.open(sealed + "\n7") is None
    forged = sealed.replace("weather", "files")
    assert marks.open(forged + "\n7") is None  # another server, same MAC: refused
    # Only a string or an integer id, and well-formed JSON, is a call.
    assert marks.open(sealed + "\n1.5") is None and marks.open(sealed + "\n[1]") is None
    assert marks.open(sealed + "\n{") is None and marks.open(sealed) is None


async def test_envoy_ending_the_stream_before_the_answer_began_cancels_the_call_upstream() -> None:
    upstreams = FakeUpstreams()
    async with routing(upstreams) as (service, _, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        client = {":method": "POST", ":path": "/mcp", "mcp-session-id": token}
        sse = {":status": "200", "content-type": "text/event-stream", "x-mcp-upstream": "weather via_upstream"}
        # Its client left while the answer was pending: Envoy ends the stream after the body.
        await run(service, ScriptedStream([request_headers(client), request_body(call("w_forecast", 4))]))
        # An SSE answer whose head passed us: our stream ends with that reply, the call goes on
        # (its client leaving is the access log's to report).
        await run(service, ScriptedStream([
            request_headers(client), request_body(call("w_forecast", 5)), response_headers(sse)
        ]))
    assert [(sent, body["method"], body["params"]["requestId"]) for sent, body in upstreams.posted] == [
        ("backend-1", "notifications/cancelled", 4)
    ]


async def test_a_reported_call_is_cancelled_on_its_sessions_backend_session_if_there_is_one() -> None:
    upstreams = FakeUpstreams()
    async with routing(upstreams) as (_, router, store):
        sid = "1" * 32
        await store.create(sid, 60)
        assert await store.set_backend(sid, "weather", "backend-9")
        await cancel_marked_call(router, MarkedCall("weather", sid, "2025-11-25", "call-7"))
        # A server no longer configured, and a session without a backend session: nothing to do.
        await cancel_marked_call(router, MarkedCall("gone", sid, "2025-11-25", 1))
        await cancel_marked_call(router, MarkedCall("weather", "2" * 32, "2025-11-25", 1))
    assert upstreams.posted == [
        (
            "backend-9",
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": "call-7", "reason": "the client left"},
            },
        )
    ]


def log_entry(
    mark: str | None, *, flags: dict[str, bool] | None = None, upstream_done: bool = False
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    for flag, value in (flags or {}).items():
        setattr(common.response_flags, flag, value)
    if mark is not None:
        common.metadata.filter_metadata[METADATA_NAMESPACE].update({CALL_KEY: mark})
    if upstream_done:
        common.time_to_last_upstream_rx_byte.FromMilliseconds(3)
    return entry


class ScriptedLogStream:
    def __init__(self, messages: list[als_pb2.StreamAccessLogsMessage]) -> None:
        self._messages = list(messages)
        self.responses: list[als_pb2.StreamAccessLogsResponse] = []

    async def recv_message(self) -> als_pb2.StreamAccessLogsMessage | None:
        return self._messages.pop(0) if self._messages else None

    async def send_message(self, message: als_pb2.StreamAccessLogsResponse) -> None:
        self.responses.append(message)


def entries(*logged: accesslog_pb2.HTTPAccessLogEntry) -> als_pb2.StreamAccessLogsMessage:
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=logged)
    )


async def test_only_a_marked_call_whose_client_left_mid_answer_is_reported() -> None:
    marks = CallMarks()
    calls = {n: MarkedCall("weather", "0" * 32, "2025-11-25", n) for n in range(1, 6)}
    mark = {n: marks.seal(c) for n, c in calls.items()}
    left = {"downstream_connection_termination": True}
    stream = ScriptedLogStream([
        entries(
            log_entry(mark[1], flags=left),
            log_entry(mark[2], flags={"downstream_remote_reset": True}),  # an HTTP/2 stream reset
            log_entry(mark[3]),  # no downstream flag: a stray or misconfigured logger
        ),
        entries(
            log_entry(mark[4], flags=left, upstream_done=True),  # Envoy had the whole answer
            log_entry(CallMarks().seal(calls[5]), flags=left),  # sealed by someone else
            log_entry(None, flags=left),  # not a marked call
        ),
    ])
    reported: list[MarkedCall] = []

    async def on_abandoned(call: MarkedCall) -> None:
        reported.append(call)

    receiver = AccessLogReceiver(marks, on_abandoned)
    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(receiver.stream_access_logs)(stream)  # type: ignore[arg-type]
    assert reported == [calls[1], calls[2]]
    assert len(stream.responses) == 1  # the stream is answered when Envoy closes it


def cancel(request_id: object) -> bytes:
    params = {"requestId": request_id, "reason": "user"}
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}).encode()


async def test_a_cancellation_goes_to_the_upstream_running_the_request_else_to_the_broker() -> None:
    async with processor(FakeUpstreams()) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        client = {":method": "POST", ":path": "/mcp", "mcp-session-id": token}
        sse = {":status": "200", "content-type": "text/event-stream", "x-mcp-upstream": "weather via_upstream"}
        await run(service, ScriptedStream([
            request_headers(client), request_body(call("w_forecast", 9)), response_headers(sse)
        ]))
        routed = ScriptedStream([request_headers(client), request_body(cancel(9))])
        await run(service, routed)
        not_ours = ScriptedStream([request_headers(client), request_body(cancel(10))])
        await run(service, not_ours)
        # A JSON answer ends the call: a later cancellation of that id is the broker's.
        json_answer = {**sse, "content-type": "application/json"}
        await run(service, ScriptedStream([
            request_headers(client), request_body(call("w_forecast", 11)), response_headers(json_answer)
        ]))
        finished = ScriptedStream([request_headers(client), request_body(cancel(11))])
        await run(service, finished)
    common = routed.answers[1].request_body.response
    assert common.status == pb.CommonResponse.CONTINUE_AND_REPLACE
    sent = set_headers_of(common.header_mutation)
    assert (sent["x-mcp-servername"], sent["mcp-session-id"]) == ("weather", "backend-1")
    assert json.loads(common.body_mutation.body)["params"]["requestId"] == 9
    for to_broker in (not_ours, finished):
        assert to_broker.answers[1].request_body.response.status == pb.CommonResponse.CONTINUE
        assert not to_broker.answers[1].request_body.response.HasField("body_mutation")


async def test_unknown_session_gets_404_and_no_initialize() -> None:
    upstreams = FakeUpstreams()
    async with processor(upstreams) as (service, _):
        token = TOKENS.issue("2025-11-25")  # valid seal, but the broker never created it
        stream = ScriptedStream([
            request_headers({":method": "POST", "mcp-session-id": token}),
            request_body(call("w_forecast", 5)),
        ])
        await run(service, stream)
    immediate = stream.answers[1].immediate_response
    assert immediate.status.code == 404
    assert json.loads(immediate.body)["id"] == 5
    assert upstreams.calls == []


async def test_upstream_that_cannot_initialize_gives_a_json_rpc_error() -> None:
    async with processor(FakeUpstreams(fail=True)) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        stream = ScriptedStream([
            request_headers({":method": "POST", "mcp-session-id": token}),
            request_body(call("w_forecast", 6)),
        ])
        await run(service, stream)
    immediate = stream.answers[1].immediate_response
    assert immediate.status.code == 200
    document = json.loads(immediate.body)
    assert (document["id"], document["error"]["code"]) == (6, -32603)
    assert set_headers_of(immediate.headers)["mcp-session-id"] == token


async def test_an_unmarked_answer_is_not_passed_off_as_the_upstreams() -> None:
    async with processor(FakeUpstreams()) as (service, store):
        token = TOKENS.issue("2025-11-25")
        claims = TOKENS.verify(token)
        assert claims is not None
        await store.create(claims.session_id, 60)
        stream = ScriptedStream([
            request_headers({":method": "POST", "mcp-session-id": token}),
            request_body(call("w_forecast", 7)),
            response_headers({":status": "404"}),  # e.g. the broker, on a stale route
        ])
        await run(service, stream)
        # Not treated as an expired backend session: the mapping stays.
        assert await store.get_backend(claims.session_id, "weather") == "backend-1"
    immediate = stream.answers[2].immediate_response
    assert json.loads(immediate.body)["id"] == 7


async def test_ten_concurrent_first_calls_initialize_once() -> None:
    upstreams = FakeUpstreams(delay=0.2)
    store = MemorySessionStore()
    token = TOKENS.issue("2025-11-25")
    claims = TOKENS.verify(token)
    assert claims is not None
    await store.create(claims.session_id, 60)
    need = route_request({":method": "POST", "mcp-session-id": token}, call("w_x"), RoutingTable.from_config(CONFIG), TOKENS)
    assert isinstance(need, NeedsBackend)
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        servers = {s.name: s for s in CONFIG.servers}
        backends = BackendSessions(store, nursery, lambda: servers, open_session=upstreams.open_session)

        async def first_call() -> None:
            results.append(await backends.backend_for(need))

        async with trio.open_nursery() as callers:
            for _ in range(10):
                callers.start_soon(first_call)
        # A caller that gives up does not cancel the flight the others wait on.
        with trio.move_on_after(0.01):
            await backends.backend_for(need)
    assert upstreams.calls == ["weather"]
    assert results == ["backend-1"] * 10


async def test_flight_errors_reach_every_waiter_and_a_deleted_session_is_gone() -> None:
    store = MemorySessionStore()
    token = TOKENS.issue("2025-11-25")
    need = route_request({":method": "POST", "mcp-session-id": token}, call("w_x"), RoutingTable.from_config(CONFIG), TOKENS)
    assert isinstance(need, NeedsBackend)
    errors: list[type[Exception]] = []
    async with trio.open_nursery() as nursery:
        servers = {s.name: s for s in CONFIG.servers}
        backends = BackendSessions(store, nursery, lambda: servers, open_session=FakeUpstreams(fail=True).open_session)

        async def first_call() -> None:
            try:
                await backends.backend_for(need)
            except (SessionGone, BackendUnavailable) as error:
                errors.append(type(error))

        await first_call()  # no session in the store yet
        assert errors == [SessionGone]
        assert need.claims is not None
        await store.create(need.claims.session_id, 60)
        async with trio.open_nursery() as callers:
            for _ in range(3):
                callers.start_soon(first_call)
    assert errors == [SessionGone] + [BackendUnavailable] * 3


async def test_session_store_down_is_a_503_json_rpc_error_with_the_id() -> None:
    from tests.support.redis import free_port

    unreachable = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with processor(FakeUpstreams(), unreachable) as (service, _):
            stream = ScriptedStream([
                request_headers({":method": "POST", "mcp-session-id": TOKENS.issue("2025-11-25")}),
                request_body(call("w_forecast", 11)),
            ])
            await run(service, stream)
    finally:
        await unreachable.aclose()
    immediate = stream.answers[1].immediate_response
    assert immediate.status.code == 503
    document = json.loads(immediate.body)
    assert (document["id"], document["error"]["code"]) == (11, -32603)


async def test_serve_router_starts_on_a_free_port_and_stops_promptly_when_cancelled() -> None:
    from mcp_gateway.config import GatewayConfig
    from mcp_gateway.router.service import serve_router

    config = CONFIG.model_copy(update={"gateway": CONFIG.gateway.model_copy(update={"router_listen": "127.0.0.1:0"})})
    _, reloads = trio.open_memory_channel[GatewayConfig](1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_router, config, reloads, TOKENS, MemorySessionStore())
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # gRPC is listening
        await stream.aclose()
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 3
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_cancelling_during_a_pending_initialise_is_prompt() -> None:
    upstreams = FakeUpstreams(delay=3600)  # an upstream that never answers initialize
    store = MemorySessionStore()
    token = TOKENS.issue("2025-11-25")
    claims = TOKENS.verify(token)
    assert claims is not None
    await store.create(claims.session_id, 60)
    need = route_request({":method": "POST", "mcp-session-id": token}, call("w_x"), RoutingTable.from_config(CONFIG), TOKENS)
    assert isinstance(need, NeedsBackend)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            servers = {s.name: s for s in CONFIG.servers}
            backends = BackendSessions(store, nursery, lambda: servers, open_session=upstreams.open_session)
            nursery.start_soon(backends.backend_for, need)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert upstreams.calls == ["weather"]
