"""A handshake-era client's resource subscriptions to upstreams that keep no session.

On a legacy HTTP upstream a subscription is the client's backend session's, and its updates come
on that session's GET stream (`backend_streams.py`). A modern upstream (MCP 2026-07-28) has no
session, no GET stream and no resources/subscribe: it tells resource updates on a
`subscriptions/listen` request held open. So each `resources/subscribe` of a legacy client to a
modern upstream's resource becomes one listen of its own, for that URI, held in the broker's
nursery (bounded by the upstream's timeout until acknowledged), with the client's capabilities
and clientInfo in its `_meta`; its `notifications/resources/updated` go to that client's
session only, under the URI the client knows. Unsubscribe, or the end of the session, cancels
it. A listen the upstream ends is dropped (and logged): a handshake-era session has no way to be
told, as with a backend session that an upstream forgets.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from mcp_gateway import __version__
from mcp_gateway.broker.aggregate import expose_uri
from mcp_gateway.broker.fanout import Fanout
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import ErrorCode
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream import UpstreamError
from mcp_gateway.upstream.client import modern_client
from mcp_gateway.upstream.relist import LIST_CHANGED_NOTIFICATIONS

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]
RESOURCE_UPDATED = "notifications/resources/updated"
# How long a refusal to an upstream's request on a listen may take (nobody could answer it).
REFUSAL_SECONDS = 2.0


class ModernSubscriptions:
    def __init__(
        self,
        store: SessionStore,
        fanout: Fanout,
        metrics: BrokerMetrics,
        supervisor: Any,
        *,
        nursery: trio.Nursery,
    ) -> None:
        """`supervisor`: its per-upstream HTTP clients and re-list requests; `nursery`: the
        broker's, where the listens run (they outlive the subscribe that opened them)."""
        self._store = store
        self._fanout = fanout
        self._metrics = metrics
        self._supervisor = supervisor
        self._nursery = nursery
        # (gateway session, server, the upstream's URI) → the cancel scope of its listen.
        self._listens: dict[tuple[str, str, str], trio.CancelScope] = {}

    async def subscribe(self, sid: str, server: ServerConfig, uri: str) -> JsonObject | None:
        """Hold a listen for `uri` for session `sid`; the JSON-RPC error (code, message) when
        the upstream refused, did not acknowledge in time, or does not honour the URI."""
        key = (sid, server.name, uri)
        if key in self._listens:
            return None  # subscribed already: one listen is enough
        client_info = await self._store.client(sid) or {}
        try:
            with trio.fail_after(server.timeout_seconds):
                scope, honoured = await self._nursery.start(self._listen, key, server, client_info)
        except UpstreamError as exc:
            log.info("resource listen refused", server=server.name, reason=exc.message)
            if exc.rpc_code is not None:
                return {"code": exc.rpc_code, "message": exc.message}
            return {"code": ErrorCode.INTERNAL_ERROR, "message": f"upstream {server.name} is unavailable"}
        except trio.TooSlowError:
            return {"code": ErrorCode.INTERNAL_ERROR, "message": f"upstream {server.name} timed out"}
        if uri not in honoured:
            scope.cancel()
            text = f"upstream {server.name} does not offer updates of {expose_uri(server.prefix, uri)}"
            return {"code": ErrorCode.INVALID_PARAMS, "message": text}
        if key in self._listens:  # a concurrent subscribe of the same won: keep one listen
            scope.cancel()
        else:
            self._listens[key] = scope
        return None

    def unsubscribe(self, sid: str, server: ServerConfig, uri: str) -> None:
        scope = self._listens.pop((sid, server.name, uri), None)
        if scope is not None:
            scope.cancel()

    def forget(self, sid: str) -> None:
        """The session ended: every listen of it ends."""
        for key in [key for key in self._listens if key[0] == sid]:
            self._listens.pop(key).cancel()

    async def _listen(
        self,
        key: tuple[str, str, str],
        server: ServerConfig,
        client_info: JsonObject,
        *,
        task_status: trio.TaskStatus[tuple[trio.CancelScope, list[str]]],
    ) -> None:
        sid, _, uri = key
        info = client_info.get("clientInfo")
        client = modern_client(
            server,
            info if isinstance(info, dict) else {"name": "mcp-gateway", "version": __version__},
            client_info.get("capabilities") or {},
            http=self._supervisor.http_client(server.name),
        )

        async def relay(message: JsonObject) -> None:
            await self._relay(sid, server, client, message)

        with trio.CancelScope() as scope:
            started = _Started(scope, task_status)
            try:
                await client.listen_resources([uri], relay, task_status=started)
                reason = "the upstream ended it"
            except UpstreamError as exc:
                if not started.done:
                    raise  # to the subscribe waiting on it
                reason = exc.message
            finally:
                await client.aclose(end_session=False)  # closes only an HTTP client of its own
            if self._listens.get(key) is scope:
                del self._listens[key]
                log.info("resource listen ended", server=server.name, reason=reason)

    async def _relay(self, sid: str, server: ServerConfig, client: Any, message: JsonObject) -> None:
        method = message.get("method")
        if "id" in message and isinstance(method, str):
            # A listen carries notifications only: nobody could answer a request there.
            refusal = {"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": ErrorCode.METHOD_NOT_FOUND, "message": "no client can be asked here"}}
            with trio.move_on_after(REFUSAL_SECONDS):
                try:
                    await client.respond(refusal)
                except UpstreamError as exc:
                    log.info("refusal not delivered upstream", reason=exc.message)
            return
        if method in LIST_CHANGED_NOTIFICATIONS:
            self._supervisor.request_relist(server.name)  # the broker tells its clients itself
            return
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if method != RESOURCE_UPDATED or not isinstance(params, dict) or not isinstance(uri, str):
            return
        shown = {k: v for k, v in params.items() if k != "_meta"}
        shown["uri"] = expose_uri(server.prefix, uri)
        note = {"jsonrpc": "2.0", "method": RESOURCE_UPDATED, "params": shown}
        data = json.dumps(note, separators=(",", ":"), ensure_ascii=False).encode()
        self._metrics.notifications_sent.inc(self._fanout.publish(data, sid))


class _Started:
    """The listen's task status: hands the subscribe its cancel scope and the honoured URIs."""

    def __init__(
        self, scope: trio.CancelScope, status: trio.TaskStatus[tuple[trio.CancelScope, list[str]]]
    ) -> None:
        self._scope = scope
        self._status = status
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._status.started((self._scope, list(value or [])))


__all__ = ["ModernSubscriptions"]
