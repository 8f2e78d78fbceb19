"""The broker's MCP server logic, HTTP-free: sessions, initialize, federated lists, forwarding.

The HTTP layer (`broker/http.py`) turns requests into calls here and bytes back into responses.
Answers are JSON-RPC response bodies (bytes); anything the upstream streams before its answer
(progress, log messages) is handed to an `emit` callback as serialized notifications.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from mcp_gateway import __version__
from mcp_gateway.broker.aggregate import (
    BadCursor,
    Federation,
    expose_uri,
    federate,
    page_json,
    resolve_uri,
)
from mcp_gateway.broker.fanout import Fanout
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.config import GatewayConfig, ServerConfig
from mcp_gateway.logs import bind_request, get_logger
from mcp_gateway.protocol import (
    ErrorCode,
    Request,
    error_response,
    negotiate_version,
    result_response,
    serialize,
)
from mcp_gateway.protocol import Notification as NotificationMessage
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream import (
    KINDS,
    PROMPTS,
    RESOURCES,
    TOOLS,
    ListKind,
    Supervisor,
    UpstreamClient,
    UpstreamError,
    open_backend_session,
)

log = get_logger("mcp_gateway.broker")

Emit = Callable[[bytes], Awaitable[None]]
JsonObject = dict[str, Any]

LIST_METHODS: dict[str, ListKind] = {k.method: k for k in KINDS}
# Requests that name one federated item and go to the upstream that owns it.
ROUTED_METHODS: dict[str, ListKind] = {
    "tools/call": TOOLS,
    "prompts/get": PROMPTS,
    "resources/read": RESOURCES,
}
# JSON-RPC's "request cancelled" (used by LSP; MCP defines no code): the answer to a call the
# client itself cancelled, which it will ignore.
REQUEST_CANCELLED = -32800
CANCEL_RELAY_SECONDS = 2.0
NOT_FOUND_CODE = {TOOLS.kind: ErrorCode.INVALID_PARAMS, PROMPTS.kind: ErrorCode.INVALID_PARAMS}


@dataclass(frozen=True, slots=True)
class ClientSession:
    token: str  # the Mcp-Session-Id the client holds
    sid: str  # the store key sealed inside it
    protocol_version: str


class SessionProblem(Exception):
    """A request's session header is missing (400) or names no live session (404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BrokerCore:
    def __init__(
        self,
        config: GatewayConfig,
        supervisor: Supervisor,
        tokens: SessionTokens,
        store: SessionStore,
        *,
        fanout: Fanout | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self.config = config
        self.supervisor = supervisor
        self.tokens = tokens
        self.store = store
        self.fanout = fanout or Fanout()
        self.metrics = metrics or BrokerMetrics()
        self.federation = Federation()
        self._fingerprints: dict[str, int] = {}
        # Forwarded calls in flight, by (gateway session, client request id): what a client's
        # notifications/cancelled stops.
        self._in_flight: dict[tuple[str, Any], trio.CancelScope] = {}
        # Backend GET streams relaying resources/updated, by (gateway session, server).
        self._update_relays: dict[tuple[str, str], trio.CancelScope] = {}
        # Owner of those relay tasks; serve_broker sets it to the broker's nursery.
        self.nursery: trio.Nursery | None = None

    # -- sessions ----------------------------------------------------------------------------

    async def open_session(
        self, protocol_version: str, client: dict[str, Any] | None = None
    ) -> ClientSession:
        token = self.tokens.issue(protocol_version)
        claims = self.tokens.verify(token)
        assert claims is not None  # we just sealed it with our own first key
        # `client`: its initialize capabilities + clientInfo, for the backend sessions (router).
        await self.store.create(
            claims.session_id, self.config.gateway.sessions.ttl_seconds, client=client
        )
        self.metrics.sessions_created.inc()
        return ClientSession(token, claims.session_id, protocol_version)

    async def session_for(self, token: str | None) -> ClientSession:
        if not token:
            raise SessionProblem(400, "Bad Request: Mcp-Session-Id header is required")
        claims = self.tokens.verify(token)
        if claims is None or not await self.store.exists(claims.session_id):
            raise SessionProblem(404, "Session not found")
        return ClientSession(token, claims.session_id, claims.protocol_version)

    async def notified(self, notification: NotificationMessage, session: ClientSession) -> None:
        """A client notification. `notifications/cancelled` stops the call wherever it runs: a
        call forwarded here is cancelled (its upstream sees the request abandoned), and every
        backend session of this client is told, since a call routed by Envoy went there under
        the same request id (an upstream that does not know the id ignores it, per the spec)."""
        if notification.method != "notifications/cancelled":
            return
        request_id = (notification.params or {}).get("requestId")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            return
        scope = self._in_flight.get((session.sid, request_id))
        if scope is not None:
            scope.cancel()
        backends = await self.store.backends(session.sid)
        with trio.move_on_after(CANCEL_RELAY_SECONDS):
            async with trio.open_nursery() as nursery:
                for name, backend_id in backends.items():
                    server = self.config.server(name)
                    if server is None or server.transport != "http":
                        continue
                    client = UpstreamClient(
                        server,
                        http=self.supervisor.http_client(name),
                        session_id=backend_id,
                        protocol_version=session.protocol_version,
                    )
                    nursery.start_soon(_tell, client, notification.params)

    async def end_session(self, session: ClientSession) -> None:
        """DELETE: the backend sessions opened for this client end too (best effort, bounded)."""
        for (sid, _server), scope in list(self._update_relays.items()):
            if sid == session.sid:
                scope.cancel()
        backends = await self.store.backends(session.sid)
        async with trio.open_nursery() as nursery:
            for name, backend_id in backends.items():
                server = self.config.server(name)
                if server is not None and server.transport == "http":
                    client = UpstreamClient(
                        server, http=self.supervisor.http_client(name), session_id=backend_id
                    )
                    nursery.start_soon(client.aclose)  # DELETE, shielded, at most 2 s
        await self.store.delete(session.sid)
        self.fanout.close_session(session.sid)
        self.metrics.sessions_deleted.inc()

    # -- the federated catalog ---------------------------------------------------------------

    def refresh(self) -> list[ListKind]:
        """Rebuild the federation from the supervisor's catalog; return the kinds that changed."""
        self.federation = federate(self.supervisor.catalog())
        changed = []
        for kind in KINDS:
            fingerprint = self.federation.fingerprint(kind)
            if self._fingerprints.get(kind.kind) != fingerprint:
                self._fingerprints[kind.kind] = fingerprint
                changed.append(kind)
        self.metrics.federated_tools.set(len(self.federation.items(TOOLS)))
        self.metrics.observe_upstreams(self.supervisor.status())
        return changed

    def announce(self, changed: list[ListKind]) -> None:
        """Tell every open GET stream which lists changed (templates ride on resources)."""
        methods = {k.changed_notification for k in changed}
        for method in sorted(methods):
            delivered = self.fanout.publish(serialize(NotificationMessage(method, None)))
            self.metrics.notifications_sent.inc(delivered)
        self.metrics.notifications_dropped.inc(self.fanout.dropped - self._reported_drops)
        self._reported_drops = self.fanout.dropped

    _reported_drops = 0

    # -- requests ----------------------------------------------------------------------------

    def initialize(self, request: Request) -> tuple[bytes, str] | bytes:
        """Check initialize params; return (error body) or (result body, negotiated version)."""
        params = request.params or {}
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, "initialize needs params.protocolVersion"
            )
        if not isinstance(params.get("capabilities", {}), dict):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, "capabilities must be an object"
            )
        version = negotiate_version(requested)
        result = {
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": True},
                "prompts": {"listChanged": True},
                "resources": {"subscribe": True, "listChanged": True},
            },
            "serverInfo": {"name": "mcp-gateway", "version": __version__},
            "instructions": "One MCP endpoint for many servers: each server's tools carry its prefix.",
        }
        return result_response(request.id, result), version

    async def handle(self, request: Request, session: ClientSession, emit: Emit | None) -> bytes:
        method = request.method
        if method == "ping":
            return result_response(request.id, {})
        kind = LIST_METHODS.get(method)
        if kind is not None:
            return self._list(request, kind)
        routed = ROUTED_METHODS.get(method)
        if routed is not None:
            key = (session.sid, request.id)
            name = (request.params or {}).get(routed.id_field)
            with (
                bind_request(
                    session=session.sid,
                    tool=name if isinstance(name, str) else None,
                    request_id=request.id,
                ),
                trio.CancelScope() as scope,
            ):
                self._in_flight[key] = scope
                try:
                    return await self._forward(request, routed, session, emit)
                except Exception:
                    # A bug on this path answers this request, precisely, and nothing else.
                    log.exception("forwarding failed unexpectedly", method=method)
                    return error_response(request.id, ErrorCode.INTERNAL_ERROR, "Internal error")
                finally:
                    if self._in_flight.get(key) is scope:
                        del self._in_flight[key]
            # The client cancelled it: it ignores any answer, but the HTTP exchange needs one.
            return error_response(request.id, REQUEST_CANCELLED, "Request cancelled")
        if method == "initialize":
            return error_response(
                request.id, ErrorCode.INVALID_REQUEST, "session already initialized"
            )
        if method == "logging/setLevel":
            return result_response(request.id, {})
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(request, session)
        return error_response(request.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _list(self, request: Request, kind: ListKind) -> bytes:
        cursor = (request.params or {}).get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            return error_response(request.id, ErrorCode.INVALID_PARAMS, "cursor must be a string")
        try:
            result = page_json(self.federation, kind, cursor, self.config.gateway.page_size)
        except BadCursor as exc:
            return error_response(request.id, ErrorCode.INVALID_PARAMS, f"Invalid cursor: {exc}")
        # The page is pre-serialized; only the envelope with this request's id is new.
        return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request.id).encode(), result)

    async def _forward(
        self, request: Request, kind: ListKind, session: ClientSession, emit: Emit | None
    ) -> bytes:
        """A routed request that reached the broker (no Envoy in front): relay it ourselves."""
        params = request.params or {}
        key = kind.id_field
        name = params.get(key)
        if not isinstance(name, str):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, f"params.{key} must be a string"
            )
        target = self._owner(kind, name)
        if target is None:
            code = NOT_FOUND_CODE.get(kind.kind, ErrorCode.RESOURCE_NOT_FOUND)
            what = {"tools": "tool", "prompts": "prompt"}.get(kind.kind, "resource")
            return error_response(request.id, code, f"Unknown {what}: {name}")
        server, original = target
        message: JsonObject = {
            "jsonrpc": "2.0",
            "id": request.id,
            "method": request.method,
            "params": {**params, key: original},
        }

        async def relay_stream(incoming: JsonObject) -> None:
            # A stdio/WebSocket link routes server requests elsewhere; only notifications here.
            if emit is not None and "method" in incoming and "id" not in incoming:
                await emit(json.dumps(incoming, separators=(",", ":")).encode())

        async def relay(incoming: JsonObject) -> None:
            if "id" in incoming and "method" in incoming:
                # Server→client requests during a forwarded call need a bidirectional relay
                # (issue 7); say so to the upstream instead of leaving it waiting.
                await client.respond(
                    {
                        "jsonrpc": "2.0",
                        "id": incoming["id"],
                        "error": {
                            "code": ErrorCode.METHOD_NOT_FOUND,
                            "message": "not relayed by the broker's fallback path",
                        },
                    }
                )
            elif emit is not None and "method" in incoming:
                await emit(json.dumps(incoming, separators=(",", ":")).encode())

        if server.transport != "http":
            answer_bytes = await self._forward_on_stream(
                request, server.name, message, relay_stream
            )
            if kind is RESOURCES:
                return _expose_uri_in(answer_bytes, original, name)
            return answer_bytes

        http = self.supervisor.http_client(server.name)
        for attempt in (1, 2):
            try:
                backend = await self._backend_session(session, server.name, http)
            except UpstreamError as exc:
                return self._upstream_failed(request, server.name, exc)
            client = UpstreamClient(
                server, http=http, session_id=backend, protocol_version=session.protocol_version
            )
            try:
                with trio.fail_after(server.timeout_seconds):
                    answer = await client.request_raw(message, relay)
            except UpstreamError as exc:
                if exc.session_expired and attempt == 1:
                    # The upstream restarted and forgot our session: open a new one, replay once.
                    await self.store.delete_backend(session.sid, server.name, expected=backend)
                    continue
                return self._upstream_failed(request, server.name, exc)
            except trio.TooSlowError:
                return error_response(
                    request.id,
                    ErrorCode.INTERNAL_ERROR,
                    f"upstream {server.name} did not answer within {server.timeout_seconds:g}s",
                )
            finally:
                if http is None:
                    await client.aclose(end_session=False)
            answer["id"] = request.id
            if kind is RESOURCES:
                _expose_contents(answer.get("result"), original, name)
            return json.dumps(answer, separators=(",", ":")).encode()
        raise AssertionError("unreachable")

    async def _subscription(self, request: Request, session: ClientSession) -> bytes:
        """resources/(un)subscribe: forwarded on the client's backend session with the owner;
        its `notifications/resources/updated` reach this client's GET streams only."""
        uri = (request.params or {}).get("uri")
        if not isinstance(uri, str):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, "params.uri must be a string"
            )
        target = self._owner(RESOURCES, uri)
        if target is None:
            return error_response(
                request.id, ErrorCode.RESOURCE_NOT_FOUND, f"Unknown resource: {uri}"
            )
        server, original = target
        if server.transport != "http":
            return error_response(
                request.id,
                ErrorCode.METHOD_NOT_FOUND,
                f"subscriptions to {server.transport} upstreams are not relayed",
            )
        http = self.supervisor.http_client(server.name)
        try:
            backend = await self._backend_session(session, server.name, http)
            client = UpstreamClient(
                server, http=http, session_id=backend, protocol_version=session.protocol_version
            )
            message = {
                "jsonrpc": "2.0",
                "id": request.id,
                "method": request.method,
                "params": {**(request.params or {}), "uri": original},
            }
            with trio.fail_after(server.timeout_seconds):
                answer = await client.request_raw(message)
            if http is None:
                await client.aclose(end_session=False)
        except UpstreamError as exc:
            return self._upstream_failed(request, server.name, exc)
        except trio.TooSlowError:
            return error_response(
                request.id, ErrorCode.INTERNAL_ERROR, f"upstream {server.name} timed out"
            )
        if request.method == "resources/subscribe" and "result" in answer:
            self._relay_updates(session, server, backend)
        answer["id"] = request.id
        return json.dumps(answer, separators=(",", ":")).encode()

    def _relay_updates(self, session: ClientSession, server: ServerConfig, backend: str) -> None:
        key = (session.sid, server.name)
        if key in self._update_relays or self.nursery is None:
            return
        scope = trio.CancelScope()
        self._update_relays[key] = scope

        async def relay() -> None:
            client = UpstreamClient(
                server,
                http=self.supervisor.http_client(server.name),
                session_id=backend,
                protocol_version=session.protocol_version,
            )

            async def on_message(message: JsonObject) -> None:
                if message.get("method") != "notifications/resources/updated":
                    return
                params = dict(message.get("params") or {})
                if isinstance(params.get("uri"), str):
                    params["uri"] = expose_uri(server.prefix, params["uri"])
                note = serialize(NotificationMessage("notifications/resources/updated", params))
                self.metrics.notifications_sent.inc(self.fanout.publish(note, session.sid))

            try:
                with scope, bind_request(session=session.sid, server=server.name):
                    await client.listen(on_message)
            except UpstreamError as exc:
                log.info("resource update relay ended", reason=exc.message)
            finally:
                if self._update_relays.get(key) is scope:
                    del self._update_relays[key]
                await client.aclose(end_session=False)  # closes only an HTTP client of its own

        self.nursery.start_soon(relay)

    def _owner(self, kind: ListKind, name: str) -> tuple[ServerConfig, str] | None:
        """The serving upstream behind an exposed name or URI, and its own name for it."""
        if kind is RESOURCES:
            # Any URI under a server's mark is its: templates expand to URIs nobody listed.
            serving = [server for server, _ in self.supervisor.catalog()]
            return resolve_uri(name, serving)
        entry = self.federation.lookup(kind, name)
        server = self.config.server(entry.server) if entry is not None else None
        if entry is None or server is None:
            return None
        return server, entry.original_name

    async def _forward_on_stream(
        self, request: Request, server_name: str, message: JsonObject, relay: Any
    ) -> bytes:
        """Forward over the shared link of a stdio/WebSocket upstream (Envoy cannot reach it).

        Many clients share that link, so the request goes out under a fresh id of the link's
        own and the answer comes back under the client's id.
        """
        client = self.supervisor.stream_client(server_name)
        if client is None:
            return error_response(
                request.id, ErrorCode.INTERNAL_ERROR, f"upstream {server_name} is unavailable"
            )
        server = self.config.server(server_name)
        timeout = server.timeout_seconds if server is not None else 30.0
        try:
            with trio.fail_after(timeout):
                result = await client.request(message["method"], message["params"], relay)
        except UpstreamError as exc:
            return self._upstream_failed(request, server_name, exc)
        except trio.TooSlowError:
            return error_response(
                request.id,
                ErrorCode.INTERNAL_ERROR,
                f"upstream {server_name} did not answer within {timeout:g}s",
            )
        return result_response(request.id, result)

    async def _backend_session(self, session: ClientSession, server_name: str, http: Any) -> str:
        backend = await self.store.get_backend(session.sid, server_name)
        if backend is not None:
            return backend
        server = self.config.server(server_name)
        assert server is not None
        backend = await open_backend_session(
            server,
            session.protocol_version,
            {"name": "mcp-gateway", "version": __version__},
            http=http,
        )
        await self.store.set_backend(session.sid, server_name, backend)
        return backend

    def _upstream_failed(self, request: Request, server: str, exc: UpstreamError) -> bytes:
        log.warning(
            "forwarded request failed", server=server, method=request.method, reason=exc.message
        )
        if exc.rpc_code is not None:
            return error_response(request.id, exc.rpc_code, exc.message, exc.rpc_data)
        return error_response(
            request.id, ErrorCode.INTERNAL_ERROR, f"upstream {server} is unavailable"
        )


async def _tell(client: UpstreamClient, params: Any) -> None:
    try:
        await client.notify("notifications/cancelled", params)
    except UpstreamError:
        pass  # best effort: the upstream is gone or forgot the session; nothing runs there then
    finally:
        await client.aclose(end_session=False)  # closes only an HTTP client of its own


def _expose_contents(result: Any, original: str, exposed: str) -> None:
    """A read resource names itself by its URI: show the client the URI it asked for."""
    if isinstance(result, dict) and isinstance(result.get("contents"), list):
        for content in result["contents"]:
            if isinstance(content, dict) and content.get("uri") == original:
                content["uri"] = exposed


def _expose_uri_in(answer: bytes, original: str, exposed: str) -> bytes:
    message = json.loads(answer)
    _expose_contents(message.get("result"), original, exposed)
    return json.dumps(message, separators=(",", ":")).encode()
