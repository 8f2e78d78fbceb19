"""The broker's MCP server logic, HTTP-free: sessions, initialize, federated lists, dispatch.

The HTTP layer (`broker/http.py`) turns requests into calls here and bytes back into responses.
Answers are JSON-RPC response bodies (bytes); anything the upstream streams before its answer
(progress, log messages) is handed to an `emit` callback as serialized notifications.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from mcp_gateway import __version__
from mcp_gateway.broker.aggregate import (
    BadCursor,
    Federation,
    federate,
    page_json,
    relevant_features,
    resolve_uri,
    restrict,
    variants_fingerprint,
)
from mcp_gateway.broker.auth import restrict_to
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.fanout import ClientStream, Fanout, ReplayLimits, Resume
from mcp_gateway.broker.forward import Asker, Forwarder
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.config import GatewayConfig, ServerConfig, VirtualServer
from mcp_gateway.logs import bind_request, get_logger
from mcp_gateway.protocol import (
    ErrorCode,
    ErrorResponse,
    Request,
    Response,
    error_response,
    negotiate_version,
    result_response,
    serialize,
)
from mcp_gateway.protocol import Notification as NotificationMessage
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStore, SessionStoreUnavailable
from mcp_gateway.upstream import (
    KINDS,
    PROMPTS,
    RESOURCES,
    TOOLS,
    ListKind,
    Supervisor,
)
from mcp_gateway.upstream.catalog import NO_FEATURES, client_features
from mcp_gateway.upstream.relist import RelistOutcome

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
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
NOT_FOUND_CODE = {TOOLS.kind: ErrorCode.INVALID_PARAMS, PROMPTS.kind: ErrorCode.INVALID_PARAMS}
# Gateway session → the client features it declared (fixed for a session's life); bounded,
# the oldest entries are dropped first and simply read again from the store when needed.
FEATURE_CACHE_SIZE = 65_536


class UnknownVirtualServer(Exception):
    """The client named a virtual server the config does not define."""


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
        nursery: trio.Nursery,
        openings: BackendOpenings | None = None,
        fanout: Fanout | None = None,
        metrics: BrokerMetrics | None = None,
        request_state: RequestStateSeal | None = None,
    ) -> None:
        """`nursery`: the broker's, where background relays run (it outlives every request);
        `openings`: shared with the router of this process; `request_state`: seals 2026-07-28
        clients' requestState (serve.py's, from the session keys; else a key of our own)."""
        self._config = config
        self.nursery = nursery
        self.request_state = request_state or RequestStateSeal(
            [secrets.token_bytes(32)], ttl_seconds=config.gateway.sessions.request_state_ttl_seconds
        )
        self.supervisor = supervisor
        self.tokens = tokens
        self.store = store
        self.fanout = fanout or Fanout(replay_limits(config))
        self.metrics = metrics or BrokerMetrics()
        self.forwarder = Forwarder(
            config, supervisor, store, self.fanout, self.metrics, relist=self.relist,
            nursery=nursery, openings=openings,
        )
        self.federation = Federation()  # what a client declaring no client features sees
        # Federations for clients that declared features some upstream's variants ask for,
        # built on first use per feature set and dropped on every catalog change.
        self._federations: dict[frozenset[str], Federation] = {}
        # The client features some upstream's capability variants add items for (usually none).
        self._relevant: frozenset[str] = NO_FEATURES
        self._session_features: dict[str, frozenset[str]] = {}
        self._fingerprints: dict[str, int] = {}
        self._synced_version = -1  # the supervisor's catalog version the federation shows
        # Forwarded calls in flight, by (gateway session, client request id): what a client's
        # notifications/cancelled stops.
        self._in_flight: dict[tuple[str, Any], trio.CancelScope] = {}
        # Per (virtual server, client features): (the federation it was cut from, its config,
        # the cut).
        self._views = {}

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @config.setter
    def config(self, config: GatewayConfig) -> None:
        self._config = config
        self.forwarder.config = config
        self.fanout.limits = replay_limits(config)

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

    async def responded(self, response: Response | ErrorResponse, session: ClientSession) -> None:
        """A client's answer to a server→client request we relayed: to the upstream that asked."""
        if not await self.forwarder.answer_client(session, json.loads(serialize(response))):
            log.info("client response to no request of ours dropped", session=session.sid)

    async def may_ask_client(self, request: Request, session: ClientSession) -> bool:
        """Could an upstream send this client requests while serving `request`? Only a call the
        broker forwards, and only to a client that announced sampling, elicitation or roots;
        its answer then goes on an SSE stream that can carry them."""
        if request.method not in ROUTED_METHODS and request.method != "completion/complete":
            return False
        client = await self.store.client(session.sid) or {}
        capabilities = client.get("capabilities")
        return isinstance(capabilities, dict) and any(
            key in capabilities for key in ("sampling", "elicitation", "roots")
        )

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
        await self.forwarder.relay_cancel(notification.params, session)

    @contextmanager
    def client_stream(
        self, session: ClientSession, last_event_id: str | None = None
    ) -> Iterator[ClientStream]:
        """One client stream (GET /mcp or /mcp/ws) of the session's server messages: its place in
        the session's replay log (after `last_event_id` when the log still has it), the session's
        backend streams relayed into it while any of its streams is open (and a while after),
        and the open-streams gauge. The stream ends when the session does."""
        with (
            self.fanout.subscribe(session.sid, last_event_id) as stream,
            self.forwarder.streams.listening(session),
        ):
            if stream.resume is not Resume.FRESH:
                self._resumed(session, stream)
            self.metrics.open_streams.inc()
            try:
                yield stream
            finally:
                self.metrics.open_streams.dec()

    def _resumed(self, session: ClientSession, stream: ClientStream) -> None:
        self.metrics.stream_resumes.labels(stream.resume.value).inc()
        self.metrics.stream_replayed.inc(stream.backlog)
        if stream.resume is Resume.GAP:
            self.metrics.stream_replay_lost.inc(stream.skipped)
            log.warning(
                "stream resumed past its replay log: some messages are lost",
                session=session.sid,
                replayed=stream.backlog,
                lost=stream.skipped,
            )
        elif stream.resume is Resume.UNKNOWN:
            log.info("Last-Event-ID not resumable here: a fresh stream", session=session.sid)
        else:
            log.info("stream resumed", session=session.sid, replayed=stream.backlog)

    async def end_session(self, session: ClientSession) -> None:
        """DELETE: the backend sessions opened for this client end too (best effort, bounded)."""
        await self.forwarder.end_backends(session)
        await self.store.delete(session.sid)
        self._session_features.pop(session.sid, None)
        self.fanout.close_session(session.sid)
        self.metrics.sessions_deleted.inc()

    # -- virtual servers ---------------------------------------------------------------------

    def virtual_server(self, name: str | None) -> VirtualServer | None:
        """The virtual server a client selected (`X-Mcp-Virtualserver`, Kuadrant's
        `namespace/name`), None when it selected none; UnknownVirtualServer otherwise."""
        if not name:
            return None
        for virtual in self.config.virtual_servers:
            if virtual.name == name:
                return virtual
        raise UnknownVirtualServer(name)

    def _view(
        self, virtual: VirtualServer | None, features: frozenset[str] = NO_FEATURES
    ) -> Federation:
        """The federation as a client sees it: cut to its virtual server, with the capability
        variants its declared features bring (built once per federation)."""
        federation = self.federation_for(features)
        if virtual is None:
            return federation
        key = (virtual.name, features & self._relevant)
        cached = self._views.get(key)
        if cached is not None and cached[0] is federation and cached[1] == virtual:
            return cached[2]
        view = restrict(federation, virtual)
        self._views[key] = (federation, virtual, view)
        return view

    _views: dict[tuple[str, frozenset[str]], tuple[Federation, VirtualServer, Federation]]

    # -- capability variants -----------------------------------------------------------------

    def federation_for(self, features: frozenset[str]) -> Federation:
        """The federation a client declaring `features` sees (docs/broker.md)."""
        features &= self._relevant  # declared features no variant adds anything for are moot
        if not features:
            return self.federation
        federation = self._federations.get(features)
        if federation is None:
            federation = federate(self.supervisor.catalog(), features)
            self._federations[features] = federation
        return federation

    async def features_of(self, session: ClientSession) -> frozenset[str]:
        """The client features the session's client declared at initialize. Read from the
        store only while some upstream has variants: otherwise every client sees the same."""
        if not self._relevant:
            return NO_FEATURES
        known = self._session_features.get(session.sid)
        if known is not None:
            return known
        try:
            client = await self.store.client(session.sid) or {}
        except SessionStoreUnavailable:
            # Degrade to what every client sees rather than fail the request; not cached.
            log.warning(
                "client capabilities unreadable; serving the base view", session=session.sid
            )
            return NO_FEATURES
        features = client_features(client.get("capabilities"))
        if len(self._session_features) >= FEATURE_CACHE_SIZE:
            del self._session_features[next(iter(self._session_features))]
        self._session_features[session.sid] = features
        return features

    # -- the federated catalog ---------------------------------------------------------------

    def refresh(self) -> list[ListKind]:
        """Rebuild the federation from the supervisor's catalog; return the kinds that changed
        (for some client: a change in a capability variant counts for everyone, and a client
        whose list did not change merely lists it again)."""
        catalog = self.supervisor.catalog()
        self.federation = federate(catalog)
        self._federations = {}
        self._relevant = relevant_features(catalog)
        changed = []
        for kind in KINDS:
            fingerprint = hash(
                (self.federation.fingerprint(kind), variants_fingerprint(catalog, kind))
            )
            if self._fingerprints.get(kind.kind) != fingerprint:
                self._fingerprints[kind.kind] = fingerprint
                changed.append(kind)
        self.metrics.federated_tools.set(len(self.federation.items(TOOLS)))
        self.metrics.observe_upstreams(self.supervisor.status())
        return changed

    def sync(self, *, announce: bool = True) -> None:
        """Bring the federation up to the supervisor's catalog now (once per catalog version,
        whoever comes first: the catalog watcher or a re-list), and tell every open stream which
        lists changed. A list_changed a client receives therefore always describes a federation
        it can already list."""
        version = self.supervisor.version
        if version == self._synced_version:
            return
        self._synced_version = version
        changed = self.refresh()
        if changed and announce:
            log.info("federated lists changed", kinds=[k.kind for k in changed])
            self.announce(changed)

    async def relist(self, server: str) -> RelistOutcome:
        """Re-list one upstream now (it announced a change somewhere we, the router or Envoy
        heard) and return once the federation shows that listing and every stream was told of
        any change; bounded by the server's `timeoutSeconds`. Concurrent and repeated requests
        share listings (upstream/relist.py)."""
        config = self.config.server(server)
        if config is None:
            return RelistOutcome.UNKNOWN
        outcome = RelistOutcome.TIMED_OUT
        with trio.move_on_after(config.timeout_seconds):
            outcome = await self.supervisor.relist(server)
        self.sync()
        return outcome

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
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": "mcp-gateway", "version": __version__},
            "instructions": "One MCP endpoint for many servers: each server's tools carry its prefix.",
        }
        return result_response(request.id, result), version

    async def handle(
        self,
        request: Request,
        session: ClientSession,
        emit: Emit | None,
        *,
        virtual: VirtualServer | None = None,
        allowed: Callable[[str], bool] | None = None,
        can_ask: bool | Asker = True,
    ) -> bytes:
        """Answer one request of a session; `virtual` (the client's virtual server, see
        `virtual_server`) limits what it lists and reaches to that virtual server's items;
        `allowed` (inbound OAuth, broker/auth.py) cuts the lists to the names a token may use;
        `can_ask` False: the client cannot be asked anything during a call (a 2026-07-28
        exchange), so what an upstream asks is refused to it; an `Asker`: what the upstream asks
        goes to it (broker/input_required.py holds the call for the client's retry)."""
        method = request.method
        if method == "ping":
            return result_response(request.id, {})
        kind = LIST_METHODS.get(method)
        if kind is not None:
            view = self._view(virtual, await self.features_of(session))
            return self._list(request, kind, view if allowed is None else restrict_to(view, allowed))
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
                    return await self._forward(request, routed, session, emit, virtual, can_ask)
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
            level = (request.params or {}).get("level")
            if level not in LOG_LEVELS:
                return error_response(
                    request.id,
                    ErrorCode.INVALID_PARAMS,
                    f"level must be one of {', '.join(LOG_LEVELS)}",
                )
            await self.forwarder.set_log_level(session, level)
            return result_response(request.id, {})
        if method == "completion/complete":
            return await self._complete(request, session, emit, virtual, can_ask)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(request, session, virtual)
        return error_response(request.id, ErrorCode.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _list(self, request: Request, kind: ListKind, federation: Federation) -> bytes:
        cursor = (request.params or {}).get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            return error_response(request.id, ErrorCode.INVALID_PARAMS, "cursor must be a string")
        try:
            result = page_json(federation, kind, cursor, self.config.gateway.page_size)
        except BadCursor as exc:
            return error_response(request.id, ErrorCode.INVALID_PARAMS, f"Invalid cursor: {exc}")
        # The page is pre-serialized; only the envelope with this request's id is new.
        return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request.id).encode(), result)

    async def _forward(
        self,
        request: Request,
        kind: ListKind,
        session: ClientSession,
        emit: Emit | None,
        virtual: VirtualServer | None,
        can_ask: bool | Asker = True,
    ) -> bytes:
        """A routed request that reached the broker (no Envoy in front): relay it ourselves."""
        params = request.params or {}
        key = kind.id_field
        name = params.get(key)
        if not isinstance(name, str):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, f"params.{key} must be a string"
            )
        target = self._owner(kind, name, virtual, await self.features_of(session))
        if target is None:
            code = NOT_FOUND_CODE.get(kind.kind, ErrorCode.RESOURCE_NOT_FOUND)
            what = {"tools": "tool", "prompts": "prompt"}.get(kind.kind, "resource")
            return error_response(request.id, code, f"Unknown {what}: {name}")
        server, original = target
        return await self.forwarder.forward(
            request,
            session,
            emit,
            server,
            {**params, key: original},
            exposed_uri=(original, name) if kind is RESOURCES else None,
            can_ask=can_ask,
        )

    async def _complete(
        self,
        request: Request,
        session: ClientSession,
        emit: Emit | None,
        virtual: VirtualServer | None,
        can_ask: bool | Asker = True,
    ) -> bytes:
        """completion/complete goes to the owner of the prompt or resource its `ref` names."""
        params = request.params or {}
        ref = params.get("ref")
        kinds = {"ref/prompt": PROMPTS, "ref/resource": RESOURCES}
        kind = kinds.get(str(ref.get("type"))) if isinstance(ref, dict) else None
        if kind is None or not isinstance(ref, dict):
            return error_response(
                request.id,
                ErrorCode.INVALID_PARAMS,
                "params.ref must be a ref/prompt or ref/resource",
            )
        field = "name" if kind is PROMPTS else "uri"
        name = ref.get(field)
        features = await self.features_of(session)
        target = self._owner(kind, name, virtual, features) if isinstance(name, str) else None
        if target is None:
            code = ErrorCode.INVALID_PARAMS if kind is PROMPTS else ErrorCode.RESOURCE_NOT_FOUND
            return error_response(request.id, code, f"Unknown {field}: {name}")
        server, original = target
        upstream_params = {**params, "ref": {**ref, field: original}}
        return await self.forwarder.forward(
            request, session, emit, server, upstream_params, can_ask=can_ask
        )

    async def _subscription(
        self, request: Request, session: ClientSession, virtual: VirtualServer | None
    ) -> bytes:
        """resources/(un)subscribe: forwarded on the client's backend session with the owner;
        its `notifications/resources/updated` reach this client's GET streams only."""
        uri = (request.params or {}).get("uri")
        if not isinstance(uri, str):
            return error_response(
                request.id, ErrorCode.INVALID_PARAMS, "params.uri must be a string"
            )
        target = self._owner(RESOURCES, uri, virtual, await self.features_of(session))
        if target is None:
            return error_response(
                request.id, ErrorCode.RESOURCE_NOT_FOUND, f"Unknown resource: {uri}"
            )
        server, original = target
        return await self.forwarder.subscription(request, session, server, original)

    def _owner(
        self,
        kind: ListKind,
        name: str,
        virtual: VirtualServer | None = None,
        features: frozenset[str] = NO_FEATURES,
    ) -> tuple[ServerConfig, str] | None:
        """The serving upstream behind an exposed name or URI, and its own name for it; None
        also for an item outside the client's virtual server or the capability variants it
        qualifies for (it does not exist for it)."""
        if virtual is not None and name not in _virtual_names(kind, virtual):
            return None
        if kind is RESOURCES:
            # Any URI under a server's mark is its: templates expand to URIs nobody listed.
            serving = [server for server, _ in self.supervisor.catalog()]
            return resolve_uri(name, serving)
        entry = self.federation_for(features).lookup(kind, name)
        server = self.config.server(entry.server) if entry is not None else None
        if entry is None or server is None:
            return None
        return server, entry.original_name


def replay_limits(config: GatewayConfig) -> ReplayLimits:
    """What the config keeps of each session's stream for clients that reconnect."""
    sessions = config.gateway.sessions
    return ReplayLimits(
        sessions.replay_events, sessions.replay_bytes, sessions.replay_linger_seconds
    )


def _virtual_names(kind: ListKind, virtual: VirtualServer) -> list[str]:
    """What a virtual server exposes of one kind (resources: exact exposed URIs)."""
    if kind is TOOLS:
        return virtual.tools
    if kind is PROMPTS:
        return virtual.prompts
    return virtual.resources
