"""Requests the broker relays to upstreams itself: the fallback path when a call reaches the
broker (no Envoy in front, or a stdio/WebSocket upstream Envoy cannot reach), resource
subscriptions, log levels, and the client's cancellations and DELETE passed on to its backend
sessions. What upstreams send outside calls comes through `BackendStreams`.

Backend sessions are the same ones the router uses: one per (gateway session, upstream), opened
lazily with `open_backend_session` and kept in the shared session store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from mcp_gateway import __version__
from mcp_gateway.broker.backend_streams import BackendStreams
from mcp_gateway.broker.client_requests import Answer, ClientRequests
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.fanout import Fanout
from mcp_gateway.broker.link_subscriptions import LinkSubscriptions
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.broker.modern_subscriptions import ModernSubscriptions
from mcp_gateway.broker.stateless_upstreams import StatelessUpstreams
from mcp_gateway.config import GatewayConfig, ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import ErrorCode, Request, error_response, result_response
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.store import LOG_LEVEL, SessionStore
from mcp_gateway.upstream import (
    HttpUpstreamClient,
    Supervisor,
    UpstreamError,
    open_backend_session,
)
from mcp_gateway.upstream.modern import mode_of
from mcp_gateway.upstream.relist import LIST_CHANGED_NOTIFICATIONS, RelistOutcome

log = get_logger("mcp_gateway.broker")

Emit = Callable[[bytes], Awaitable[None]]
JsonObject = dict[str, Any]
# Takes an upstream's mid-call request (and how to answer it) in place of the client's stream.
Asker = Callable[[JsonObject, Answer], Awaitable[None]]
CANCEL_RELAY_SECONDS = 2.0
# A list_changed in a forwarded call's answer waits for the re-list at most this share of the
# time the call has left.
RELIST_SHARE_OF_CALL = 0.5


class Forwarder:
    def __init__(
        self,
        config: GatewayConfig,
        supervisor: Supervisor,
        store: SessionStore,
        fanout: Fanout,
        metrics: BrokerMetrics,
        *,
        relist: Callable[[str], Awaitable[RelistOutcome]] | None = None,
        nursery: trio.Nursery,
        openings: BackendOpenings | None = None,
    ) -> None:
        """`nursery`: the broker's, for background relays; `openings`: shared with the router
        of this process (see `sessions/openings.py`)."""
        self.config = config  # replaced on reload, with the broker's
        self.supervisor = supervisor
        self.store = store
        self.fanout = fanout
        self.metrics = metrics
        self._request_ids = itertools.count(1)
        # `BrokerCore.relist`: re-list an upstream and bring the federation up to date.
        self._relist = relist
        # Server→client requests relayed to clients (during forwarded calls and from backend
        # sessions' own streams), by gateway id.
        self.client_requests = ClientRequests()
        self.streams = BackendStreams(
            store,
            fanout,
            metrics,
            self.client_requests,
            lambda name: self.config.server(name),
            supervisor.request_relist,
            nursery=nursery,
            openings=openings,
        )
        # Subscriptions to stdio/WebSocket upstreams, whose one link all clients share.
        self.links = LinkSubscriptions(
            fanout, metrics, lambda name: self.config.server(name), supervisor.stream_client
        )
        supervisor.link_events = self.links
        self.stateless = StatelessUpstreams(store, supervisor.http_client)
        # A legacy client's subscriptions to modern upstreams: a subscriptions/listen each.
        self.modern_subscriptions = ModernSubscriptions(store, fanout, metrics, supervisor, nursery=nursery)

    async def forward(
        self,
        request: Request,
        session: ClientSession,
        emit: Emit | None,
        server: ServerConfig,
        upstream_params: JsonObject,
        *,
        exposed_uri: tuple[str, str] | None = None,
        can_ask: bool | Asker = True,
    ) -> bytes:
        """Relay `request` to `server` with the params in the upstream's own names.

        `can_ask` False: the client has no way to be asked during the call (a 2026-07-28
        exchange; its stream carries notifications only), so the upstream's requests are refused;
        an `Asker`: they go to it (broker/input_required.py, a modern client's held call).

        `exposed_uri` = (upstream's URI, the URI the client used): a read's contents come back
        under the client's URI.
        """
        message: JsonObject = {
            "jsonrpc": "2.0",
            "id": request.id,
            "method": request.method,
            "params": upstream_params,
        }

        with self.client_requests.for_call() as issued:

            async def relay(respond: Answer, incoming: JsonObject) -> None:
                """What the upstream sends before its answer, to the client's stream: its
                notifications as they are, its requests under a gateway id (answered by the
                client's response, see `answer_client`)."""
                if "id" in incoming and "method" in incoming:
                    if callable(can_ask):
                        await can_ask(incoming, respond)  # held for a modern client's retry
                        return
                    if emit is None or not can_ask:
                        # A JSON answer has no stream to ask the client on: refuse, so the
                        # upstream does not wait.
                        await respond(_not_relayed(incoming["id"]))
                        return
                    shown = self.client_requests.relay(session.sid, incoming, respond, issued)
                    await emit(json.dumps(shown, separators=(",", ":")).encode())
                    return
                if incoming.get("method") in LIST_CHANGED_NOTIFICATIONS:
                    # The upstream told only this call's session: re-list it first, so the
                    # client (and anyone listing after this answer) finds the new list.
                    await self._relisted(server)
                if emit is not None and "method" in incoming:
                    await emit(json.dumps(incoming, separators=(",", ":")).encode())

            mode = mode_of(server) if server.transport == "http" else None
            if mode is not None and mode.stateless:
                # No backend session; a legacy client has the gateway drive an upstream's
                # InputRequiredResult rounds for it (broker/stateless_upstreams.py).
                answer = await self.stateless.forward(session, server, mode, message, relay, drive=can_ask is True)
                answer["id"] = request.id
                if exposed_uri is not None:
                    _expose_contents(answer.get("result"), *exposed_uri)
                return json.dumps(answer, separators=(",", ":")).encode()
            return await self._forward_with(request, session, server, message, relay, exposed_uri)

    async def _relisted(self, server: ServerConfig) -> None:
        """Re-list `server` (bounded: by its timeout, and within what is left of the call's own
        deadline, so a slow listing never costs the call its answer)."""
        if self._relist is None:
            return
        left = trio.current_effective_deadline() - trio.current_time()
        outcome = RelistOutcome.TIMED_OUT
        with trio.move_on_after(max(0.0, left * RELIST_SHARE_OF_CALL)):
            outcome = await self._relist(server.name)  # itself bounded by the server's timeout
        if outcome is not RelistOutcome.RELISTED:
            log.info("re-list before relaying list_changed", server=server.name, outcome=outcome)

    async def _forward_with(
        self,
        request: Request,
        session: ClientSession,
        server: ServerConfig,
        message: JsonObject,
        relay: Callable[[Answer, JsonObject], Awaitable[None]],
        exposed_uri: tuple[str, str] | None,
    ) -> bytes:
        if server.transport != "http":
            answer_bytes = await self._forward_on_stream(request, server.name, message, relay)
            if exposed_uri is not None:
                return _expose_uri_in(answer_bytes, *exposed_uri)
            return answer_bytes

        http = self.supervisor.http_client(server.name)
        for attempt in (1, 2):
            try:
                backend = await self._backend_session(session, server.name, http)
            except UpstreamError as exc:
                return self._upstream_failed(request, server.name, exc)
            client = HttpUpstreamClient(
                server, http=http, session_id=backend, protocol_version=session.protocol_version
            )
            try:
                with trio.fail_after(server.timeout_seconds):
                    answer = await client.request_raw(message, partial(relay, client.respond))
            except trio.Cancelled:
                # The client went away or cancelled: closing our POST is no cancellation in the
                # handshake-era revisions, so say it to the upstream (shielded, bounded).
                with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_RELAY_SECONDS):
                    reason = {"requestId": request.id, "reason": "the client cancelled or left"}
                    with contextlib.suppress(UpstreamError):
                        await client.notify("notifications/cancelled", reason)
                raise
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
            if exposed_uri is not None:
                _expose_contents(answer.get("result"), *exposed_uri)
            return json.dumps(answer, separators=(",", ":")).encode()
        raise AssertionError("unreachable")

    async def subscription(
        self, request: Request, session: ClientSession, server: ServerConfig, original: str
    ) -> bytes:
        """resources/(un)subscribe on the client's backend session with the owner; on success
        its `notifications/resources/updated` reach this client's GET streams only."""
        if server.transport != "http":
            return await self._link_subscription(request, session, server, original)
        mode = mode_of(server)
        if mode is not None and mode.modern:
            return await self._modern_subscription(request, session, server, original)
        http = self.supervisor.http_client(server.name)
        try:
            backend = await self._backend_session(session, server.name, http)
            client = HttpUpstreamClient(
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
        # The updates come on the backend session's own stream, which `BackendStreams` holds
        # while the client listens.
        answer["id"] = request.id
        return json.dumps(answer, separators=(",", ":")).encode()

    async def _modern_subscription(
        self, request: Request, session: ClientSession, server: ServerConfig, original: str
    ) -> bytes:
        """No backend session, no resources/subscribe: a subscriptions/listen of this
        session's own for the URI (broker/modern_subscriptions.py)."""
        if request.method == "resources/subscribe":
            error = await self.modern_subscriptions.subscribe(session.sid, server, original)
            if error is not None:
                return error_response(request.id, error["code"], error["message"])
        else:
            self.modern_subscriptions.unsubscribe(session.sid, server, original)
        return result_response(request.id, {})

    async def _link_subscription(
        self, request: Request, session: ClientSession, server: ServerConfig, original: str
    ) -> bytes:
        if request.method == "resources/subscribe":
            error = await self.links.subscribe(session.sid, server, original)
            if error is not None:
                return error_response(request.id, error["code"], error["message"])
        else:
            await self.links.unsubscribe(session.sid, server, original)
        return result_response(request.id, {})

    async def answer_client(self, session: ClientSession, response: JsonObject) -> bool:
        """A client's response to a server→client request relayed during a forwarded call: to
        the upstream that asked, under its own id (bounded). False if we did not issue that id
        to this session (then it is not for the broker's path; it is dropped)."""
        routed = self.client_requests.take(session.sid, response)
        if routed is None:
            return False
        answer, message = routed
        with trio.move_on_after(CANCEL_RELAY_SECONDS):
            try:
                await answer(message)
            except UpstreamError as exc:
                log.info("client's answer not delivered upstream", reason=exc.message)
        return True

    async def relay_cancel(self, params: Any, session: ClientSession) -> None:
        """Tell every backend session of this client (bounded): a call Envoy routed went to one
        of them under the client's request id; the others ignore an id they do not know."""
        clients = await self._backend_clients(session)
        with trio.move_on_after(CANCEL_RELAY_SECONDS):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_tell, client, params)

    async def _backend_clients(self, session: ClientSession) -> list[HttpUpstreamClient]:
        """A client on each HTTP backend session this gateway session has (router's or ours)."""
        clients = []
        for name, backend_id in (await self.store.backends(session.sid)).items():
            server = self.config.server(name)
            if server is not None and server.transport == "http":
                clients.append(
                    HttpUpstreamClient(
                        server,
                        http=self.supervisor.http_client(name),
                        session_id=backend_id,
                        protocol_version=session.protocol_version,
                    )
                )
        return clients

    async def release(self, sid: str) -> None:
        """Let go of what the broker holds for a session that ended (DELETE or expiry): its
        backend streams now, and its stdio/WebSocket subscriptions (the last subscriber out
        unsubscribes the link; bounded, the session is gone either way)."""
        self.streams.stop(sid)
        self.modern_subscriptions.forget(sid)
        with trio.move_on_after(CANCEL_RELAY_SECONDS):
            await self.links.forget(sid)

    async def end_backends(self, session: ClientSession) -> None:
        """DELETE every backend session opened for this client (best effort, bounded)."""
        await self.release(session.sid)
        backends = await self.store.backends(session.sid)
        async with trio.open_nursery() as nursery:
            for name, backend_id in backends.items():
                server = self.config.server(name)
                if server is not None and server.transport == "http":
                    client = HttpUpstreamClient(
                        server, http=self.supervisor.http_client(name), session_id=backend_id
                    )
                    nursery.start_soon(client.aclose)  # DELETE, shielded, at most 2 s

    async def _forward_on_stream(
        self,
        request: Request,
        server_name: str,
        message: JsonObject,
        relay: Callable[[Answer, JsonObject], Awaitable[None]],
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
                result = await client.request(
                    message["method"], message["params"], partial(relay, client.respond)
                )
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
        # The upstream sees the client's capabilities (and name), as on the router's backend
        # sessions: it may then ask for sampling, elicitation or roots, which the broker relays.
        client_info = await self.store.client(session.sid) or {}
        backend = await open_backend_session(
            server,
            session.protocol_version,
            client_info.get("clientInfo") or {"name": "mcp-gateway", "version": __version__},
            http=http,
            capabilities=client_info.get("capabilities"),
            log_level=client_info.get(LOG_LEVEL),
        )
        if not await self.store.set_backend(session.sid, server_name, backend):
            # The gateway session expired (or was deleted) while this backend session opened:
            # no reaper will ever see it, so end it here.
            await HttpUpstreamClient(server, http=http, session_id=backend).aclose()
            raise UpstreamError(f"{server_name}: the gateway session ended")
        await self.streams.openings.announce(session.sid, server_name, backend)
        return backend

    async def set_log_level(self, session: ClientSession, level: str) -> None:
        """logging/setLevel applies to the client's session: every backend session of it now
        (bounded, best effort) and each one opened later, by the router or the broker (the
        level is kept with the session in the store)."""
        await self.store.set_log_level(session.sid, level)
        clients = await self._backend_clients(session)
        with trio.move_on_after(CANCEL_RELAY_SECONDS):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(self._tell_level, client, level)

    async def _tell_level(self, client: HttpUpstreamClient, level: str) -> None:
        # Our own request on a session the client's calls also use: an id of a shape no
        # client id collides with in practice.
        request_id = f"mcp-gateway-{next(self._request_ids)}"
        try:
            with trio.move_on_after(CANCEL_RELAY_SECONDS):
                await client.request("logging/setLevel", {"level": level}, request_id=request_id)
        except UpstreamError as exc:
            log.info(
                "log level not applied upstream", server=client.server.name, reason=exc.message
            )
        finally:
            await client.aclose(end_session=False)  # closes only an HTTP client of its own

    def _upstream_failed(self, request: Request, server: str, exc: UpstreamError) -> bytes:
        log.warning(
            "forwarded request failed", server=server, method=request.method, reason=exc.message
        )
        if exc.rpc_code is not None:
            return error_response(request.id, exc.rpc_code, exc.message, exc.rpc_data)
        return error_response(
            request.id, ErrorCode.INTERNAL_ERROR, f"upstream {server} is unavailable"
        )


async def _tell(client: HttpUpstreamClient, params: Any) -> None:
    try:
        await client.notify("notifications/cancelled", params)
    except UpstreamError:
        pass  # best effort: the upstream is gone or forgot the session; nothing runs there then
    finally:
        await client.aclose(end_session=False)  # closes only an HTTP client of its own


def _not_relayed(request_id: Any) -> JsonObject:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": ErrorCode.METHOD_NOT_FOUND,
            "message": "the client's answer is JSON, so the gateway cannot ask it during this call",
        },
    }


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
