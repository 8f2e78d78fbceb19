"""The JSON-RPC client half of an MCP connection over any link that carries whole messages:
`MessageStreamClient`, shared by the stdio (`stdio.py`) and WebSocket (`websocket.py`)
upstream clients, which only open their links.

Lifetime: the caller owns it. `await nursery.start(client.run)` connects and returns once the
link is up; `run` then keeps the link alive, reconnecting with capped backoff when it drops,
and re-running the initialize handshake if one was done before. Cancelling `run` ends the link.

The public surface is the `UpstreamClient` one (`upstream/rpc.py`): `initialize`, `request`,
`request_raw`, `notify`, `respond`, `ping`, `list_all`, `listen`, `aclose`; every failure is
an `UpstreamError`.

Server→client messages have no per-request stream here, so they are routed like this:
responses by id; `notifications/progress` by progress token to the request that set it;
list-changed and resource-updated notifications to the `listen` handler; any other notification
or server request to the one request in flight that takes messages (it is the call that caused
it), else to the `listen` handler. A server request nobody can take is answered at once (`ping`
with `{}`, anything else with -32601) so the upstream never waits on us.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import (
    LATEST_STABLE,
    ErrorCode,
    ErrorResponse,
    Limits,
    Message,
    Notification,
    ProtocolError,
    Request,
    RequestId,
    Response,
    parse_message,
    serialize,
)
from mcp_gateway.upstream.backoff import Backoff, worth_logging
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.rpc import (
    DEFAULT_CLIENT_INFO,
    MessageHandler,
    RequestShortcuts,
    result_of,
)

JsonObject = dict[str, Any]

# An upstream's messages (tool results with images, resource blobs) can be far larger than what
# the gateway accepts from clients; this bounds one message, not a whole exchange.
UPSTREAM_LIMITS = Limits(max_body_bytes=16 * 1024 * 1024, max_string_length=16 * 1024 * 1024)
# Messages queued for one request (or the listener) before the reader waits for its consumer.
_QUEUE_DEPTH = 64
# A link that stayed up this long resets the reconnect backoff; one that dies sooner (a server
# that crashes right after starting) keeps backing off up to the cap instead of respawning hot.
_STABLE_LINK_SECONDS = 10.0
_SESSION_NOTIFICATIONS = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
    }
)

_log = get_logger(__name__)


class Link(Protocol):
    """A connected, ordered, reliable carrier of whole JSON-RPC messages."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes | None:
        """The next message, or None once the peer has ended the link."""
        ...


# Opens a link, hands it to the callback, and closes it when the callback returns.
LinkUser = Callable[[Link], Awaitable[None]]


@dataclass
class _Pending:
    queue: trio.MemorySendChannel[JsonObject]
    progress_token: RequestId | None
    takes_messages: bool


@dataclass
class _Connection:
    link: Link
    ready: trio.Event = field(default_factory=trio.Event)
    gone: trio.Event = field(default_factory=trio.Event)
    send_lock: trio.Lock = field(default_factory=trio.Lock)


