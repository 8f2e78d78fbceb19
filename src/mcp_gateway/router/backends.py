"""Backend sessions behind gateway sessions: lazy creation with single-flight, and the 404 replay.

Runs on Trio. A backend session per (gateway session, upstream) is created on the first routed
call: ten concurrent first calls share one `initialize` (a "flight" keyed by the pair). A flight
runs in this object's own nursery, not in the caller's task, so a caller that gives up (Envoy
closed its stream) does not cancel the initialisation the others are waiting for.

A new backend session starts at the client's log level (if it set one), and is announced to
the broker's listeners (`sessions/openings.py`) before the call that opened it goes out, so the
upstream's first message outside the call already has a GET stream to go to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx
import structlog
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.router.decision import SESSION_HEADER, NeedsBackend
from mcp_gateway.router.relay import can_be_asked
from mcp_gateway.sessions.modern import ensure_shared_session
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.store import LOG_LEVEL, SessionStore, SessionStoreUnavailable
from mcp_gateway.upstream.body import send_post
from mcp_gateway.upstream.catalog import NO_FEATURES, declared_capabilities
from mcp_gateway.upstream.client import (
    HttpUpstreamClient,
    discover_mode,
    open_backend_session,
    tls_context,
)
from mcp_gateway.upstream.credentials import credential_rejected, upstream_authorization
from mcp_gateway.upstream.errors import NoSessionIssued, UpstreamError
from mcp_gateway.upstream.modern import MODERN_VERSION, UpstreamMode, mode_of, request_meta

_log = structlog.get_logger(__name__)

GATEWAY_CLIENT_INFO: Final[Mapping[str, str]] = {"name": "mcp-gateway-router", "version": "0.1.0"}
ASKABLE_CACHE_SIZE: Final = 65_536


class OpenSession(Protocol):
    """`upstream.client.open_backend_session`'s shape (the network seam tests replace)."""

    async def __call__(
        self,
        server: ServerConfig,
        protocol_version: str,
        client_info: Mapping[str, Any],
        *,
        http: httpx.AsyncClient | None = None,
        capabilities: Mapping[str, Any] | None = None,
        log_level: str | None = None,
    ) -> str: ...


class SessionGone(Exception):
    """The gateway session was deleted or expired: the client must re-initialise (404)."""


class BackendUnavailable(Exception):
    """The upstream could not give us a session (down, refused, timed out)."""


class NoSessionNeeded(Exception):
    """The upstream keeps no sessions (MCP 2026-07-28, or a stateless server): calls go to it
    without one. Raised once, when the router learns it on a first call (`mode`)."""

    def __init__(self, mode: UpstreamMode) -> None:
        super().__init__(mode.protocol_version)
        self.mode = mode


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    backend_id: str | None = None
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class ReplayedResponse:
    status: int
    content_type: str
    body: bytes


