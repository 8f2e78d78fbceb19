"""A Streamable HTTP client for one upstream MCP server (httpx + httpx-sse, on Trio via anyio).

Covers what the gateway needs from an upstream: the initialize handshake, requests whose answer
comes as JSON or as an SSE stream (with notifications before the result), notifications, the
standalone GET stream, paging through list results, and DELETE at the end. Every transport
failure leaves this module as an `UpstreamError`.

An upstream that refuses initialize, or answers it without a session, is asked `server/discover`
(MCP 2026-07-28); if it speaks that revision the client switches to its modern mode: `_meta` and
`Mcp-Method`/`Mcp-Name` on every request, `subscriptions/listen` instead of the GET stream
(docs/upstream.md, "Modern upstreams").
"""

from __future__ import annotations

import functools
import itertools
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import Any, Self

import httpx
import httpx_sse
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import LATEST_STABLE
from mcp_gateway.upstream.body import stream_post
from mcp_gateway.upstream.credentials import (
    cached_authorization,
    credential_rejected,
    upstream_authorization,
)
from mcp_gateway.upstream.errors import NoSessionIssued, UpstreamError, raise_rpc_error
from mcp_gateway.upstream.modern import (
    ACKNOWLEDGED,
    DISCOVER_METHOD,
    LISTEN_METHOD,
    MODERN_VERSION,
    UpstreamMode,
    discover_result_as_initialize,
    honoured_resources,
    listen_filter,
    mirrored_headers,
    record_mode,
    request_meta,
    with_meta,
)
from mcp_gateway.upstream.rpc import (
    DEFAULT_CLIENT_INFO,
    MessageHandler,
    RequestShortcuts,
    result_of,
)
from mcp_gateway.upstream.tool_params import call_param_headers

_log = get_logger("mcp_gateway.upstream")

JsonObject = dict[str, Any]
# Called with each server→client message (notification or request) seen while waiting.

# How long to wait for a server to close a POST's SSE stream once its answer has arrived.
STREAM_DRAIN_SECONDS = 1.0
# Messages read from one SSE stream but not yet handled; beyond this the upstream is flooding.
MAX_QUEUED_MESSAGES = 1000
_ACCEPT_BOTH = "application/json, text/event-stream"


