"""`/mcp/ws`: MCP over WebSocket for clients (subprotocol `mcp`, one JSON-RPC message per text
frame), bridged to the same gateway sessions and dispatch as POST /mcp.

One socket carries what Streamable HTTP spreads over POSTs and the GET stream: requests (run
concurrently, so a long call does not hold up a ping), the client's notifications and its
answers to server→client requests, and every server message — answers, a call's progress and
requests, and the session's list_changed notifications. Bad frames get the same JSON-RPC errors
as a bad POST body; HTTP-only refusals (Origin, a missing `mcp` subprotocol, an unknown session)
are answered before the upgrade, with the status a POST would get.

A socket that opened its session with `initialize` owns it: the session ends when the socket
closes (nobody else holds its token). A socket may instead attach to a session opened over HTTP
(`Mcp-Session-Id` on the upgrade request); that session outlives the socket.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio
from quart import Quart, Response, websocket

from mcp_gateway.auth import Principal
from mcp_gateway.broker.auth import BrokerAuth, allowed_for
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.core import BrokerCore, SessionProblem, UnknownVirtualServer
from mcp_gateway.broker.http import DISCOVER_NOT_SERVED, VIRTUAL_SERVER_HEADER, request_limits
from mcp_gateway.broker.modern import HANDSHAKE_DISCOVER_VERSIONS, ModernRequests
from mcp_gateway.config import VirtualServer
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import (
    ErrorCode,
    ErrorResponse,
    Message,
    Notification,
    ProtocolError,
    Request,
    error_response,
    origin_allowed,
    parse_message,
)
from mcp_gateway.protocol import Response as ResponseMessage
from mcp_gateway.sessions.store import client_of
from mcp_gateway.sessions.tokens import MAX_TOKEN_LENGTH

log = get_logger("mcp_gateway.broker")

PATH = "/mcp/ws"
SUBPROTOCOL = "mcp"
# Requests one socket may have in flight; more wait (the socket is read no further meanwhile).
MAX_IN_FLIGHT = 32
DISCOVER = "server/discover"
# Close code when the socket's session ended under it (an application code, RFC 6455 §7.4.2:
# 4000-4999; 4404 reads as "session not found", the status a POST would get).
SESSION_ENDED = 4404


def register(app: Quart, core: BrokerCore) -> None:
    auth = BrokerAuth(core)
    # The answer POST /mcp gives, when it gives one, but naming only the handshake revisions:
    # the socket serves sessions, so a client that discovers here must initialize.
    discover = partial(ModernRequests(core).discover, versions=HANDSHAKE_DISCOVER_VERSIONS)

    @app.websocket(PATH)
    async def mcp_ws() -> Response | None:
        refused = await _refused_upgrade(core)
        if isinstance(refused, Response):
            return refused
        # Inbound OAuth: the upgrade carries the bearer token (docs/auth.md).
        principal = await auth.check_header(websocket.headers.get("authorization"))
        if isinstance(principal, Response):
            return principal
        try:
            virtual = core.virtual_server(websocket.headers.get(VIRTUAL_SERVER_HEADER))
        except UnknownVirtualServer as unknown:
            body = error_response(
                None,
                ErrorCode.INVALID_REQUEST,
                f"Bad Request: unknown virtual server {str(unknown)[:200]!r}",
            )
            return Response(body, 400, content_type="application/json")
        await websocket.accept(subprotocol=SUBPROTOCOL)
        await _Bridge(
            core, attached=refused, virtual=virtual, auth=auth, principal=principal, discover=discover
        ).run()
        return None


async def _refused_upgrade(core: BrokerCore) -> Response | ClientSession | None:
    """An HTTP refusal of the upgrade, or the HTTP session it attaches to (None: a new one)."""

    def refusal(status: int, message: str) -> Response:
        body = error_response(None, ErrorCode.INVALID_REQUEST, message)
        return Response(body, status, content_type="application/json")

    if not origin_allowed(websocket.headers.get("origin"), core.config.gateway.allowed_origins):
        return refusal(403, "Forbidden: Origin not allowed")
    if SUBPROTOCOL not in websocket.requested_subprotocols:
        return refusal(400, f"Bad Request: offer the WebSocket subprotocol {SUBPROTOCOL!r}")
    token = websocket.headers.get("mcp-session-id")
    if token is None:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        return refusal(404, "Session not found")
    try:
        return await core.session_for(token)
    except SessionProblem as problem:
        return refusal(problem.status, problem.message)


class _Bridge:
    """One accepted socket: reads frames, dispatches them, writes answers and notifications."""

    def __init__(
        self,
        core: BrokerCore,
        *,
        attached: ClientSession | None,
        virtual: VirtualServer | None,
        auth: BrokerAuth | None = None,
        principal: Principal | None = None,
        discover: Callable[[Request], bytes] | None = None,
    ) -> None:
        self.core = core
        self.discover = discover  # server/discover's answer (as on POST /mcp)
        self.auth = auth
        self.principal = principal  # verified at the upgrade; its expiry still applies
        self.virtual = virtual  # selected on the upgrade request, for the socket's lifetime
        self.session = attached
        self.owns_session = False
        self._send_lock = trio.Lock()
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.session is not None:
                    nursery.start_soon(self._pump_notifications, self.session)
                while True:
                    frame = await websocket.receive()  # the socket closing cancels this handler
                    await self._frame(frame)
        finally:
            if self.owns_session and self.session is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.core.end_session(self.session)

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await websocket.send(data.decode("utf-8"))  # MCP messages are text frames

    async def _frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.send(
                error_response(None, ErrorCode.INVALID_REQUEST, "send JSON-RPC in text frames")
            )
            return
        try:
            message = parse_message(frame.encode("utf-8"), request_limits(self.core))
        except ProtocolError as error:
            await self.send(error.to_json())
            return
        assert not isinstance(message, list)  # batches were refused by parse_message
        await self._message(message)

    async def _message(self, message: Message) -> None:
        if isinstance(message, Request) and message.method == "initialize":
            await self.send(await self._initialize(message))
            return
        if isinstance(message, Request) and message.method == DISCOVER:
            # As on POST /mcp: answered with gateway.serve_discover; else -32601, on which the
            # SDK's 2026-07-28 probe falls back to initialize.
            if self.core.config.gateway.serve_discover and self.discover is not None:
                await self.send(self.discover(message))
            else:
                await self.send(
                    error_response(message.id, ErrorCode.METHOD_NOT_FOUND, DISCOVER_NOT_SERVED)
                )
            return
        session = await self._live_session(message)
        if session is None:
            return
        if isinstance(message, Notification):
            await self.core.notified(message, session)
        elif isinstance(message, ResponseMessage | ErrorResponse):
            await self.core.responded(message, session)
        else:
            await self._slots.acquire()  # bounded: a flooding client waits for its answers
            self._nursery.start_soon(self._answer, message, session)

    async def _initialize(self, request: Request) -> bytes:
        if self.session is not None:
            return error_response(
                request.id, ErrorCode.INVALID_REQUEST, "session already initialized"
            )
        outcome = self.core.initialize(request)
        if isinstance(outcome, bytes):
            return outcome
        body, version = outcome
        self.session = await self.core.open_session(version, client_of(request.params))
        self.owns_session = True
        self._nursery.start_soon(self._pump_notifications, self.session)
        return body

    async def _live_session(self, message: Message) -> ClientSession | None:
        """The socket's session if it is still alive; else the request is answered (as a POST
        would be: initialize first, or the session is gone) and None returned."""
        request_id = message.id if isinstance(message, Request) else None
        if self.session is None:
            problem = "Bad Request: initialize first"
        else:
            try:
                return await self.core.session_for(self.session.token)
            except SessionProblem as gone:
                problem = gone.message
        if isinstance(message, Request):
            await self.send(error_response(request_id, ErrorCode.INVALID_REQUEST, problem))
        return None

    async def _answer(self, request: Request, session: ClientSession) -> None:
        try:
            refused = (
                self.auth.refused_message(self.principal, request.method, request.params, request.id)
                if self.auth is not None
                else None
            )
            if refused is not None:
                await self.send(refused)
                return
            allowed = allowed_for(self.auth.gate, self.principal) if self.auth is not None else None
            answer = await self.core.handle(
                request, session, self.send, virtual=self.virtual, allowed=allowed
            )
            await self.send(answer)
        finally:
            self._slots.release()

    async def _pump_notifications(self, session: ClientSession) -> None:
        """The session's server notifications (list_changed, resource updates) on this socket,
        read from the session's log as a GET stream reads it (a socket has no ids to resume
        from). The stream ends when the session does (DELETE over HTTP, or expiry): then the
        socket closes too, as a GET stream would, so the client learns now rather than at its
        next request."""
        with self.core.client_stream(session) as stream:
            async for data in stream:
                await self.send(data)
        await websocket.close(SESSION_ENDED, "the MCP session ended; initialize again")
        self._nursery.cancel_scope.cancel()  # the handler ends, and the connection with it
