"""The ext_proc gRPC surface: grpclib's handler that feeds each stream's messages to an
`Exchange`, and a write-coalescing server (one socket write per event-loop turn)."""

from __future__ import annotations

import asyncio
from typing import Any, Final, cast

import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import duration_pb2
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

from mcp_gateway.router.decision import (
    reply_error,
)
from mcp_gateway.router.exchange import Exchange, Router
from mcp_gateway.router.ext_proc_messages import CONTINUE, immediate

_log = structlog.get_logger(__name__)

PROCESS_METHOD: Final = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
# Must not exceed the ext_proc filter's max_message_timeout (envoy/bootstrap.yaml.tmpl).
MAX_MESSAGE_TIMEOUT_SECONDS: Final = 600.0


class ExternalProcessor:
    """`envoy.service.ext_proc.v3.ExternalProcessor`, served by grpclib."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def __mapping__(self) -> dict[str, Handler]:
        return {
            PROCESS_METHOD: Handler(
                self.process, Cardinality.STREAM_STREAM, pb.ProcessingRequest, pb.ProcessingResponse
            )
        }

    async def process(self, stream: Stream[pb.ProcessingRequest, pb.ProcessingResponse]) -> None:
        async def extend(seconds: float) -> None:
            timeout = duration_pb2.Duration()
            timeout.FromMilliseconds(int(min(seconds + 1, MAX_MESSAGE_TIMEOUT_SECONDS) * 1000))
            await stream.send_message(pb.ProcessingResponse(override_message_timeout=timeout))

        exchange = Exchange(self._router, extend)
        while (request := await stream.recv_message()) is not None:
            reply = await self._answer(exchange, request)
            await stream.send_message(reply)
            if _last_reply(request, reply, exchange):
                # End the stream now: the trailers leave with this reply, and Envoy (graceful
                # close) processes the rest of the request without us.
                return
        await exchange.abandoned()

    async def _answer(
        self, exchange: Exchange, request: pb.ProcessingRequest
    ) -> pb.ProcessingResponse:
        try:
            which = request.WhichOneof("request")
            if which == "request_headers":
                return await exchange.on_request_headers(request.request_headers)
            if which == "request_body":
                return await exchange.on_request_body(request.request_body)
            if which == "response_headers":
                return await exchange.on_response_headers(request.response_headers)
            if which == "response_body":
                return exchange.on_response_body(request.response_body)
        except Exception:
            # Fail closed: a bug here must never send a call anywhere; the client gets a
            # JSON-RPC error instead of a 5xx or a hang.
            _log.exception("ext_proc failure", phase=request.WhichOneof("request"))
            return immediate(
                reply_error(None, -32603, "Internal error in the gateway router", status=503)
            )
        # A phase we did not ask for (trailers, response body): let it through untouched.
        return _passthrough(request)


def _last_reply(
    request: pb.ProcessingRequest, reply: pb.ProcessingResponse, exchange: Exchange
) -> bool:
    """After this reply there is nothing left for the router to do in this request:
    an immediate response ends it; response headers are the last phase we ask for (response body
    NONE, trailers SKIP); and a body sent on to the broker needs nothing on its way back (the
    broker's answer carries its own session id), so its response headers need not come to us."""
    if reply.HasField("immediate_response"):
        return True
    if request.HasField("response_headers"):
        # Else the body streams through us (mode_override), unless there is none: Envoy then
        # ends the stream, which is not a client leaving (`Exchange.abandoned`).
        return exchange.tagger is None or request.response_headers.end_of_stream
    if request.HasField("response_body"):
        return bool(request.response_body.end_of_stream)
    return request.HasField("request_body") and exchange.need is None


def _passthrough(request: pb.ProcessingRequest) -> pb.ProcessingResponse:
    which = request.WhichOneof("request")
    if which == "response_body":
        return pb.ProcessingResponse(response_body=pb.BodyResponse(response=CONTINUE))
    if which == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


# ---------------------------------------------------------------------------------------------
# Fewer syscalls per ext_proc stream


class _CoalescingTransport:
    """Joins the writes of one event-loop step into one `send`.

    grpclib writes every HTTP/2 frame batch as it is produced: a reply's HEADERS and DATA, and the
    trailers, are separate `send` syscalls, which profiling showed to be the largest single cost
    of the router (five per request). Writes made in the same loop step go out together on the
    next one; ordering is kept and nothing waits longer than one loop iteration.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingServer(Server):
    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        connection_made = protocol.connection_made

        def wrapped(transport: Any) -> None:
            connection_made(cast(asyncio.Transport, _CoalescingTransport(transport)))

        protocol.connection_made = wrapped  # type: ignore[method-assign]
        return protocol


def bound_port(server: Server) -> int:
    # grpclib keeps its asyncio server private; the bound port (listen on :0) is only there.
    sockets: list[Any] = list(getattr(server._server, "sockets", None) or [])
    if not sockets:
        raise RuntimeError("the ext_proc server is not listening")
    return int(sockets[0].getsockname()[1])
