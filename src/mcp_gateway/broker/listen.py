"""`subscriptions/listen` for modern (2026-07-28) clients: one POST whose SSE answer is the
client's stream of change notifications (docs/broker.md, "Modern clients").

The request names what the client wants (`params.notifications`, a SubscriptionFilter): the
list_changed kinds, and resource URIs whose `notifications/resources/updated` it wants. The
stream carries, in order:

1. `notifications/subscriptions/acknowledged` with the honoured subset of that filter, once
   every upstream that takes part has accepted its share (the revision: the first message of
   the subscription, naming only what the server agreed to honour);
2. what was honoured and nothing else, each message with the listen request's id under
   `_meta["io.modelcontextprotocol/subscriptionId"]`;
3. on gateway shutdown, the listen request's result (the revision's graceful close). When an
   upstream subscription the stream depends on is lost, the stream just ends: the client
   re-listens and refetches (there is no replay on this revision).

Where the messages come from: each stream reads a log of the broker's fan-out of its own (a
private id no token can name), so it hears the gateway's aggregated list_changed exactly as a
legacy GET stream does (`BrokerCore.announce`), never an upstream's raw one. Resource URIs are
watched at their owners, on subscriptions that belong to this stream alone and end with it:

- legacy HTTP upstream: a backend session opened for the stream (never the shared one of
  `sessions/modern.py`, which holds nothing a client sets for itself), its GET stream held,
  then `resources/subscribe`; DELETE when the stream ends;
- modern HTTP upstream: its own `subscriptions/listen` for those URIs, acknowledged;
- stdio/WebSocket upstream: the link's shared subscription (`link_subscriptions.py`), left when
  the stream ends.

A URI no upstream owns (or outside the client's virtual server, variants or token), or one its
owner refuses, is left out of the honoured filter: the revision's answer to a filter asking for
what the server cannot give, not an error. A malformed filter is -32602 (400).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import trio

from mcp_gateway.broker.aggregate import expose_uri
from mcp_gateway.broker.core import BrokerCore
from mcp_gateway.config import ServerConfig, VirtualServer
from mcp_gateway.logs import bind_request, get_logger
from mcp_gateway.protocol import ErrorCode, ModernEnvelope, ProtocolError, Request, RequestId
from mcp_gateway.sessions.modern import BACKEND_PROTOCOL_VERSION, GATEWAY_CLIENT_INFO
from mcp_gateway.upstream import RESOURCES, HttpUpstreamClient, UpstreamError, open_backend_session
from mcp_gateway.upstream.catalog import client_features
from mcp_gateway.upstream.client import modern_client
from mcp_gateway.upstream.modern import ACKNOWLEDGED, LISTEN_METHOD, RESOURCE_SUBSCRIPTIONS, mode_of
from mcp_gateway.upstream.relist import LIST_CHANGED_NOTIFICATIONS

log = get_logger("mcp_gateway.broker")

# The method and its wire names are the revision's, spelled once (upstream/modern.py, which
# listens to modern upstreams the same way).
LISTEN: Final = LISTEN_METHOD
RESOURCE_UPDATED: Final = "notifications/resources/updated"
SUBSCRIPTION_ID_META: Final = "io.modelcontextprotocol/subscriptionId"
# The filter's flags, and the broker's list_changed each one asks for.
LIST_FLAGS: Final[Mapping[str, str]] = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}
# Resource URIs one stream may watch: each costs a subscription at its owner.
MAX_RESOURCE_SUBSCRIPTIONS: Final = 100
LISTEN_SID_PREFIX: Final = "listen."
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ListenFilter:
    """What a `subscriptions/listen` asks for: list_changed flags (filter keys) and URIs."""

    lists: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()


def read_filter(params: Mapping[str, Any] | None, request_id: RequestId | None) -> ListenFilter:
    """The request's SubscriptionFilter, or the -32602 that refuses a malformed one. Keys this
    gateway does not know (extensions) are allowed and simply not honoured."""

    def invalid(message: str) -> ProtocolError:
        return ProtocolError(ErrorCode.INVALID_PARAMS, message, id=request_id)

    notifications = (params or {}).get("notifications")
    if not isinstance(notifications, Mapping):
        raise invalid("subscriptions/listen needs params.notifications, an object (SubscriptionFilter)")
    lists = []
    for flag in LIST_FLAGS:
        value = notifications.get(flag)
        if value is not None and not isinstance(value, bool):
            raise invalid(f"params.notifications.{flag} must be a boolean")
        if value:
            lists.append(flag)
    uris = notifications.get(RESOURCE_SUBSCRIPTIONS)
    if uris is None:
        uris = []
    if not isinstance(uris, list) or not all(isinstance(u, str) and u for u in uris):
        raise invalid(f"params.notifications.{RESOURCE_SUBSCRIPTIONS} must be a list of URIs (strings)")
    if len(uris) > MAX_RESOURCE_SUBSCRIPTIONS:
        raise invalid(f"at most {MAX_RESOURCE_SUBSCRIPTIONS} resource subscriptions per listen")
    return ListenFilter(tuple(lists), tuple(dict.fromkeys(uris)))


@dataclass(eq=False)
class _Listen:
    """One open listen stream: what it asked for, what was honoured, and who holds it."""

    request_id: RequestId
    wanted: ListenFilter
    client_info: Mapping[str, Any]
    sid: str = field(default_factory=lambda: LISTEN_SID_PREFIX + secrets.token_hex(16))
    methods: frozenset[str] = frozenset()
    honoured_uris: tuple[str, ...] = ()
    ready: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    lost: bool = False  # an upstream subscription ended: the stream ends abruptly

    @property
    def meta(self) -> JsonObject:
        return {SUBSCRIPTION_ID_META: self.request_id}

    def acknowledgement(self) -> bytes:
        honoured: JsonObject = {flag: True for flag in self.wanted.lists}
        if self.honoured_uris:
            honoured[RESOURCE_SUBSCRIPTIONS] = list(self.honoured_uris)
        params = {"notifications": honoured, "_meta": self.meta}
        return _dumps({"jsonrpc": "2.0", "method": ACKNOWLEDGED, "params": params})

    def closing(self) -> bytes:
        result = {"_meta": self.meta, "resultType": "complete"}
        return _dumps({"jsonrpc": "2.0", "id": self.request_id, "result": result})

    def frame(self, data: bytes) -> bytes | None:
        """A message of this stream's log as the client gets it (stamped), or None when the
        client did not ask for it."""
        try:
            message = json.loads(data)
        except ValueError:
            return None
        method = message.get("method") if isinstance(message, dict) else None
        if method not in self.methods:
            return None
        params = message.get("params")
        params = dict(params) if isinstance(params, dict) else {}
        meta = params.get("_meta")
        params["_meta"] = {**(meta if isinstance(meta, dict) else {}), **self.meta}
        return _dumps({"jsonrpc": "2.0", "method": method, "params": params})


class ListenStreams:
    def __init__(self, core: BrokerCore, nursery: trio.Nursery) -> None:
        """`nursery`: the broker's; each stream's upstream subscriptions run there, in a task
        the stream cancels when it ends (and the broker's shutdown cancels with the rest)."""
        self._core = core
        self._nursery = nursery

    def open(
        self,
        request: Request,
        envelope: ModernEnvelope,
        *,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None,
        keepalive_seconds: float,
    ) -> AsyncIterator[bytes]:
        """The SSE body of one listen stream; ProtocolError (-32602) for a malformed filter,
        raised here, before anything is committed."""
        wanted = read_filter(request.params, request.id)
        listen = _Listen(request.id, wanted, _client_info(envelope.client_info))
        listen.methods = frozenset(LIST_FLAGS[flag] for flag in wanted.lists)
        targets = self._owners(wanted.uris, envelope, virtual, allowed)
        return self._events(listen, targets, keepalive_seconds)

    def _owners(
        self,
        uris: tuple[str, ...],
        envelope: ModernEnvelope,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None,
    ) -> dict[str, tuple[ServerConfig, list[tuple[str, str]]]]:
        """Per owning server: the server, and (URI as the client knows it, the upstream's own)."""
        features = client_features(envelope.client_capabilities)
        targets: dict[str, tuple[ServerConfig, list[tuple[str, str]]]] = {}
        for uri in uris:
            if allowed is not None and not allowed(uri):
                continue
            owner = self._core._owner(RESOURCES, uri, virtual, features)
            if owner is not None:
                server, original = owner
                targets.setdefault(server.name, (server, []))[1].append((uri, original))
        return targets

    async def _events(
        self,
        listen: _Listen,
        targets: dict[str, tuple[ServerConfig, list[tuple[str, str]]]],
        keepalive_seconds: float,
    ) -> AsyncIterator[bytes]:
        core = self._core
        # The log first: a list_changed announced while the upstreams subscribe is kept and
        # follows the acknowledgement.
        with core.fanout.subscribe(listen.sid) as stream:
            core.metrics.open_streams.inc()
            try:
                self._nursery.start_soon(self._hold, listen, targets)
                yield b": listening\n\n"
                await listen.ready.wait()
                if listen.scope.cancel_called:
                    return  # the broker is stopping, or an upstream failed while subscribing
                yield _event(listen.acknowledgement())
                while True:
                    # No yield inside the cancel scope (this generator may be suspended there).
                    batch: list[bytes] | None = None
                    with trio.move_on_after(keepalive_seconds):
                        try:
                            batch = (await stream.receive_batch())[1]
                        except trio.EndOfChannel:
                            if not listen.lost:
                                yield _event(listen.closing())  # the gateway is stopping
                            return
                    if batch is None:
                        yield b": keep-alive\n\n"
                        continue
                    frames = [f for f in map(listen.frame, batch) if f is not None]
                    if frames:
                        yield b"".join(map(_event, frames))
            finally:
                listen.scope.cancel()
                core.metrics.open_streams.dec()

    async def _hold(
        self, listen: _Listen, targets: dict[str, tuple[ServerConfig, list[tuple[str, str]]]]
    ) -> None:
        """The stream's upstream subscriptions, from first to last: taken concurrently (each
        bounded by its server's timeout), then held until the stream ends or one is lost."""
        core = self._core
        honoured: set[str] = set()
        try:
            with listen.scope, bind_request(session=listen.sid):
                async with trio.open_nursery() as held:
                    async with trio.open_nursery() as starting:
                        for server, wanted in targets.values():
                            starting.start_soon(self._take, held, listen, server, wanted, honoured)
                    listen.honoured_uris = tuple(u for u in listen.wanted.uris if u in honoured)
                    if listen.honoured_uris:
                        listen.methods |= {RESOURCE_UPDATED}
                    listen.ready.set()
                    await trio.sleep_forever()
        except Exception:
            # A failure of one stream's subscriptions ends that stream, never the broker.
            log.exception("listen stream failed unexpectedly")
            listen.lost = True
        finally:
            listen.ready.set()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await core.forwarder.links.forget(listen.sid)
            # Ends the client's stream if it is still open (an upstream lost, or shutdown).
            core.fanout.close_session(listen.sid)

    async def _take(
        self,
        held: trio.Nursery,
        listen: _Listen,
        server: ServerConfig,
        wanted: list[tuple[str, str]],
        honoured: set[str],
    ) -> None:
        try:
            with trio.fail_after(server.timeout_seconds):
                if server.transport != "http":
                    taken = await self._link(listen, server, wanted)
                else:
                    mode = mode_of(server)
                    watch = self._modern if mode is not None and mode.modern else self._legacy
                    taken = await held.start(watch, listen, server, wanted)
        except (UpstreamError, trio.TooSlowError) as exc:
            log.info("resource subscription not honoured", server=server.name, reason=str(exc) or "timed out")
            return
        except Exception:
            # Not honoured either; the broker's nursery, which holds every stream, must not fall.
            log.exception("resource subscription failed unexpectedly", server=server.name)
            return
        honoured.update(taken)

    async def _link(
        self, listen: _Listen, server: ServerConfig, wanted: list[tuple[str, str]]
    ) -> list[str]:
        """stdio/WebSocket: the link's one subscription per URI, shared with every client; its
        updates come to this stream's log (`LinkSubscriptions.updated`)."""
        taken = []
        for exposed, original in wanted:
            error = await self._core.forwarder.links.subscribe(listen.sid, server, original)
            if error is None:
                taken.append(exposed)
        return taken

    async def _legacy(
        self,
        listen: _Listen,
        server: ServerConfig,
        wanted: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[list[str]],
    ) -> None:
        """A backend session of this stream's own: its GET stream held first (an update sent
        while none is open is lost), then each URI subscribed on it."""
        backend = await open_backend_session(server, BACKEND_PROTOCOL_VERSION, listen.client_info)
        # An HTTP client of its own: the held stream must not take a pooled connection.
        client = HttpUpstreamClient(server, session_id=backend, protocol_version=BACKEND_PROTOCOL_VERSION)
        try:
            async with trio.open_nursery() as inner:
                await inner.start(self._stream, listen, server, client)
                taken = []
                for exposed, original in wanted:
                    try:
                        await client.request("resources/subscribe", {"uri": original})
                    except UpstreamError as exc:
                        log.info("resources/subscribe refused", server=server.name, reason=exc.message)
                        continue
                    taken.append(exposed)
                task_status.started(taken)
                if not taken:
                    inner.cancel_scope.cancel()
        finally:
            await client.aclose()  # DELETE, shielded and bounded

    async def _stream(
        self,
        listen: _Listen,
        server: ServerConfig,
        client: HttpUpstreamClient,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        status = _Started(task_status)
        try:
            await client.listen(partial(self._relay, listen, server, client), task_status=status)
            reason = "the upstream ended it"
        except UpstreamError as exc:
            if not status.done:
                raise
            reason = exc.message
        self._lose(listen, server, reason)

    async def _modern(
        self,
        listen: _Listen,
        server: ServerConfig,
        wanted: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[list[str]],
    ) -> None:
        """A modern upstream's own `subscriptions/listen` for these URIs, acknowledged."""
        exposed_of = dict((original, exposed) for exposed, original in wanted)
        client = modern_client(server, listen.client_info, {})
        scope = trio.CancelScope()

        def acknowledged(honoured: list[str]) -> None:
            taken = [exposed_of[uri] for uri in honoured if uri in exposed_of]
            task_status.started(taken)
            if not taken:
                scope.cancel()  # nothing of ours is honoured there: nothing to hold

        status = _Started(None, acknowledged)
        relay = partial(self._relay, listen, server, client)
        try:
            with scope:
                await client.listen_resources(list(exposed_of), relay, task_status=status)
                self._lose(listen, server, "the upstream ended it")
        except UpstreamError as exc:
            if not status.done:
                raise
            self._lose(listen, server, exc.message)
        finally:
            await client.aclose()

    async def _relay(
        self, listen: _Listen, server: ServerConfig, client: HttpUpstreamClient, message: JsonObject
    ) -> None:
        """What an upstream sends on a subscription of this stream's."""
        method = message.get("method")
        if "id" in message and isinstance(method, str):
            # A listen stream carries notifications only: nobody could answer a request.
            refusal = {"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": ErrorCode.METHOD_NOT_FOUND, "message": "no client can be asked here"}}
            with trio.move_on_after(2):
                try:
                    await client.respond(refusal)
                except UpstreamError as exc:
                    log.info("refusal not delivered upstream", reason=exc.message)
            return
        if method in LIST_CHANGED_NOTIFICATIONS:
            # Never relayed raw: a re-list, and the broker's own list_changed if it changed.
            self._core.supervisor.request_relist(server.name)
            return
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if method != RESOURCE_UPDATED or not isinstance(params, dict) or not isinstance(uri, str):
            return
        shown = {k: v for k, v in params.items() if k != "_meta"}  # the upstream's ids stay there
        shown["uri"] = expose_uri(server.prefix, uri)
        data = _dumps({"jsonrpc": "2.0", "method": RESOURCE_UPDATED, "params": shown})
        self._core.metrics.notifications_sent.inc(self._core.fanout.publish(data, listen.sid))

    def _lose(self, listen: _Listen, server: ServerConfig, reason: str) -> None:
        """A subscription the stream depends on ended: end the stream (the client re-listens)."""
        log.info("listen stream lost an upstream subscription", server=server.name, reason=reason)
        listen.lost = True
        listen.scope.cancel()


class _Started:
    """A task status that remembers it was used, and hands the value on."""

    def __init__(
        self, status: trio.TaskStatus[None] | None, then: Callable[[Any], None] | None = None
    ) -> None:
        self._status = status
        self._then = then
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        if self._status is not None:
            self._status.started()
        if self._then is not None:
            self._then(value)


def _client_info(info: Any) -> Mapping[str, Any]:
    """The clientInfo a stream's backend sessions introduce themselves with: the client's own
    when it is a valid Implementation, else the gateway's."""
    if isinstance(info, dict) and isinstance(info.get("name"), str) and isinstance(info.get("version"), str):
        return {"name": info["name"], "version": info["version"]}
    return GATEWAY_CLIENT_INFO


def _dumps(message: JsonObject) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _event(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


__all__ = ["LISTEN", "ListenFilter", "ListenStreams", "read_filter"]