class MessageStreamClient(RequestShortcuts):
    """The JSON-RPC client half of an MCP connection over a message link (see module doc)."""

    # Exceptions that mean "the link failed" (reconnect), as opposed to a bug (propagate).
    link_errors: tuple[type[BaseException], ...] = (
        UpstreamError,
        OSError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
    )

    def __init__(
        self,
        server: ServerConfig,
        *,
        protocol_version: str = LATEST_STABLE,
        client_info: Mapping[str, Any] = DEFAULT_CLIENT_INFO,
        capabilities: Mapping[str, Any] | None = None,
        limits: Limits = UPSTREAM_LIMITS,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = server
        self.requested_version = protocol_version
        self.client_info = dict(client_info)
        self.capabilities = dict(capabilities or {})
        self.limits = limits
        # No transport-level session on a message stream; kept for UpstreamClient's surface.
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.initialize_result: JsonObject = {}
        self.connects = 0  # how many times a link came up (1 + restarts)
        self._backoff = backoff or Backoff()
        self._ids = itertools.count(1)
        self._pending: dict[RequestId, _Pending] = {}
        self._listener: trio.MemorySendChannel[JsonObject] | None = None
        self._connection: _Connection | None = None
        self._connected = trio.Event()
        self._handshake_done = False
        self._closed = False

    # -- lifetime ----------------------------------------------------------------------------

    async def _open_link(self, use: LinkUser) -> None:
        raise NotImplementedError

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started, and keep reconnecting until cancelled or `aclose()`d.

        A failure of the very first connection is raised (from `nursery.start`), so a wrong
        command or URL shows at once; later drops are retried with backoff.
        """
        started = False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while not self._closed:
            opened_at = trio.current_time()
            try:
                await self._open_link(partial(self._use_link, on_ready=report_started))
                reason = "link ended"
            except Exception as exc:
                failure = _link_failure(exc, self.link_errors)
                if failure is None:
                    raise
                if not started:
                    raise _as_upstream_error(self.server.name, "connect", failure) from exc
                reason = str(failure)
            if self._closed:
                return
            if trio.current_time() - opened_at >= _STABLE_LINK_SECONDS:
                # It ran well for a while: a fresh failure, not a crash loop, so retry soon.
                self._backoff.reset()
            delay = self._backoff.next_delay()
            report = _log.warning if worth_logging(self._backoff.attempt) else _log.debug
            report(
                "upstream link lost; reconnecting",
                server=self.server.name,
                transport=self.server.transport,
                reason=reason,
                failures=self._backoff.attempt,
                retry_in=round(delay, 3),
            )
            await trio.sleep(delay)

    async def _use_link(self, link: Link, *, on_ready: Callable[[], None]) -> None:
        connection = _Connection(link)
        self._connection = connection
        self.connects += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop, connection, nursery.cancel_scope)
                if self._handshake_done:
                    # A new process (or socket) is a new MCP session: handshake again before
                    # anyone else may use it.
                    await self._handshake(connection)
                connection.ready.set()
                self._connected.set()
                on_ready()
                await trio.sleep_forever()  # until the read loop sees the link end
        finally:
            self._connection = None
            self._connected = trio.Event()
            connection.ready.set()  # wakes waiters; they see the connection is gone
            connection.gone.set()
            self._drop_waiters()

    def _drop_waiters(self) -> None:
        # Closing a queue makes its reader raise "connection lost": nothing waits forever.
        for pending in self._pending.values():
            pending.queue.close()
        self._pending.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """Open for one session: the link task (`run`) in a nursery of its own, connected
        before the block starts; the session and the link end with the block."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            try:
                yield
            finally:
                await self.aclose()
                nursery.cancel_scope.cancel()

    async def wait_connected(self, connects: int = 1) -> None:
        """Wait until the link has come up `connects` times in all and is ready (handshaken);
        e.g. `wait_connected(client.connects + 1)` waits out a restart."""
        while not self._closed:
            connection = self._connection
            if connection is None:
                await self._connected.wait()
            elif not connection.ready.is_set():
                await connection.ready.wait()
            elif self.connects >= connects:
                return
            else:
                await connection.gone.wait()
        raise UpstreamError(f"{self.server.name}: client is closed")

    async def aclose(self, *, end_session: bool = True) -> None:
        """Stop reconnecting and fail whatever waits; the owner's nursery ends `run`."""
        self._closed = True
        self._connected.set()  # wakes waiters; they see the client is closed
        self._drop_waiters()

    # -- handshake ---------------------------------------------------------------------------

    async def initialize(self) -> JsonObject:
        """Run initialize + notifications/initialized; return the server's InitializeResult.

        After a reconnect the same handshake is repeated automatically.
        """
        connection = await self._wait_connected()
        result = await self._handshake(connection)
        self._handshake_done = True
        return result

    async def _handshake(self, connection: _Connection) -> JsonObject:
        params = {
            "protocolVersion": self.requested_version,
            "capabilities": self.capabilities,
            "clientInfo": self.client_info,
        }
        rid = next(self._ids)
        answer = await self._exchange(connection, Request(rid, "initialize", params), None)
        result = result_of(self.server.name, "initialize", answer)
        version = result.get("protocolVersion")
        if not isinstance(version, str):
            raise UpstreamError(f"{self.server.name}: initialize result has no protocolVersion")
        self.protocol_version = version
        self.initialize_result = result
        await self._send(connection, Notification("notifications/initialized", None))
        return result

    # -- messages ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        on_message: MessageHandler | None = None,
        *,
        request_id: RequestId | None = None,
    ) -> JsonObject:
        """Send one request; return its result, or raise UpstreamError (rpc_code set for errors)."""
        rid = next(self._ids) if request_id is None else request_id
        message = Request(rid, method, dict(params) if params is not None else None)
        connection = await self._wait_connected()
        answer = await self._exchange(connection, message, on_message)
        return result_of(self.server.name, method, answer)

    async def request_raw(
        self, message: JsonObject, on_message: MessageHandler | None = None
    ) -> JsonObject:
        """Send a request as given (id included) and return the whole response message."""
        request = _to_message(self.server.name, message)
        if not isinstance(request, Request):
            raise UpstreamError(f"{self.server.name}: request_raw needs a request, not {message!r}")
        connection = await self._wait_connected()
        return await self._exchange(connection, request, on_message)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        connection = await self._wait_connected()
        await self._send(connection, Notification(method, dict(params) if params else None))

    async def respond(self, message: JsonObject) -> None:
        """Send a response to a server→client request (sampling, elicitation, roots, ping)."""
        response = _to_message(self.server.name, message)
        if not isinstance(response, Response | ErrorResponse):
            raise UpstreamError(f"{self.server.name}: respond needs a response, not {message!r}")
        connection = await self._wait_connected()
        await self._send(connection, response)

    async def listen(
        self,
        on_message: MessageHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Take the session's unsolicited messages (list changes, resource updates, server
        requests no call in flight claims) until the link drops; then return, like the HTTP
        client's GET stream does when the upstream ends it."""
        await self._wait_connected()
        if self._listener is not None:
            raise UpstreamError(f"{self.server.name}: already listening")
        send, receive = trio.open_memory_channel[JsonObject](_QUEUE_DEPTH)
        self._listener = send
        task_status.started()
        try:
            async with receive:
                async for message in receive:
                    await on_message(message)
        finally:
            if self._listener is send:
                self._listener = None

    # -- plumbing ----------------------------------------------------------------------------

    async def _wait_connected(self) -> _Connection:
        """The live, handshaken connection; waits (bounded) across a reconnect."""
        with trio.move_on_after(self.server.timeout_seconds):
            while not self._closed:
                connection = self._connection
                if connection is None:
                    await self._connected.wait()
                elif not connection.ready.is_set():
                    await connection.ready.wait()
                else:
                    return connection
            raise UpstreamError(f"{self.server.name}: client is closed")
        raise UpstreamError(
            f"{self.server.name}: not connected after {self.server.timeout_seconds}s"
        )

    async def _send(self, connection: _Connection, message: Message) -> None:
        data = serialize(message)
        async with connection.send_lock:
            try:
                await connection.link.send(data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _as_upstream_error(self.server.name, "send", exc) from exc

    async def _exchange(
        self, connection: _Connection, request: Request, on_message: MessageHandler | None
    ) -> JsonObject:
        """Send `request`, hand every message routed to it to `on_message`, return the answer.

        The wait is an idle timeout (reset by each message for this request), like an HTTP read
        timeout, so a long call that reports progress is not cut. When the wait ends without an
        answer (timeout, or our caller cancelled), the upstream is told with
        notifications/cancelled so it can stop the work.
        """
        rid = request.id
        if rid in self._pending:
            raise UpstreamError(f"{self.server.name}: request id {rid!r} is already in flight")
        send, receive = trio.open_memory_channel[JsonObject](_QUEUE_DEPTH)
        self._pending[rid] = _Pending(send, _progress_token(request.params), on_message is not None)
        answered = False
        try:
            await self._send(connection, request)
            with receive, trio.move_on_after(self.server.timeout_seconds) as idle:
                async for message in receive:
                    if "method" not in message:
                        answered = True
                        return message
                    idle.deadline = trio.current_time() + self.server.timeout_seconds
                    if on_message is not None:
                        await on_message(message)
                raise UpstreamError(
                    f"{self.server.name}: connection lost before the answer to {rid!r}"
                )
            raise UpstreamError(f"{self.server.name}: {request.method} timed out")
        finally:
            self._pending.pop(rid, None)
            if not answered and self._connection is connection:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    cancelled = Notification(
                        "notifications/cancelled",
                        {"requestId": rid, "reason": "the gateway's client gave up on it"},
                    )
                    # If the link is going away there is nothing left to cancel.
                    with contextlib.suppress(UpstreamError):
                        await self._send(connection, cancelled)

    async def _read_loop(self, connection: _Connection, link_scope: trio.CancelScope) -> None:
        try:
            while True:
                data = await connection.link.receive()
                if data is None:
                    return
                try:
                    message = parse_message(data, self.limits)
                except ProtocolError as exc:
                    # One bad message is the upstream's bug, not a reason to drop the session.
                    _log.warning(
                        "upstream sent an invalid message",
                        server=self.server.name,
                        code=exc.code,
                        problem=exc.message,
                    )
                    continue
                assert not isinstance(message, list)  # batches were refused by parse_message
                await self._route(connection, message)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, UpstreamError) as exc:
            _log.warning("upstream link failed", server=self.server.name, problem=str(exc))
        finally:
            link_scope.cancel()

    async def _route(self, connection: _Connection, message: Message) -> None:
        obj = _to_object(message)
        if isinstance(message, Response | ErrorResponse):
            pending = self._pending.get(message.id) if message.id is not None else None
            if pending is None:
                _log.info("upstream answered an unknown request", server=self.server.name)
                return
            await _deliver(pending.queue, obj)
            return
        target = self._target_for(message)
        if target is not None and await _deliver(target, obj):
            return
        if isinstance(message, Request):
            # Nobody can answer for the client: answer for it, so the upstream does not hang.
            answer: Message = (
                Response(message.id, {})
                if message.method == "ping"
                else ErrorResponse(
                    message.id, ErrorCode.METHOD_NOT_FOUND, f"no client to handle {message.method}"
                )
            )
            await self._send(connection, answer)

    def _target_for(
        self, message: Request | Notification
    ) -> trio.MemorySendChannel[JsonObject] | None:
        if message.method in _SESSION_NOTIFICATIONS:
            return self._listener
        if message.method == "notifications/progress" and isinstance(message.params, dict):
            token = message.params.get("progressToken")
            for pending in self._pending.values():
                if pending.progress_token is not None and pending.progress_token == token:
                    return pending.queue
        takers = [pending for pending in self._pending.values() if pending.takes_messages]
        if len(takers) == 1:
            return takers[0].queue
        return self._listener