class BackendSessions:
    def __init__(
        self,
        store: SessionStore,
        nursery: trio.Nursery,
        servers: Callable[[], Mapping[str, ServerConfig]],
        *,
        open_session: OpenSession = open_backend_session,
        http: httpx.AsyncClient | None = None,
        openings: BackendOpenings | None = None,
    ) -> None:
        self._store = store
        self._openings = openings or BackendOpenings()
        self._nursery = nursery
        self._servers = servers
        self._open_session = open_session
        self._http = http
        self._flights: dict[tuple[str, str], _Flight] = {}
        self.initializations = 0  # backend initialize calls made (observability and tests)
        # Gateway session → whether its client can be asked things (sampling, elicitation,
        # roots). Fixed for a session's life, so cached; bounded (oldest entries dropped).
        self._askable: dict[str, bool] = {}

    def askable_nowait(self, sid: str) -> bool | None:
        """Cached answer to `askable` (or the store's, without I/O); None: it needs a store read."""
        known = self._askable.get(sid)
        if known is None:
            client = self._store.cached_client(sid)
            known = self._remember(sid, client) if client is not None else None
        return known

    async def askable(self, sid: str) -> bool:
        """Whether the session's client declared sampling, elicitation or roots."""
        known = self.askable_nowait(sid)
        if known is not None:
            return known
        client = await self._store.client(sid)
        return self._remember(sid, client) if client is not None else False

    def _remember(self, sid: str, client: Mapping[str, Any]) -> bool:
        if len(self._askable) >= ASKABLE_CACHE_SIZE:
            del self._askable[next(iter(self._askable))]
        answer = self._askable[sid] = can_be_asked(client)
        return answer

    def mode_of(self, need: NeedsBackend) -> UpstreamMode | None:
        """How the call's upstream is spoken to, as discovery learnt it (upstream/modern.py);
        None: not learnt (yet), so the call opens a backend session as usual."""
        server = self._servers().get(need.upstream.server)
        return mode_of(server) if server is not None else None

    async def modern_meta(self, need: NeedsBackend) -> dict[str, Any]:
        """The `_meta` envelope a call to a modern upstream carries for its client: the
        capabilities and clientInfo that client declared at initialize (docs/router.md)."""
        sid = need.claims.session_id
        client = self._store.cached_client(sid)
        if client is None:
            client = await self._store.client(sid)
        if client is None:
            raise SessionGone(sid)
        return request_meta(
            MODERN_VERSION, client.get("capabilities") or {}, client.get("clientInfo"), client.get(LOG_LEVEL)
        )

    async def ensure_modern_session(self, ttl: float) -> None:
        """The gateway-held session modern clients declaring no feature share (created when
        missing, as the broker does: sessions/modern.py); its backend sessions open lazily."""
        await ensure_shared_session(self._store, NO_FEATURES, declared_capabilities(NO_FEATURES), ttl)

    def known_backend(self, need: NeedsBackend) -> str | None:
        """The mapping, when the store knows it without I/O; else None → backend_for."""
        return self._store.cached_backend(need.claims.session_id, need.upstream.server)

    async def lookup(self, need: NeedsBackend) -> str | None:
        """The stored mapping, if any (no initialise)."""
        return await self._store.get_backend(need.claims.session_id, need.upstream.server)

    async def backend_for(self, need: NeedsBackend) -> str:
        """The backend session id for this call's (gateway session, upstream), created if new."""
        sid, server = need.claims.session_id, need.upstream.server
        existing = await self._store.get_backend(sid, server)
        if existing is not None:
            return existing
        key = (sid, server)
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            self._nursery.start_soon(self._fly, key, need, flight)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.backend_id is not None
        return flight.backend_id

    async def _fly(self, key: tuple[str, str], need: NeedsBackend, flight: _Flight) -> None:
        try:
            flight.backend_id = await self._initialize(need)
        except (SessionGone, BackendUnavailable, SessionStoreUnavailable, NoSessionNeeded) as error:
            flight.error = error
        except Exception as error:  # fail closed: the caller answers the client
            _log.exception("backend session initialisation failed", server=need.upstream.server)
            flight.error = BackendUnavailable(str(error))
        finally:
            if flight.backend_id is None and flight.error is None:  # cancelled: shutting down
                flight.error = BackendUnavailable("the router is shutting down")
            del self._flights[key]
            flight.done.set()

    async def _initialize(self, need: NeedsBackend) -> str:
        sid, name = need.claims.session_id, need.upstream.server
        client = await self._store.client(sid)
        if client is None:
            raise SessionGone(sid)
        self._remember(sid, client)
        server = self._servers().get(name)
        if server is None:
            raise BackendUnavailable(f"server {name!r} is no longer configured")
        self.initializations += 1
        # The backend session speaks for the client: its capabilities (sampling, elicitation,
        # roots) decide what the upstream may ask during a call, and its clientInfo is its own.
        client_info = client.get("clientInfo") or GATEWAY_CLIENT_INFO
        try:
            backend_id = await self._open_session(
                server,
                need.claims.protocol_version,
                client_info,
                # The router's pooled client: a client (and a TCP connection) per backend session
                # was ~16 % of the gateway's CPU while thousands of sessions opened.
                http=self._client(),
                capabilities=client.get("capabilities") or {},
                log_level=client.get(LOG_LEVEL),
            )
        except UpstreamError as error:
            if isinstance(error, NoSessionIssued) or error.status is not None or error.rpc_code is not None:
                await self._learn_mode(server)  # it answered: maybe in a revision without sessions
            _log.warning("backend initialize failed", server=name, error=error.message)
            raise BackendUnavailable(error.message) from error
        # Written only into a live session: a client that deleted its session meanwhile gets 404.
        if not await self._store.set_backend(sid, name, backend_id):
            # Nobody will reap a backend session the store never recorded: end it here.
            await HttpUpstreamClient(server, http=self._http, session_id=backend_id).aclose()
            raise SessionGone(sid)
        _log.info("backend session created", server=name)
        await self._openings.announce(sid, name, backend_id)
        return backend_id

    async def _learn_mode(self, server: ServerConfig) -> None:
        """The upstream gave no session: if it keeps none (a modern or stateless upstream the
        supervisor has not told us of: the router runs on its own), say so, once."""
        try:
            mode = await discover_mode(server, GATEWAY_CLIENT_INFO, http=self._client())
        except UpstreamError:
            return
        if mode.stateless:
            _log.info("upstream keeps no sessions", server=server.name, protocol_version=mode.protocol_version)
            raise NoSessionNeeded(mode)

    async def forget(self, need: NeedsBackend, stale_backend_id: str) -> None:
        # Compare-and-delete: a concurrent call may already have replaced the stale id.
        await self._store.delete_backend(
            need.claims.session_id, need.upstream.server, stale_backend_id
        )

    async def replay(self, need: NeedsBackend, stale_backend_id: str) -> ReplayedResponse:
        """The upstream forgot our backend session (it restarted): re-initialise, send the call again.

        The replayed answer is read whole (an SSE stream included) and handed to Envoy as one
        immediate response: the client gets its result, never the 404. Only one replay: a second
        404 becomes `BackendUnavailable`.
        """
        await self.forget(need, stale_backend_id)
        backend_id = await self.backend_for(need)
        server = self._servers().get(need.upstream.server)
        if server is None:
            raise BackendUnavailable(f"server {need.upstream.server!r} is no longer configured")
        try:
            with trio.fail_after(server.timeout_seconds):
                authorization = await upstream_authorization(server)
                headers = _upstream_headers(authorization, backend_id, need.claims.protocol_version)
                response = await send_post(self._client(), server.url, need.body, headers)
        except UpstreamError as error:  # its access token could not be had
            raise BackendUnavailable(error.message) from error
        except (httpx.HTTPError, trio.TooSlowError) as error:
            raise BackendUnavailable(f"replay to {server.name!r} failed: {error!r}") from error
        if response.status_code == 401:
            credential_rejected(server, authorization)
        if response.status_code == 404:
            await self.forget(need, backend_id)
            raise BackendUnavailable(f"{server.name!r} refused a fresh backend session")
        _log.info("call replayed on a new backend session", server=server.name)
        return ReplayedResponse(
            response.status_code,
            response.headers.get("content-type", "application/json"),
            response.content,
        )

    async def cancel_abandoned(self, need: NeedsBackend, backend_id: str) -> None:
        """Tell the upstream that the client of a routed call left before its answer ended.

        Envoy only closes its connection to the upstream, and a Streamable HTTP server must not
        take that as a cancellation. Best effort, bounded: a cancellation of a request that has
        just finished is ignored by the upstream.
        """
        server = self._servers().get(need.upstream.server)
        if server is None:
            return
        cancelled = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": need.request_id, "reason": "the client left"},
        }
        body = json.dumps(cancelled, separators=(",", ":")).encode()
        with trio.move_on_after(min(server.timeout_seconds, CANCEL_SECONDS)):
            try:
                authorization = await upstream_authorization(server)
                headers = _upstream_headers(authorization, backend_id, need.claims.protocol_version)
                await send_post(self._client(), server.url, body, headers)
            except UpstreamError as error:
                _log.warning("could not cancel an abandoned call", server=server.name, error=error.message)
                return
            except httpx.HTTPError as error:
                _log.warning("could not cancel an abandoned call", server=server.name, error=repr(error))
                return
        _log.info("abandoned call cancelled upstream", server=server.name)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # No read timeout of its own: every use is bounded by its server's timeout in a Trio
            # scope (httpx's default 5 s cut a slow upstream's initialize or replayed call short).
            self._http = httpx.AsyncClient(
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(None, connect=5.0),
                verify=tls_context(),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


CANCEL_SECONDS: Final = 2.0


def _upstream_headers(authorization: str | None, backend_id: str, protocol_version: str) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        SESSION_HEADER: backend_id,
        "mcp-protocol-version": protocol_version,
    }
    if authorization:
        headers["authorization"] = authorization
    return headers
