"""Upstream POSTs cut short leave no httpx async generator for Trio to finalize.

httpx's request and response bodies are async generators. One dropped suspended at a `yield`
(a POST cancelled while its body is being written; an SSE answer abandoned on a bad message)
is reported by Trio's finalizer as a ResourceWarning when it is collected, which
`filterwarnings = error` turns into a failure of whichever test is running at that moment.
The upstreams here are raw loopback servers: one that never reads a request body, and one
that answers with an SSE stream it keeps open.
"""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream.body import send_post
from mcp_gateway.upstream.client import MAX_QUEUED_MESSAGES, HttpUpstreamClient, JsonObject
from mcp_gateway.upstream.errors import UpstreamError

pytestmark = pytest.mark.integration

# More than the client's socket send buffer can hold (Linux: 4 MiB at most by default) while
# the server's receive buffer is kept small: the body write blocks until it is cut short.
BIG = 16 << 20

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@contextmanager
def abandoned_generators() -> Iterator[list[str]]:
    """Trio's reports of async generators collected unexhausted while the block runs."""
    reports: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield reports
        finally:
            gc.collect()  # what a cycle still held
            reports.extend(
                str(w.message)
                for w in caught
                if issubclass(w.category, ResourceWarning) and "Async generator" in str(w.message)
            )


async def serve_raw(nursery: trio.Nursery, handler: Handler, seconds: float = 30) -> ServerConfig:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    # Accepted sockets inherit it: a server that does not read soon stops the client's writes.
    listeners[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await nursery.start(trio.serve_listeners, handler, listeners)
    port = listeners[0].socket.getsockname()[1]
    return ServerConfig(name="up", url=f"http://127.0.0.1:{port}/mcp", timeoutSeconds=seconds)


async def never_reads(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


def sse_kept_open(events: bytes) -> Handler:
    """Answers any request with `events` as an SSE stream, then keeps the stream open."""

    async def handler(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(events), events)
        )
        await trio.sleep_forever()

    return handler


async def request_big(server: ServerConfig) -> None:
    async with HttpUpstreamClient(server) as client:
        await client.request("tools/call", {"name": "echo", "arguments": {"text": "x" * BIG}})


async def post_big(server: ServerConfig) -> None:
    """How the router's replay and cancellation POSTs send."""
    async with httpx.AsyncClient(trust_env=False) as http:
        await send_post(http, server.url, b"x" * BIG, {"content-type": "application/json"})


@pytest.mark.parametrize("send", [request_big, post_big])
async def test_a_post_cancelled_while_its_body_is_written_leaves_nothing_behind(
    send: Callable[[ServerConfig], Awaitable[None]],
) -> None:
    async with trio.open_nursery() as nursery:
        server = await serve_raw(nursery, never_reads)
        with abandoned_generators() as abandoned, trio.move_on_after(0.5) as deadline:
            await send(server)
        assert deadline.cancelled_caught
        nursery.cancel_scope.cancel()
    assert abandoned == []


async def test_a_post_whose_body_write_times_out_leaves_nothing_behind() -> None:
    async with trio.open_nursery() as nursery:
        server = await serve_raw(nursery, never_reads, seconds=0.5)
        with (
            abandoned_generators() as abandoned,
            pytest.raises(UpstreamError, match="WriteTimeout"),
        ):
            await request_big(server)
        nursery.cancel_scope.cancel()
    assert abandoned == []


def _event(data: str) -> bytes:
    return f"event: message\ndata: {data}\n\n".encode()


NOTIFICATION = '{"jsonrpc":"2.0","method":"notifications/progress","params":{}}'


@pytest.mark.parametrize(
    ("events", "error"),
    [
        (_event("not json"), "not JSON"),
        (_event(NOTIFICATION) * (MAX_QUEUED_MESSAGES + 10), "faster than they can be relayed"),
    ],
    ids=["bad-message", "flood"],
)
async def test_an_sse_answer_given_up_on_an_error_leaves_nothing_behind(
    events: bytes, error: str
) -> None:
    async def slow_client(message: JsonObject) -> None:
        await trio.sleep_forever()  # the flood piles up behind it

    async with trio.open_nursery() as nursery:
        server = await serve_raw(nursery, sse_kept_open(events))
        with abandoned_generators() as abandoned:
            async with HttpUpstreamClient(server) as client:
                with pytest.raises(UpstreamError, match=error):
                    await client.request("tools/call", {}, slow_client)
        nursery.cancel_scope.cancel()
    assert abandoned == []
