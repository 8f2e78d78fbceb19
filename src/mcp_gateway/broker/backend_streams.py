"""What upstreams send a client outside any call, relayed while the client listens.

An upstream sends some messages on a backend session's own GET stream rather than on a call's:
log messages (filtered by the client's `logging/setLevel`), `notifications/resources/updated`
for a resource the client subscribed to, and requests to the client (`roots/list` when its
roots may have changed, `sampling/createMessage`, `elicitation/create`, `ping`). The router opens
backend sessions and Envoy carries their calls, but nobody reads those GET streams, so without
this module all of that is lost.

While a client has a stream open at the broker (GET /mcp or /mcp/ws), the broker holds one GET
stream on each HTTP backend session of that gateway session and relays:

- the notifications above, to the client's streams only (a resource's URI under the name the
  client knows it by); list_changed is not relayed: it makes the supervisor re-list that
  upstream, and the broker announces its aggregate if that changed it;
- requests, under a gateway id (`ClientRequests`); the client's answer comes back to the broker
  and goes to the backend session that asked, under the upstream's own id.

Which backend sessions: those the store maps when the client starts listening, those opened in
this process from then on (announced through `sessions/openings.py` and attached before the call
that opened them goes out), and, for a store shared by replicas, those another replica opened,
found by re-reading the store every `RESCAN_SECONDS` (a memory store has no other replica to
hear from: there the announcements are the whole story).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import httpx
import trio

from mcp_gateway.broker.aggregate import expose_uri
from mcp_gateway.broker.client_requests import ClientRequests
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.fanout import Fanout
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import bind_request, get_logger
from mcp_gateway.protocol import ErrorCode
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.store import SessionStore, SessionStoreUnavailable
from mcp_gateway.upstream import HttpUpstreamClient, UpstreamError
from mcp_gateway.upstream.relist import LIST_CHANGED_NOTIFICATIONS

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]

# Held streams get an HTTP client of their own, without a connection limit: on HTTP/1.1 each one
# occupies a connection for as long as its client listens, and in the supervisor's pooled client
# (100 connections) a hundred listening clients would starve the discovery pings and the calls the
# broker forwards to that upstream.
STREAM_KEEPALIVE_CONNECTIONS: Final = 32

RELAYED_NOTIFICATIONS: Final = frozenset(
    {"notifications/message", "notifications/resources/updated", "notifications/progress"}
)
RESCAN_SECONDS: Final = 2.0
# A backend stream that ended is opened again after this (doubling up to the cap) while the
# client still listens; a 404 (the session is gone) or 405 (the upstream has no GET stream) ends it.
RETRY_FIRST_SECONDS: Final = 0.5
RETRY_CAP_SECONDS: Final = 10.0
_FINAL_STATUSES: Final = frozenset({400, 401, 403, 404, 405})


@dataclass(eq=False)
class _Listening:
    session: ClientSession
    streams: int = 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closes: int = 0  # how often its streams dropped to none: a lingering stop checks it


class BackendStreams:
    def __init__(
        self,
        store: SessionStore,
        fanout: Fanout,
        metrics: BrokerMetrics,
        client_requests: ClientRequests,
        server_of: Callable[[str], ServerConfig | None],
        request_relist: Callable[[str], None],
        *,
        nursery: trio.Nursery,
        openings: BackendOpenings | None = None,
    ) -> None:
        """`nursery`: the broker's, where the relays of listening sessions run; `openings`:
        shared with the router of this process (a private one otherwise)."""
        self._store = store
        self._fanout = fanout
        self._metrics = metrics
        self._client_requests = client_requests
        self._server_of = server_of
        self._request_relist = request_relist  # `Supervisor.request_relist`
        self._http: httpx.AsyncClient | None = None
        # Only a shared store (Redis) changes behind this process's back: re-read it now and then.
        self._rescan_seconds = RESCAN_SECONDS if store.shared else math.inf
        self._listening: dict[str, _Listening] = {}
        self.held_streams = 0  # backend GET streams open or opening now
        metrics.backend_streams.set_function(lambda: self.held_streams)
        self.openings = openings if openings is not None else BackendOpenings()
        self.nursery = nursery

    @contextmanager
    def listening(self, session: ClientSession) -> Iterator[None]:
        """Hold the session's backend streams while this client stream is open (reentrant: the
        first of a session's streams starts the relays, the last one stops them)."""
        entry = self._listening.get(session.sid)
        if entry is None:
            entry = self._listening[session.sid] = _Listening(session)
            self.nursery.start_soon(self._watch, entry)
        entry.streams += 1
        try:
            yield
        finally:
            entry.streams -= 1
            # Only this entry: a deleted session's entry is gone already (`stop`).
            if entry.streams == 0 and self._listening.get(session.sid) is entry:
                entry.closes += 1
                limits = self._fanout.limits
                if limits.enabled:
                    # What upstreams send while the client reconnects goes into its replay log.
                    self.nursery.start_soon(self._stop_unless_back, entry, limits.linger_seconds)
                else:
                    self.stop(session.sid)

    async def _stop_unless_back(self, entry: _Listening, linger_seconds: float) -> None:
        closes = entry.closes
        await trio.sleep(linger_seconds)
        sid = entry.session.sid
        if entry.streams == 0 and entry.closes == closes and self._listening.get(sid) is entry:
            self.stop(sid)

    def http_client(self) -> httpx.AsyncClient:
        """The client held streams use (no connection limit, see STREAM_KEEPALIVE_CONNECTIONS);
        a held call's own backend stream uses it too (broker/held_sessions.py)."""
        return self._client()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                http2=True,
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=STREAM_KEEPALIVE_CONNECTIONS
                ),
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the streams' HTTP client (the broker is stopping; its relays are cancelled)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def status(self) -> dict[str, Any]:
        """For /status: what is held, and how new backend sessions reach this broker."""
        bus = self.openings.bus
        return {
            "listeningSessions": len(self._listening),
            "heldStreams": self.held_streams,
            "openingsBus": "off" if bus is None else bus.state(),
        }

    def stop(self, sid: str) -> None:
        """Drop the session's backend streams now (it is being deleted)."""
        entry = self._listening.pop(sid, None)
        if entry is not None:
            entry.scope.cancel()

    async def _watch(self, entry: _Listening) -> None:
        session = entry.session
        held: dict[str, str] = {}  # server → the backend session id we hold (or held) a stream on
        with (
            entry.scope,
            bind_request(session=session.sid),
            self.openings.watch(session.sid) as announced,
        ):
            async with trio.open_nursery() as nursery:

                def hold(name: str, backend_id: str, attached: trio.Event | None = None) -> None:
                    server = self._server_of(name)
                    if held.get(name) == backend_id or server is None or server.transport != "http":
                        if attached is not None:
                            attached.set()
                        return
                    held[name] = backend_id  # a replaced backend's stream ends with its 404
                    nursery.start_soon(self._hold, session, server, backend_id, attached)

                async def rescan() -> None:
                    try:
                        for name, backend_id in (await self._store.backends(session.sid)).items():
                            hold(name, backend_id)
                    except SessionStoreUnavailable:
                        log.info("backend streams: session store unavailable, retrying")

                await rescan()
                deadline = trio.current_time() + self._rescan_seconds
                while True:
                    with trio.move_on_at(deadline):
                        opening = await announced.receive()
                        hold(opening.server, opening.backend_id, opening.attached)
                        continue
                    await rescan()
                    deadline = trio.current_time() + self._rescan_seconds

    async def _hold(
        self,
        session: ClientSession,
        server: ServerConfig,
        backend_id: str,
        attached: trio.Event | None,
    ) -> None:
        """One backend session's GET stream, relayed, re-opened if it ends, until cancelled."""
        delay = RETRY_FIRST_SECONDS
        opened = _Opened(attached)
        with bind_request(server=server.name):
            while True:
                client = HttpUpstreamClient(
                    server,
                    http=self._client(),
                    session_id=backend_id,
                    protocol_version=session.protocol_version,
                )
                try:
                    with self._client_requests.for_call() as issued:
                        relay = partial(self._relay, session, server, client, issued)
                        self.held_streams += 1
                        try:
                            await client.listen(relay, task_status=opened)
                        finally:
                            self.held_streams -= 1
                    delay = RETRY_FIRST_SECONDS  # it was open, the upstream ended it
                except UpstreamError as exc:
                    if exc.status in _FINAL_STATUSES:
                        log.info("backend stream not available", status=exc.status)
                        return
                    log.info("backend stream ended", reason=exc.message)
                finally:
                    opened.started()  # a first attempt that failed releases the waiting call too
                    await client.aclose(end_session=False)  # closes only an HTTP client of its own
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_SECONDS)

    async def _relay(
        self,
        session: ClientSession,
        server: ServerConfig,
        client: HttpUpstreamClient,
        issued: list[str],
        message: JsonObject,
    ) -> None:
        method = message.get("method")
        if not isinstance(method, str):
            return  # a response on a GET stream answers nothing of ours
        if "id" in message:
            shown = self._client_requests.relay(session.sid, message, client.respond, issued)
            if not self._publish(session, shown, only_if_listening=True):
                # Nobody could take it: say so now rather than let the upstream wait.
                self._client_requests.take(session.sid, {"id": shown["id"]})
                await _refuse(client, message["id"])
            return
        if method in LIST_CHANGED_NOTIFICATIONS:
            # This session may be the only one the upstream told (an SDK server tells the session
            # that made the change). Not relayed, and not waited for: the supervisor re-lists
            # (a burst shares listings), and if the list changed every client stream hears the
            # broker's own list_changed once the federation shows it.
            self._request_relist(server.name)
            return
        if method not in RELAYED_NOTIFICATIONS:
            return
        if method == "notifications/resources/updated":
            params = dict(message.get("params") or {})
            if isinstance(params.get("uri"), str):
                params["uri"] = expose_uri(server.prefix, params["uri"])
            message = {**message, "params": params}
        self._publish(session, message)

    def _publish(
        self, session: ClientSession, message: JsonObject, *, only_if_listening: bool = False
    ) -> int:
        data = json.dumps(message, separators=(",", ":")).encode()
        delivered = self._fanout.publish(data, session.sid, only_if_listening=only_if_listening)
        self._metrics.notifications_sent.inc(delivered)
        return delivered


class _Opened:
    """`listen`'s task status: the upstream accepted the stream, so the call that opened the
    backend session (waiting in `BackendOpenings.announce`) may go out."""

    def __init__(self, attached: trio.Event | None) -> None:
        self._attached = attached

    def started(self, value: None = None) -> None:
        if self._attached is not None:
            self._attached.set()
            self._attached = None


async def _refuse(client: HttpUpstreamClient, request_id: Any) -> None:
    refusal = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": ErrorCode.INTERNAL_ERROR,
            "message": "the client's stream is full or closed; the gateway could not ask it",
        },
    }
    try:
        with trio.move_on_after(2):
            await client.respond(refusal)
    except UpstreamError as exc:
        log.info("refusal not delivered upstream", reason=exc.message)


__all__ = ["RELAYED_NOTIFICATIONS", "BackendStreams"]