def _progress_token(params: Any) -> RequestId | None:
    if isinstance(params, dict):
        meta = params.get("_meta")
        if isinstance(meta, dict):
            token = meta.get("progressToken")
            if isinstance(token, str) or (isinstance(token, int) and not isinstance(token, bool)):
                return token
    return None


async def _deliver(queue: trio.MemorySendChannel[JsonObject] | None, obj: JsonObject) -> bool:
    """Queue `obj`; False when the consumer is gone (its queue closed meanwhile)."""
    if queue is None:
        return False
    try:
        await queue.send(obj)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        return False
    return True


def _to_object(message: Message) -> JsonObject:
    """A parsed message as the plain JSON object the handlers (and UpstreamClient's) take."""
    if isinstance(message, Request):
        out: JsonObject = {"jsonrpc": "2.0", "id": message.id, "method": message.method}
    elif isinstance(message, Notification):
        out = {"jsonrpc": "2.0", "method": message.method}
    elif isinstance(message, Response):
        return {"jsonrpc": "2.0", "id": message.id, "result": message.result}
    else:
        error: JsonObject = {"code": message.code, "message": message.message}
        if message.data is not None:
            error["data"] = message.data
        return {"jsonrpc": "2.0", "id": message.id, "error": error}
    if message.params is not None:
        out["params"] = message.params
    return out


