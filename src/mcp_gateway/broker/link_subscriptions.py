"""Resource subscriptions to stdio and WebSocket upstreams, which many clients share one link to.

On HTTP every client has a backend session of its own, so a subscription is that session's and
its updates come on that session's stream (`backend_streams.py`). A stdio/WebSocket upstream has
one session, the gateway's link, for all clients: the upstream cannot tell them apart. So the
gateway keeps who subscribed to what:

- the link subscribes to a URI once, when the first client subscribes to it, and unsubscribes
  when the last one unsubscribes or its session ends;
- each `notifications/resources/updated` from the link goes to the clients subscribed to that
  URI, and only to them (the URI shown under the name they know it by);
- after the link reconnects (the upstream restarted and forgot), the gateway subscribes again
  to every URI someone still wants.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

from mcp_gateway.broker.aggregate import expose_uri
from mcp_gateway.broker.fanout import Fanout
from mcp_gateway.broker.metrics import BrokerMetrics
from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.upstream import UpstreamError

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]


class LinkSubscriptions:
    def __init__(
        self,
        fanout: Fanout,
        metrics: BrokerMetrics,
        server_of: Callable[[str], ServerConfig | None],
        link_of: Callable[[str], Any],
    ) -> None:
        self._fanout = fanout
        self._metrics = metrics
        self._server_of = server_of
        self._link_of = link_of
        # (server, the upstream's URI) → the gateway sessions subscribed to it.
        self._subscribers: dict[tuple[str, str], set[str]] = {}
        # One subscribe/unsubscribe exchange with a link at a time per URI, so a client's
        # unsubscribe can never overtake another's subscribe on the wire.
        self._locks: dict[tuple[str, str], trio.Lock] = {}

    async def subscribe(self, sid: str, server: ServerConfig, uri: str) -> JsonObject | None:
        """Subscribe `sid` to the upstream's `uri`; the upstream's error, if it refused."""
        key = (server.name, uri)
        async with self._lock(key):
            subscribers = self._subscribers.get(key)
            if subscribers is None:
                error = await self._tell(server, "resources/subscribe", uri)
                if error is not None:
                    return error
                subscribers = self._subscribers[key] = set()
            subscribers.add(sid)
        return None

    async def unsubscribe(self, sid: str, server: ServerConfig, uri: str) -> None:
        key = (server.name, uri)
        async with self._lock(key):
            await self._leave(sid, key)

    async def forget(self, sid: str) -> None:
        """The session ended: it leaves every subscription at once; the URIs nobody wants any
        more are then unsubscribed on their links (a cancelled caller leaves no stale member)."""
        emptied = []
        for key, subscribers in self._subscribers.items():
            if sid in subscribers:
                subscribers.discard(sid)
                if not subscribers:
                    emptied.append(key)
        for key in emptied:
            async with self._lock(key):
                await self._drop_if_unwanted(key)

    def updated(self, server_name: str, params: Any) -> None:
        """A `notifications/resources/updated` from a link: to the URI's subscribers only."""
        server = self._server_of(server_name)
        uri = params.get("uri") if isinstance(params, dict) else None
        if server is None or not isinstance(uri, str):
            return
        subscribers = self._subscribers.get((server_name, uri), ())
        if not subscribers:
            return
        shown = {**params, "uri": expose_uri(server.prefix, uri)}
        note = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": shown}
        data = json.dumps(note, separators=(",", ":")).encode()
        for sid in list(subscribers):
            self._metrics.notifications_sent.inc(self._fanout.publish(data, sid))

    async def reconnected(self, server_name: str) -> None:
        """The link to `server_name` is new: subscribe again to what clients still want."""
        server = self._server_of(server_name)
        if server is None:
            return
        for key in [key for key in self._subscribers if key[0] == server_name]:
            async with self._lock(key):
                if self._subscribers.get(key):
                    error = await self._tell(server, "resources/subscribe", key[1])
                    if error is not None:
                        log.warning("resubscription refused", server=server_name)

    async def _leave(self, sid: str, key: tuple[str, str]) -> None:
        subscribers = self._subscribers.get(key)
        if subscribers is not None:
            subscribers.discard(sid)
            await self._drop_if_unwanted(key)

    async def _drop_if_unwanted(self, key: tuple[str, str]) -> None:
        # Called with the key's lock held. An empty set still counts as subscribed upstream
        # until this runs, so a client subscribing meanwhile needs no second subscribe.
        if self._subscribers.get(key):
            return
        if self._subscribers.pop(key, None) is None:
            return
        server = self._server_of(key[0])
        if server is not None:
            await self._tell(server, "resources/unsubscribe", key[1])

    def _lock(self, key: tuple[str, str]) -> trio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = trio.Lock()
        return lock

    async def _tell(self, server: ServerConfig, method: str, uri: str) -> JsonObject | None:
        """Send the (un)subscription over the link (bounded); its JSON-RPC error, or None."""
        link = self._link_of(server.name)
        if link is None:
            return {"code": -32603, "message": f"upstream {server.name} is unavailable"}
        try:
            with trio.fail_after(server.timeout_seconds):
                await link.request(method, {"uri": uri})
        except UpstreamError as exc:
            log.info(
                "link subscription failed", server=server.name, method=method, reason=exc.message
            )
            if exc.rpc_code is not None:
                return {"code": exc.rpc_code, "message": exc.message}
            return {"code": -32603, "message": f"upstream {server.name} is unavailable"}
        except trio.TooSlowError:
            return {"code": -32603, "message": f"upstream {server.name} timed out"}
        return None


__all__ = ["LinkSubscriptions"]