class HttpUpstreamClient(RequestShortcuts):
    """One logical MCP connection to one upstream; create with `open_client` or use as a context."""

    def __init__(
        self,
        server: ServerConfig,
        *,
        http: httpx.AsyncClient | None = None,
        protocol_version: str = LATEST_STABLE,
        client_info: Mapping[str, Any] = DEFAULT_CLIENT_INFO,
        capabilities: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.server = server
        self._owns_http = http is None
        self._http = http if http is not None else new_http_client(server)
        self.requested_version = protocol_version
        self.client_info = dict(client_info)
        self.capabilities = dict(capabilities or {})
        # Set by initialize(), or given to attach to an existing backend session.
        self.session_id = session_id
        self.protocol_version: str | None = protocol_version if session_id else None
        self.initialize_result: JsonObject = {}
        # Learnt by initialize(): the upstream speaks MCP 2026-07-28 (no session; `_meta` and
        # mirrored headers on every request; subscriptions/listen instead of the GET stream).
        self.modern = False
        self._ids = itertools.count(1)

    @property
    def stateless(self) -> bool:
        """Initialized, and the upstream keeps no session for us (modern, or legacy stateless)."""
        return self.protocol_version is not None and self.session_id is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        """Open for one session: nothing to start (each exchange is its own request); the
        session ends (DELETE) with the block."""
        async with self:
            yield

    # -- handshake ---------------------------------------------------------------------------

    async def initialize(self) -> JsonObject:
        """Run initialize + notifications/initialized; return the server's InitializeResult.

        An upstream that refuses the handshake, or keeps no session, is asked `server/discover`:
        one that speaks MCP 2026-07-28 is then spoken to in that revision (`self.modern`), and
        its discover result is returned in the InitializeResult's shape. Preferring the
        handshake keeps every stateful upstream as it was (a backend session per client, and
        server→client requests during a call); only upstreams that have no session to offer pay
        the extra round trip.
        """
        try:
            result = await self._handshake()
        except UpstreamError as refused:
            if refused.status is None and refused.rpc_code is None:
                raise  # not reached, or no answer: no verdict about its revision
            if refused.status in (401, 403):
                raise  # our credential, not its revision
            discovered = await self.discover()
            if discovered is None:
                raise
            return discovered
        if self.session_id is None:
            discovered = await self.discover()
            if discovered is not None:
                return discovered
        return result

    async def discover(self) -> JsonObject | None:
        """`server/discover` at MCP 2026-07-28; on success the client is in modern mode and the
        result comes back shaped as an InitializeResult. None (mode unchanged) when the
        upstream does not speak the revision."""
        previous = self.protocol_version, self.session_id
        self.protocol_version, self.session_id, self.modern = MODERN_VERSION, None, True
        try:
            result = await self.request(DISCOVER_METHOD)
        except UpstreamError as refused:
            if refused.status is None and refused.rpc_code is None:
                self.protocol_version, self.session_id = previous
                self.modern = False
                raise
            result = {}
        versions = result.get("supportedVersions")
        if not isinstance(versions, list) or MODERN_VERSION not in versions:
            self.protocol_version, self.session_id = previous
            self.modern = False
            return None
        shaped = discover_result_as_initialize(result, MODERN_VERSION)
        self.initialize_result = shaped
        return shaped

    async def _handshake(self) -> JsonObject:
        params = {
            "protocolVersion": self.requested_version,
            "capabilities": self.capabilities,
            "clientInfo": self.client_info,
        }
        result = await self.request("initialize", params)
        version = result.get("protocolVersion")
        if not isinstance(version, str):
            raise UpstreamError("initialize result has no protocolVersion")
        self.protocol_version = version
        self.initialize_result = result
        await self.notify("notifications/initialized")
        return result

    # -- messages ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        on_message: MessageHandler | None = None,
        *,
        request_id: int | str | None = None,
    ) -> JsonObject:
        """Send one request; return its result, or raise UpstreamError (rpc_code set for errors)."""
        rid = next(self._ids) if request_id is None else request_id
        message: JsonObject = {"jsonrpc": "2.0", "id": rid, "method": method}
        if self.modern:
            message["params"] = with_meta(params, self._meta())
        elif params is not None:
            message["params"] = dict(params)
        answer = await self._post_request(message, on_message)
        return result_of(self.server.name, method, answer)

    async def request_raw(
        self, message: JsonObject, on_message: MessageHandler | None = None
    ) -> JsonObject:
        """Send a request as given (id included) and return the whole response message."""
        if self.modern:
            params = message.get("params")
            message = {**message, "params": with_meta(params if isinstance(params, dict) else None, self._meta())}
        return await self._post_request(message, on_message)

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        if self.modern:
            # MCP 2026-07-28 has no client→server notifications over HTTP (a client cancels by
            # closing the request's stream); a modern server would only drop them.
            return
        message: JsonObject = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        async with self._post(message) as response:
            await response.aread()

    async def respond(self, message: JsonObject) -> None:
        """Send a response to a server→client request (e.g. a ping the upstream sent us)."""
        async with self._post(message) as response:
            await response.aread()

    async def listen(
        self,
        on_message: MessageHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold the standalone GET SSE stream open, handing each message to `on_message`.

        Calls `task_status.started()` once the upstream accepted the stream; returns when the
        upstream ends it. An upstream without a GET stream answers 405: UpstreamError(status=405).
        A modern upstream has no GET stream: the same messages come on `subscriptions/listen`.
        """
        if self.modern:
            capabilities = self.initialize_result.get("capabilities")
            offered = capabilities if isinstance(capabilities, dict) else {}
            watched = frozenset(
                f"notifications/{kind}/list_changed"
                for kind in ("tools", "prompts", "resources")
                if isinstance(offered.get(kind), dict) and offered[kind].get("listChanged")
            )
            await self._listen_modern(listen_filter(watched), on_message, lambda _: task_status.started())
            return
        authorization = await upstream_authorization(self.server)
        try:
            async with self._http.stream(
                "GET",
                self.server.url,
                headers=self._headers(authorization, accept="text/event-stream"),
                # An idle stream is healthy: no read timeout here; the supervisor pings instead.
                timeout=httpx.Timeout(self.server.timeout_seconds, read=None),
            ) as response:
                if response.status_code == 401:
                    # Whoever opens the stream again gets a new token.
                    credential_rejected(self.server, authorization)
                _raise_for_status(self.server.name, "GET stream", response)
                task_status.started()

                async def handle(message: JsonObject) -> bool:
                    await on_message(message)
                    return False

                await _relay_events(self.server.name, response, handle)
        except (httpx.HTTPError, httpx_sse.SSEError) as exc:
            raise UpstreamError(f"{self.server.name}: GET stream failed: {_describe(exc)}") from exc

    async def listen_resources(
        self,
        uris: Sequence[str],
        on_message: MessageHandler,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """A modern upstream's `notifications/resources/updated` for `uris`, on a
        `subscriptions/listen` of their own: `task_status.started(honoured URIs)` once
        acknowledged, then each message to `on_message` until the upstream ends it."""
        await self._listen_modern(
            listen_filter(frozenset(), uris),
            on_message,
            lambda ack: task_status.started(honoured_resources(ack)),
        )

    async def _listen_modern(
        self,
        notifications: JsonObject,
        on_message: MessageHandler,
        acknowledged_by: Callable[[JsonObject], None],
    ) -> None:
        """Hold a `subscriptions/listen` request open (MCP 2026-07-28): its SSE answer opens with
        `notifications/subscriptions/acknowledged` (handed to `acknowledged_by`), then carries
        what `notifications` asked for, each handed to `on_message`, until the upstream ends it."""
        rid = f"mcp-gateway-listen-{next(self._ids)}"
        message: JsonObject = {
            "jsonrpc": "2.0",
            "id": rid,
            "method": LISTEN_METHOD,
            "params": with_meta({"notifications": notifications}, self._meta()),
        }
        acknowledged = False

        async def handle(incoming: JsonObject) -> bool:
            nonlocal acknowledged
            if "method" not in incoming and incoming.get("id") == rid:
                if "error" in incoming:
                    error = incoming["error"] if isinstance(incoming["error"], dict) else {}
                    raise UpstreamError(
                        f"{self.server.name}: {LISTEN_METHOD} refused: {error.get('message', 'error')}",
                        rpc_code=error.get("code") if isinstance(error.get("code"), int) else None,
                    )
                return True  # the upstream closed the subscription
            if incoming.get("method") == ACKNOWLEDGED and not acknowledged:
                acknowledged = True
                acknowledged_by(incoming)
                return False
            await on_message(incoming)
            return False

        # An idle subscription is healthy: no read timeout here; the supervisor pings instead.
        timeout = httpx.Timeout(self.server.timeout_seconds, read=None)
        try:
            async with self._post(message, http_timeout=timeout) as response:
                content_type = response.headers.get("content-type", "").partition(";")[0].strip()
                if content_type != "text/event-stream":
                    raise UpstreamError(
                        f"{self.server.name}: {LISTEN_METHOD} answered {content_type!r}, not a stream",
                        status=response.status_code,
                    )
                await _relay_events(self.server.name, response, handle)
        except (httpx.HTTPError, httpx_sse.SSEError) as exc:
            raise UpstreamError(f"{self.server.name}: {LISTEN_METHOD} failed: {_describe(exc)}") from exc
        if not acknowledged:
            raise UpstreamError(f"{self.server.name}: {LISTEN_METHOD} ended unacknowledged")

    async def ping(self) -> None:
        # MCP 2026-07-28 has no ping; server/discover is the cheapest request it must answer.
        await self.request(DISCOVER_METHOD if self.modern else "ping")

    def _meta(self) -> JsonObject:
        return request_meta(MODERN_VERSION, self.capabilities, self.client_info)

    async def aclose(self, *, end_session: bool = True) -> None:
        """End the backend session (DELETE, best effort, bounded) and close the HTTP client."""
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            if end_session and self.session_id is not None:
                try:
                    headers = self._headers(cached_authorization(self.server))
                    response = await self._http.delete(self.server.url, headers=headers)
                    await response.aclose()
                except httpx.HTTPError:
                    pass  # the session expires on its own; nothing else to do
            if self._owns_http:
                await self._http.aclose()

    # -- plumbing ----------------------------------------------------------------------------

    def _headers(
        self,
        authorization: str | None,
        *,
        accept: str = _ACCEPT_BOTH,
        message: JsonObject | None = None,
    ) -> dict[str, str]:
        headers = {"accept": accept}
        if self.modern and message is not None and isinstance(message.get("method"), str):
            params = message.get("params")
            headers.update(mirrored_headers(message["method"], params if isinstance(params, dict) else None))
            if message["method"] == "tools/call" and isinstance(params, dict):
                headers.update(call_param_headers(self.server.name, params))
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        if authorization:
            headers["authorization"] = authorization
        return headers

    @asynccontextmanager
    async def _post(self, message: JsonObject, *, http_timeout: httpx.Timeout | None = None) -> Any:
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            async with AsyncExitStack() as stack:
                response = await self._send_post(body, stack, message, http_timeout)
                if self.modern and 400 <= response.status_code < 500:
                    await raise_rpc_error(self.server.name, str(message.get("method", "response")), response)
                _raise_for_status(
                    self.server.name, str(message.get("method", "response")), response
                )
                if message.get("method") == "initialize":
                    self.session_id = response.headers.get("mcp-session-id") or None
                yield response
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{self.server.name}: {message.get('method', 'message')}: {_describe(exc)}"
            ) from exc

    async def _send_post(
        self,
        body: bytes,
        stack: AsyncExitStack,
        message: JsonObject | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """POST `body` with the upstream's credential; an OAuth token the upstream refuses (401)
        is replaced and the POST sent once more (a 401 means the request was not acted on)."""
        for attempt in range(2):
            authorization = await upstream_authorization(self.server)
            headers = self._headers(authorization, message=message)
            headers["content-type"] = "application/json"
            exchange = AsyncExitStack()
            response = await exchange.enter_async_context(
                stream_post(self._http, self.server.url, body, headers, http_timeout=http_timeout)
            )
            if response.status_code == 401 and attempt == 0 and credential_rejected(self.server, authorization):
                await exchange.aclose()
                continue
            stack.push_async_exit(exchange)
            return response
        raise AssertionError("unreachable: the second attempt always returns")

    async def _post_request(
        self, message: JsonObject, on_message: MessageHandler | None
    ) -> JsonObject:
        rid = message["id"]
        try:
            async with self._post(message) as response:
                content_type = response.headers.get("content-type", "").partition(";")[0].strip()
                if content_type == "application/json":
                    decoded = _decode_json(self.server.name, await response.aread())
                    if isinstance(decoded, dict) and decoded.get("id") == rid:
                        return decoded
                    raise UpstreamError(
                        f"{self.server.name}: JSON answer does not match id {rid!r}"
                    )
                if content_type == "text/event-stream":
                    answer: JsonObject | None = None

                    async def handle(incoming: JsonObject) -> bool:
                        nonlocal answer
                        if "method" not in incoming and incoming.get("id") == rid:
                            answer = incoming
                            return True
                        if on_message is not None and answer is None:
                            await on_message(incoming)
                        return False

                    await _relay_events(self.server.name, response, handle)
                    if answer is None:
                        raise UpstreamError(
                            f"{self.server.name}: stream ended before the answer to {rid!r}"
                        )
                    return answer
                raise UpstreamError(
                    f"{self.server.name}: unexpected content type {content_type!r}",
                    status=response.status_code,
                )
        except (httpx.HTTPError, httpx_sse.SSEError) as exc:
            raise UpstreamError(
                f"{self.server.name}: {message.get('method')}: {_describe(exc)}"
            ) from exc


async def _relay_events(
    name: str,
    response: httpx.Response,
    handle: Callable[[JsonObject], Awaitable[bool]],
) -> None:
    """Hand each SSE message of `response` to `handle` until the stream ends.

    A reader task owns the iteration and only ever waits on the socket, never on `handle`
    (which may wait on a slow client): cancelling us then stops the read mid-await, which ends
    httpx's body iterators (async generators) properly instead of dropping them half-read for
    Trio to report. For the same reason the reader stops on a bad message by cancelling its
    own read, never by raising out of the loop: that would leave httpx's iterators suspended
    at a `yield` (`aclosing` only reaches the outermost one). Once `handle` says the awaited
    answer came, the stream gets STREAM_DRAIN_SECONDS to end on its own (servers close it
    after the answer).
    """
    send, receive = trio.open_memory_channel[JsonObject](MAX_QUEUED_MESSAGES)

    async def read() -> None:
        failure: UpstreamError | None = None
        async with send:
            with trio.CancelScope() as reading:
                try:
                    async with aclosing(httpx_sse.EventSource(response).aiter_sse()) as events:
                        async for event in events:
                            if reading.cancel_called:
                                continue  # stopping: what was read already is dropped
                            try:
                                message = _decode_event(name, event)
                                if message is not None:
                                    send.send_nowait(message)
                            except UpstreamError as exc:
                                failure = exc
                                reading.cancel()
                            except trio.WouldBlock:
                                failure = UpstreamError(
                                    f"{name}: sends messages faster than they can be relayed"
                                )
                                reading.cancel()
                            except trio.BrokenResourceError:
                                reading.cancel()  # the relay ended: nobody takes messages
                except (httpx.HTTPError, httpx_sse.SSEError) as exc:
                    raise UpstreamError(f"{name}: stream failed: {_describe(exc)}") from exc
        if failure is not None:
            raise failure

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async with receive:
                async for message in receive:
                    if await handle(message):
                        nursery.cancel_scope.deadline = trio.current_time() + STREAM_DRAIN_SECONDS
    except BaseExceptionGroup as group:
        failures = [e for e in group.exceptions if isinstance(e, UpstreamError)]
        if failures:
            raise failures[0] from None
        raise


def new_http_client(server: ServerConfig) -> httpx.AsyncClient:
    """An httpx client for one upstream: HTTP/2 when TLS negotiates it, bounded connect/read."""
    timeout = httpx.Timeout(server.timeout_seconds, connect=min(server.timeout_seconds, 5.0))
    return httpx.AsyncClient(
        http2=True,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        verify=tls_context(),
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context of every `new_http_client`: what httpx would build for each
    client itself (certifi's CA bundle, no environment), built once. Loading the bundle costs
    ~25-40 ms of CPU, which httpx paid per client: for each upstream at start (100 upstreams:
    ~3.5 s before the broker listened) and for each backend session the router opens. Sharing is
    safe: a context is connection-independent, and httpcore sets the same ALPN protocols on it
    for every connection here (all these clients are HTTP/2-capable)."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


async def open_backend_session(
    server: ServerConfig,
    protocol_version: str,
    client_info: Mapping[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
    capabilities: Mapping[str, Any] | None = None,
    log_level: str | None = None,
) -> str:
    """Initialize a new session on `server` for a gateway client; return its Mcp-Session-Id.

    The router calls this on a client's first routed call to that upstream. The session stays
    open on the upstream (no DELETE here); it belongs to the gateway session that asked for it.
    `log_level`: the client's `logging/setLevel`, applied before the session is used (best
    effort: an upstream that refuses it still serves the call).
    """
    client = HttpUpstreamClient(
        server,
        http=http,
        protocol_version=protocol_version,
        client_info=client_info,
        capabilities=capabilities,
    )
    try:
        with trio.fail_after(server.timeout_seconds):
            await client.initialize()
            if log_level is not None and client.session_id is not None:
                await _set_level(client, log_level)
    except trio.TooSlowError as exc:
        raise UpstreamError(f"{server.name}: initialize timed out") from exc
    finally:
        await client.aclose(end_session=False)
    if client.session_id is None:
        raise NoSessionIssued(f"{server.name}: upstream issued no Mcp-Session-Id (stateless server)")
    return client.session_id


def modern_client(
    server: ServerConfig,
    client_info: Mapping[str, Any],
    capabilities: Mapping[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
) -> HttpUpstreamClient:
    """A client in modern mode for an upstream discovery found speaking MCP 2026-07-28
    (`mode_of`), without asking it `server/discover` again."""
    client = HttpUpstreamClient(server, http=http, client_info=client_info, capabilities=capabilities)
    client.protocol_version, client.modern = MODERN_VERSION, True
    return client


async def discover_mode(
    server: ServerConfig,
    client_info: Mapping[str, Any] = DEFAULT_CLIENT_INFO,
    *,
    http: httpx.AsyncClient | None = None,
) -> UpstreamMode:
    """Learn (and record, upstream/modern.py) how `server` is spoken to, as the supervisor does
    at connect: for a router running without a supervisor, once an upstream gave it no session.
    A session the handshake opened is ended again."""
    client = HttpUpstreamClient(server, http=http, client_info=client_info)
    try:
        with trio.fail_after(server.timeout_seconds):
            await client.initialize()
    except trio.TooSlowError as exc:
        raise UpstreamError(f"{server.name}: initialize timed out") from exc
    finally:
        await client.aclose(end_session=True)
    mode = UpstreamMode(server.url, client.protocol_version or "", client.session_id is None)
    record_mode(server, mode)
    return mode


async def _set_level(client: HttpUpstreamClient, level: str) -> None:
    # The id is ours on a session only we have used so far: no client id can collide with it.
    try:
        await client.request("logging/setLevel", {"level": level}, request_id="mcp-gateway-level")
    except UpstreamError as exc:
        _log.info("log level not applied upstream", server=client.server.name, reason=exc.message)


def _raise_for_status(name: str, what: str, response: httpx.Response) -> None:
    if response.status_code >= 400 or response.status_code in (301, 302, 303, 307, 308):
        raise UpstreamError(
            f"{name}: {what}: HTTP {response.status_code}", status=response.status_code
        )


def _decode_json(name: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpstreamError(f"{name}: answer is not JSON") from exc


def _decode_event(name: str, event: httpx_sse.ServerSentEvent) -> JsonObject | None:
    if event.event != "message" or not event.data:
        return None  # priming events and keep-alives carry no message
    message = _decode_json(name, event.data.encode())
    if not isinstance(message, dict):
        raise UpstreamError(f"{name}: SSE event is not a JSON-RPC message")
    return message


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