def _to_message(name: str, obj: JsonObject) -> Message:
    """A caller's JSON object as a protocol message, refusing what is not valid JSON-RPC."""
    raw_id = obj.get("id")
    # bool is an int subclass and must not pass for an id.
    rid: RequestId | None = (
        raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    )
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise UpstreamError(f"{name}: params must be an object")
    method = obj.get("method")
    if isinstance(method, str):
        return Request(rid, method, params) if rid is not None else Notification(method, params)
    if rid is not None and "result" in obj:
        return Response(rid, obj["result"])
    error = obj.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return ErrorResponse(rid, error["code"], str(error.get("message", "")), error.get("data"))
    raise UpstreamError(f"{name}: not a JSON-RPC message")


def _link_failure(
    exc: BaseException, link_errors: tuple[type[BaseException], ...]
) -> BaseException | None:
    """The link failure inside `exc` (nurseries wrap errors in groups), or None for anything
    that is not purely a link failure (a bug, which must propagate)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_link_failure(inner, link_errors) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    return exc if isinstance(exc, link_errors) else None


def _as_upstream_error(name: str, what: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return UpstreamError(f"{name}: {what}: {detail}")


__all__ = [
    "DEFAULT_CLIENT_INFO",
    "UPSTREAM_LIMITS",
    "Link",
    "LinkUser",
    "MessageStreamClient",
]
