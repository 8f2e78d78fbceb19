"""The /mcp endpoint: Streamable HTTP (2025-11-25, accepting 2025-03-26 and 2025-06-18 clients).

POST carries one JSON-RPC message (a batch for 2025-03-26 sessions) and is answered with JSON or,
when the client accepts it and the upstream streams (progress), with SSE. GET opens the
session's notification stream; DELETE ends the session. Every refusal is a JSON-RPC error
body with the request's id when it could be read, and the HTTP status the spec names.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from mcp_gateway.auth import Principal, requested_name
from mcp_gateway.broker import auth as broker_auth
from mcp_gateway.broker import stateful
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.core import BrokerCore, SessionProblem, UnknownVirtualServer
from mcp_gateway.broker.listen import LISTEN, ListenStreams
from mcp_gateway.broker.modern import ModernRequests
from mcp_gateway.config import VirtualServer
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import (
    ErrorCode,
    ErrorResponse,
    Limits,
    ModernEnvelope,
    Notification,
    Peek,
    ProtocolError,
    Request,
    check_header_body_mismatch,
    error_response,
    is_modern,
    modern_http_status,
    origin_allowed,
    parse_message,
    peek,
    read_modern_envelope,
    session_version_refusal,
    supports_batch,
)
from mcp_gateway.protocol import Response as ResponseMessage
from mcp_gateway.sessions.store import SessionStoreUnavailable, client_of
from mcp_gateway.sessions.tokens import MAX_TOKEN_LENGTH

log = get_logger("mcp_gateway.broker")

JSON = "application/json"
SSE = "text/event-stream"
DEFAULT_PROTOCOL_VERSION = "2025-03-26"  # what the spec says to assume without the header
DISCOVER = "server/discover"
# The 2026-07-28 headers whose copies must agree with the body; sent twice, which would a peer read?
ROUTING_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name")
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
SSE_EVENT = b"event: message\ndata: %b\n\n"
SSE_EVENT_WITH_ID = b"id: %b-%d\nevent: message\ndata: %b\n\n"  # id: <epoch>-<number>
# Kuadrant's header selecting a virtual server (`namespace/name`); header names are
# case-insensitive, the value is matched exactly.
VIRTUAL_SERVER_HEADER = "x-mcp-virtualserver"
KNOWN_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "logging/setLevel",
        DISCOVER,
        LISTEN,
        "batch",
        "invalid",
        "session",
        "refused",
    }
)


def register(
    app: Quart, core: BrokerCore, nursery: trio.Nursery, *, keepalive_seconds: float = 15.0
) -> None:
    """Add the /mcp routes; streamed answers run their upstream call in `nursery`."""
    auth = broker_auth.BrokerAuth(core)
    broker_auth.register(app, auth)
    modern = ModernRequests(core)
    listens = ListenStreams(core, nursery)

    def limits() -> Limits:
        return request_limits(core)

    def refusal(status: int, code: int, message: str, request_id: Any = None) -> Response:
        return Response(error_response(request_id, code, message), status, content_type=JSON)

    def store_unavailable(request_id: Any = None) -> Response:
        # Redis down or slow: the gateway's own dependency failed, not the request. 503 (retry
        # later) with the request id, as the router answers a routed call (router/decision.py);
        # a warning, not a traceback and a 500 (the fault suite's Redis outage found those).
        log.warning("session store unavailable", path=request.path)
        return refusal(503, ErrorCode.INTERNAL_ERROR, "Session store unavailable", request_id)

    def is_modern_request() -> bool:
        """A 2026-07-28 request: a version header without a handshake, and no session. A
        request in a session is a handshake-era one whatever its version header says (modern
        requests have no sessions): a bad version there is the session's -32600."""
        return is_modern(request.headers.get("mcp-protocol-version")) and "mcp-session-id" not in request.headers

    def origin_refused() -> Response | None:
        if origin_allowed(combined_header("origin"), core.config.gateway.allowed_origins):
            return None
        return refusal(403, ErrorCode.INVALID_REQUEST, "Forbidden: Origin not allowed")

    def version_refused(request_id: Any = None) -> Response | None:
        # Reached only by handshake-era requests (modern ones branch off before).
        reason = session_version_refusal(request.headers.get("mcp-protocol-version"))
        return None if reason is None else refusal(400, ErrorCode.INVALID_REQUEST, reason, request_id)

    async def read_body(limit: int) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.body:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def accepts(*types: str) -> list[str]:
        accept = request.headers.get("accept", "")
        if not accept.strip() or "*/*" in accept:
            return list(types)
        return [t for t in types if t in accept]

    def virtual_or_refusal(request_id: Any = None) -> VirtualServer | Response | None:
        """The client's virtual server (`X-Mcp-Virtualserver`), or the refusal of an unknown one."""
        name = request.headers.get(VIRTUAL_SERVER_HEADER)
        try:
            return core.virtual_server(name)
        except UnknownVirtualServer:
            return refusal(
                400,
                ErrorCode.INVALID_REQUEST,
                f"Bad Request: unknown virtual server {str(name)[:200]!r}",
                request_id,
            )

    async def session_or_refusal(request_id: Any = None) -> ClientSession | Response:
        token = combined_header("mcp-session-id")
        if token is not None and len(token) > MAX_TOKEN_LENGTH:
            return refusal(404, ErrorCode.INVALID_REQUEST, "Session not found", request_id)
        try:
            return await core.session_for(token)
        except SessionProblem as problem:
            return refusal(problem.status, ErrorCode.INVALID_REQUEST, problem.message, request_id)
        except SessionStoreUnavailable:
            return store_unavailable(request_id)

    def record(method: str, status: int, started: float) -> None:
        # Method names come from clients: only ones we know become label values (bounded series).
        label = method if method in KNOWN_METHODS else "other"
        core.metrics.requests.labels(label, str(status)).inc()
        core.metrics.latency.labels(label).observe(time.perf_counter() - started)

    @app.post("/mcp")
    @app.post(stateful.PATH)
    async def post_mcp() -> Response:
        started = time.perf_counter()
        response = await _post(started)
        return response

    async def _post(started: float) -> Response:
        refused = _refused_before_body()
        if refused is None:
            body_limits = limits()
            body = await read_body(body_limits.max_body_bytes)
            if body is not None:
                return await _post_body(body, body_limits, started)
            refused = refusal(413, ErrorCode.INVALID_REQUEST, "Request body too large")
        record("refused", refused.status_code, started)
        return refused

    def _refused_before_body() -> Response | None:
        if (refused := origin_refused()) is not None:
            return refused
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != JSON:
            return refusal(
                415, ErrorCode.INVALID_REQUEST, "Unsupported Media Type: use application/json"
            )
        if not accepts(JSON, SSE):
            return refusal(
                406,
                ErrorCode.INVALID_REQUEST,
                "Not Acceptable: accept application/json or text/event-stream",
            )
        return None

    async def _post_body(body: bytes, body_limits: Limits, started: float) -> Response:
        # Inbound OAuth first: nothing about the request is answered to a client without a token.
        principal = await auth.check(_peeked_id(body, body_limits))
        if isinstance(principal, Response):
            record("refused", principal.status_code, started)
            return principal
        acceptable = accepts(JSON, SSE)
        if is_modern_request():
            if request.path == stateful.PATH:
                return stateful.modern_refused(body, body_limits, record, started)
            return await _modern_post(body, body_limits, principal, acceptable, started)
        token = combined_header("mcp-session-id")
        claims = core.tokens.verify(token) if token and len(token) <= MAX_TOKEN_LENGTH else None
        allow_batch = claims is not None and supports_batch(claims.protocol_version)
        try:
            parsed = parse_message(body, body_limits, allow_batch=allow_batch)
        except ProtocolError as error:
            record("invalid", error.http_status, started)
            return Response(error.to_json(), error.http_status, content_type=JSON)
        messages = parsed if isinstance(parsed, list) else [parsed]
        first = messages[0] if messages else None
        if isinstance(first, Request) and not isinstance(parsed, list):
            if first.method == DISCOVER:
                # Without a 2026-07-28 MCP-Protocol-Version header (the SDK always sends one):
                # the same answer, when the gateway answers discover at all.
                if not core.config.gateway.serve_discover or request.path == stateful.PATH:
                    record(DISCOVER, 200, started)
                    return Response(_discover_not_served(first.id), 200, content_type=JSON)
                record(DISCOVER, 200, started)
                return Response(modern.discover(first), 200, content_type=JSON)
            if first.method == "initialize":
                return await _initialize(stateful.negotiated_down(first), started)
        request_ids = [m.id for m in messages if isinstance(m, Request)]
        first_id = request_ids[0] if len(request_ids) == 1 else None
        session = await session_or_refusal(first_id)
        if isinstance(session, Response):
            record("session", session.status_code, started)
            return session
        if (refused := version_refused(first_id)) is not None:
            record("refused", refused.status_code, started)
            return refused
        virtual = virtual_or_refusal(first_id)
        if isinstance(virtual, Response):
            record("refused", virtual.status_code, started)
            return virtual
        requests = [m for m in messages if isinstance(m, Request)]
        if (refused := _out_of_scope(principal, requests)) is not None:
            record("refused", refused.status_code, started)
            return refused
        allowed = broker_auth.allowed_for(auth.gate, principal)
        for message in messages:
            if isinstance(message, Notification):
                await core.notified(message, session)
            elif isinstance(message, ResponseMessage | ErrorResponse):
                await core.responded(message, session)
        if not requests:
            return Response(b"", 202)  # notifications and responses only: accepted, no body
        if isinstance(parsed, list):
            bodies = [
                await core.handle(r, session, None, virtual=virtual, allowed=allowed) for r in requests
            ]
            record("batch", 200, started)
            return Response(b"[" + b",".join(bodies) + b"]", 200, content_type=JSON)
        only = requests[0]
        # SSE when the client asked for progress (it streams before the result) or takes nothing else.
        # Also when the upstream may ask the client something mid-call (sampling, elicitation,
        # roots): only a stream can carry those requests to it.
        if SSE in acceptable and (
            _wants_progress(only)
            or JSON not in acceptable
            or await core.may_ask_client(only, session)
        ):
            return _streamed(only, session, started, virtual, allowed)
        answer = await core.handle(only, session, None, virtual=virtual, allowed=allowed)
        record(only.method, 200, started)
        return Response(answer, 200, content_type=JSON)

    def modern_refusal(error: ProtocolError, method: str, started: float) -> Response:
        status = 413 if error.http_status == 413 else modern_http_status(error.code)
        record(method, status, started)
        return Response(error.to_json(), status, content_type=JSON)

    async def _modern_post(
        body: bytes,
        body_limits: Limits,
        principal: Principal | None,
        acceptable: list[str],
        started: float,
    ) -> Response:
        """A 2026-07-28 POST: no session; the request's `_meta` says who the client is
        (docs/protocol.md, "Modern requests")."""
        try:
            parsed = parse_message(body, body_limits, allow_batch=False)
        except ProtocolError as error:
            return modern_refusal(error, "invalid", started)
        if isinstance(parsed, Notification):
            # The revision defines no client notifications over HTTP: accepted and dropped.
            return Response(b"", 202)
        if not isinstance(parsed, Request):
            return modern_refusal(
                ProtocolError(ErrorCode.INVALID_REQUEST, "Body must be a single JSON-RPC request"),
                "invalid",
                started,
            )
        message = parsed
        method = message.method
        if method == DISCOVER and not core.config.gateway.serve_discover:
            # The SDK's auto-mode probe: -32601 sends it to the initialize handshake, where the
            # gateway serves everything (gateway.serve_discover says why it is off).
            refusal = ProtocolError(ErrorCode.METHOD_NOT_FOUND, DISCOVER_NOT_SERVED, id=message.id)
            return modern_refusal(refusal, method, started)
        for name in ROUTING_HEADERS:
            if len(request.headers.getlist(name)) > 1:
                duplicated = ProtocolError(
                    ErrorCode.HEADER_MISMATCH,
                    f"Header mismatch: {name} header appears more than once",
                    id=message.id,
                )
                return modern_refusal(duplicated, method, started)
        params = message.params or {}
        named = params.get(NAME_PARAM.get(method, ""))
        seen = Peek("request", method, message.id, named if isinstance(named, str) else None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        mismatch = check_header_body_mismatch(headers, seen)
        if mismatch is not None:
            return modern_refusal(mismatch, method, started)
        try:
            envelope = read_modern_envelope(
                message.params, headers.get("mcp-protocol-version"), message.id
            )
        except ProtocolError as error:
            return modern_refusal(error, method, started)
        virtual = virtual_or_refusal(message.id)
        if isinstance(virtual, Response):
            record("refused", virtual.status_code, started)
            return virtual
        if (refused := _out_of_scope(principal, [message])) is not None:
            record("refused", refused.status_code, started)
            return refused
        allowed = broker_auth.allowed_for(auth.gate, principal)
        if method == LISTEN:
            return _listen(message, envelope, virtual, allowed, acceptable, started)

        subject = principal.subject if principal is not None else ""  # binds a requestState

        async def answer(emit: Callable[[bytes], Any] | None) -> bytes:
            return await modern.handle(message, envelope, emit, virtual=virtual, allowed=allowed, principal=subject, headers=headers)

        try:
            if SSE in acceptable and (_wants_progress(message) or JSON not in acceptable):
                # Checked before the stream commits to 200: a -32021 is a 400 like the others.
                modern.check_capability(message, envelope, virtual, subject, headers)
                return _streamed_answer(answer, method, started)
            body_out = await answer(None)
        except ProtocolError as error:
            return modern_refusal(error, method, started)
        status = _modern_answer_status(body_out)
        record(method, status, started)
        return Response(body_out, status, content_type=JSON)

    def _listen(
        message: Request,
        envelope: ModernEnvelope,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None,
        acceptable: list[str],
        started: float,
    ) -> Response:
        """`subscriptions/listen`: its answer is the client's notification stream (listen.py)."""
        try:
            if SSE not in acceptable:
                raise ProtocolError(
                    ErrorCode.INVALID_REQUEST, f"{LISTEN} answers with {SSE}: accept it", id=message.id
                )
            events = listens.open(
                message, envelope, virtual=virtual, allowed=allowed, keepalive_seconds=keepalive_seconds
            )
        except ProtocolError as error:
            return modern_refusal(error, LISTEN, started)
        record(LISTEN, 200, started)
        return _sse_response(events)

    async def _initialize(message: Request, started: float) -> Response:
        if isinstance(refused := virtual_or_refusal(message.id), Response):
            record("initialize", refused.status_code, started)
            return refused
        outcome = core.initialize(message)
        if isinstance(outcome, bytes):
            record("initialize", 200, started)
            return Response(outcome, 200, content_type=JSON)
        body, version = outcome
        try:
            session = await core.open_session(version, client_of(message.params))
        except SessionStoreUnavailable:
            record("initialize", 503, started)
            return store_unavailable(message.id)
        record("initialize", 200, started)
        return Response(body, 200, content_type=JSON, headers={"mcp-session-id": session.token})

    def _out_of_scope(principal: Principal | None, requests: list[Request]) -> Response | None:
        """403 when the token may not use an item a request names (the lists are cut instead)."""
        gate = auth.gate
        if gate is None or principal is None:
            return None
        for message in requests:
            name = requested_name(message.method, message.params)
            if name is not None and (refusal := gate.refuse_use(principal, name, message.id)):
                return broker_auth.refusal_response(refusal)
        return None

    def _streamed(
        message: Request,
        session: ClientSession,
        started: float,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None = None,
    ) -> Response:
        """Answer on an SSE stream: the upstream's notifications (progress) first, then the result."""

        async def answer(emit: Callable[[bytes], Any] | None) -> bytes:
            return await core.handle(message, session, emit, virtual=virtual, allowed=allowed)

        return _streamed_answer(answer, message.method, started)

    def _streamed_answer(
        answer: Callable[[Callable[[bytes], Any] | None], Any], method: str, started: float
    ) -> Response:
        send, receive = trio.open_memory_channel[bytes](32)
        scope = trio.CancelScope()

        async def work() -> None:
            async with send:
                with scope:

                    async def emit(notification: bytes) -> None:
                        await send.send(notification)

                    await send.send(await answer(emit))

        nursery.start_soon(work)

        async def events() -> AsyncIterator[bytes]:
            # Comments while the upstream works keep idle-timeout proxies from cutting the
            # stream. A client that leaves is noticed at once (hypercorn reads the socket and
            # delivers http.disconnect), which ends this generator and cancels `work`.
            try:
                async with receive:
                    yield b": working\n\n"
                    while True:
                        data: bytes | None = None
                        with trio.move_on_after(keepalive_seconds):
                            try:
                                data = await receive.receive()
                            except trio.EndOfChannel:
                                return
                        if data is None:
                            yield b": keep-alive\n\n"
                        else:
                            yield b"event: message\ndata: " + data + b"\n\n"
            finally:
                scope.cancel()  # the client went away: stop the upstream call it asked for
                record(method, 200, started)

        return _sse_response(events())

    def modern_not_allowed() -> Response | None:
        """2026-07-28 has no GET stream and no session to DELETE: 405, POST is allowed."""
        if not is_modern_request():
            return None  # in a session: the handshake-era GET or DELETE, answered as such
        response = refusal(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed")
        response.headers["allow"] = "POST"
        return response

    @app.get("/mcp")
    @app.get(stateful.PATH)
    async def get_mcp() -> Response:
        if (refused := origin_refused()) is not None:
            return refused
        if (refused := modern_not_allowed()) is not None:
            return refused
        if isinstance(unauthorized := await auth.check(), Response):
            return unauthorized
        if SSE not in accepts(SSE):
            return refusal(
                406, ErrorCode.INVALID_REQUEST, "Not Acceptable: GET /mcp streams text/event-stream"
            )
        session = await session_or_refusal()
        if isinstance(session, Response):
            return session
        if (refused := version_refused()) is not None:
            return refused

        # A reconnecting client names the last event it saw (docs/broker.md, "Resumable streams").
        # Only this session's own log is looked in; whatever the header holds, the GET stays here.
        last_event_id = combined_header("last-event-id")
        with_ids = core.fanout.limits.enabled

        async def events() -> AsyncIterator[bytes]:
            with core.client_stream(session, last_event_id) as stream:
                opening = b": stream open\n\n"
                if with_ids:
                    # An id before any message (2025-11-25's "priming"), so a client cut off
                    # before the first one still resumes from here. Without a data field: SSE
                    # parsers take the id and dispatch nothing, so a client that reads every
                    # `data:` line as JSON never sees it (an empty `data:` would break those).
                    opening += b"id: %b\n\n" % stream.event_id
                yield opening
                while True:
                    # No yield inside the cancel scope: a generator may be suspended there. A
                    # cancelled wait moves no cursor: nothing is lost on a keep-alive.
                    batch: tuple[int, list[bytes]] | None = None
                    with trio.move_on_after(keepalive_seconds):
                        try:
                            batch = await stream.receive_batch()
                        except trio.EndOfChannel:
                            return  # the session was deleted
                    if batch is None:
                        yield b": keep-alive\n\n"
                    elif with_ids:
                        first, messages = batch
                        epoch = stream.epoch
                        if len(messages) == 1:  # the usual case, without a generator's cost
                            yield SSE_EVENT_WITH_ID % (epoch, first, messages[0])
                        else:
                            yield b"".join(
                                SSE_EVENT_WITH_ID % (epoch, first + offset, data)
                                for offset, data in enumerate(messages)
                            )
                    else:
                        yield b"".join(SSE_EVENT % data for data in batch[1])

        return _sse_response(events())

    @app.delete("/mcp")
    @app.delete(stateful.PATH)
    async def delete_mcp() -> Response:
        if (refused := origin_refused()) is not None:
            return refused
        if (refused := modern_not_allowed()) is not None:
            return refused
        if isinstance(unauthorized := await auth.check(), Response):
            return unauthorized
        session = await session_or_refusal()
        if isinstance(session, Response):
            return session
        await core.end_session(session)
        return Response(b"", 200)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response | HTTPException:
        if isinstance(error, HTTPException):
            return error  # Quart's own answers (an unknown path's 404) stay as they are
        if isinstance(error, SessionStoreUnavailable):  # a lookup after the session check
            return store_unavailable()
        log.exception("request failed unexpectedly", path=request.path)
        return refusal(500, ErrorCode.INTERNAL_ERROR, "Internal error")

    @app.route("/mcp", methods=["PUT", "PATCH"])
    @app.route(stateful.PATH, methods=["PUT", "PATCH"])
    async def other_mcp() -> Response:
        response = refusal(405, ErrorCode.INVALID_REQUEST, "Method Not Allowed")
        response.headers["allow"] = "GET, POST, DELETE"
        return response


def combined_header(name: str) -> str | None:
    """A request header; one sent more than once reads as its lines combined (RFC 9110 5.3), as
    the router reads it (router/service.py), so the two never act on different values: two
    session ids name no session (404), two origins are no allowed origin (403). Reading only
    the first line here while the router read the last let one request be served under one
    session by the broker and routed under another (the fault suite's abuse corpus)."""
    values = request.headers.getlist(name)
    return ", ".join(values) if values else None


def request_limits(core: BrokerCore) -> Limits:
    """The parser's limits for a client's message (a POST body or a WebSocket frame)."""
    settings = core.config.gateway.limits
    return Limits(
        max_body_bytes=settings.max_body_bytes,
        max_depth=settings.max_depth,
        max_batch=settings.max_batch,
        max_string_length=settings.max_string_length,
    )


def _peeked_id(body: bytes, limits: Limits) -> Any:
    """The request id for a refusal's body, when the body has a readable one."""
    try:
        return peek(body, limits).id
    except ProtocolError:
        return None


DISCOVER_NOT_SERVED = "server/discover is not served here (gateway.serve_discover); use initialize"


def _discover_not_served(request_id: Any) -> bytes:
    return error_response(request_id, ErrorCode.METHOD_NOT_FOUND, DISCOVER_NOT_SERVED)


def _modern_answer_status(answer: bytes) -> int:
    """A modern answer's HTTP status follows its error code (404 for -32601, 400 for the
    request's own faults), whoever produced the error; a result is 200."""
    if b'"error"' not in answer:
        return 200
    try:
        decoded = json.loads(answer)
    except ValueError:
        return 200
    error = decoded.get("error") if isinstance(decoded, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return modern_http_status(code) if isinstance(code, int) else 200


def _wants_progress(message: Request) -> bool:
    params = message.params or {}
    meta = params.get("_meta")
    return isinstance(meta, dict) and "progressToken" in meta


def _sse_response(body: AsyncIterator[bytes]) -> Response:
    response = Response(body, 200, content_type=SSE)
    response.headers["cache-control"] = "no-store"
    response.headers["x-accel-buffering"] = "no"
    response.timeout = None  # streams live as long as the client
    return response
