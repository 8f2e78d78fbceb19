"""The supervisor: one task per upstream, each in its own cancel scope, all in one nursery.

Each upstream task loops: connect, initialize, validate, list everything it offers, then hold
its GET stream (re-listing on list_changed) and ping it; on any failure its items leave the
catalog, its status says why, and it retries after a capped, jittered backoff. Nothing one
upstream does can block another: they share no lock and no request, and readers (the broker's
tools/list) only ever read the last published catalog.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import httpx
import trio

from mcp_gateway.config import GatewayConfig, ServerConfig, UpstreamRetrySettings, diff_configs
from mcp_gateway.logs import get_logger
from mcp_gateway.upstream.backoff import Backoff, worth_logging
from mcp_gateway.upstream.catalog import (
    NO_CACHE_HINT,
    TOOLS,
    CacheHint,
    ListKind,
    Rejected,
    ServerCatalog,
    accept_items,
    listing_cache_hint,
    offered_kinds,
    validate_initialize,
)
from mcp_gateway.upstream.client import JsonObject, new_http_client
from mcp_gateway.upstream.clients import GATEWAY_CLIENT_INFO as GATEWAY_CLIENT_INFO
from mcp_gateway.upstream.clients import ClientFactory, default_client_factory
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.modern import UpstreamMode, record_mode
from mcp_gateway.upstream.relist import RelistOutcome, RelistQueue
from mcp_gateway.upstream.rpc import UpstreamClient

# Re-exported: the status types lived here before upstream/status.py.
from mcp_gateway.upstream.status import UpstreamState as UpstreamState
from mcp_gateway.upstream.status import UpstreamStatus as UpstreamStatus
from mcp_gateway.upstream.status import VariantsState as VariantsState
from mcp_gateway.upstream.tool_params import record_tool_params
from mcp_gateway.upstream.variants import CapabilityVariants

log = get_logger("mcp_gateway.upstream")



@dataclass(frozen=True, slots=True)
class Timing:
    """How often and how patiently the supervisor talks to upstreams (tests shrink these)."""

    ping_interval: float = 10.0
    poll_interval: float = 30.0  # re-list period for upstreams without a GET stream
    stream_reopen_delay: float = 0.5
    # Retry delays of a failed upstream; None: the config's `gateway.upstream_retry`.
    backoff_base: float | None = None
    backoff_cap: float | None = None


# The periodic re-list waits between (1 - this) and 1 times `gateway.relist_interval_seconds`.
BACKSTOP_JITTER = 0.25


class LinkEvents(Protocol):
    """What a stdio/WebSocket link says about clients' subscriptions: it is one session shared
    by every client, so the broker keeps who subscribed (`broker/link_subscriptions.py`)."""

    def updated(self, server: str, params: Any) -> None:
        """A `notifications/resources/updated` arrived on the link."""

    async def reconnected(self, server: str) -> None:
        """The link is new (the upstream restarted): its subscriptions are gone upstream."""


@dataclass
class _Upstream(CapabilityVariants):
    """One supervised upstream: its task, its cancel scope, its published state."""

    server: ServerConfig
    on_change: Callable[[], None]
    timing: Timing
    client_factory: ClientFactory
    state: UpstreamState = UpstreamState.CONNECTING
    reason: str | None = None
    catalog: ServerCatalog = field(default_factory=ServerCatalog)
    # What the base listing said about caching it, per kind (a 2026-07-28 upstream's ttlMs and
    # cacheScope; nothing from one that opens with initialize).
    cache_hints: dict[str, CacheHint] = field(default_factory=dict)
    last_refresh: float | None = None
    protocol_version: str | None = None
    stateless: bool = False  # an HTTP upstream that keeps no session for us (learnt at connect)
    server_info: Mapping[str, Any] | None = None
    failures: int = 0
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    attempted: trio.Event = field(default_factory=trio.Event)  # first connect tried (ok or not)
    http: httpx.AsyncClient | None = None
    client: UpstreamClient | None = None  # the live discovery client (message-stream upstreams forward through it)
    variants_enabled: bool = True  # gateway.capability_variants
    link_events: LinkEvents | None = None
    variants_state: VariantsState = VariantsState.PENDING
    variants_reason: str | None = None
    # The listing of each held variant session, by the client features it declared.
    variant_items: dict[frozenset[str], dict[str, tuple[JsonObject, ...]]] = field(
        default_factory=dict
    )
    relist_interval: float = 0.0  # gateway.relist_interval_seconds; 0: no periodic re-list
    retry: UpstreamRetrySettings = field(default_factory=UpstreamRetrySettings)
    relists: int = 0  # listings done on request, for /status
    rng: random.Random = field(default_factory=random.Random)
    # The re-list queue of each held discovery session: the base one, each variant's.
    base_queue: RelistQueue | None = None
    variant_queues: set[RelistQueue] = field(default_factory=set)
    # Set (and replaced) when the base session listed or the interval changed: the periodic
    # re-list counts from then.
    backstop_reset: trio.Event = field(default_factory=trio.Event)
    _logged_reason: str | None = None  # of the last failure logged

    def __post_init__(self) -> None:
        if not self.variants_enabled:
            self.variants_state = VariantsState.OFF
        elif self.server.transport != "http":
            self.variants_state = VariantsState.SHARED_LINK

    def status(self) -> UpstreamStatus:
        return UpstreamStatus(
            name=self.server.name,
            url=self.server.url,
            prefix=self.server.prefix,
            state=self.state,
            reason=self.reason,
            counts={kind: len(items) for kind, items in self.catalog.items.items()},
            last_refresh=self.last_refresh,
            protocol_version=self.protocol_version,
            stateless=self.stateless,
            server_info=self.server_info,
            consecutive_failures=self.failures,
            rejected=self.catalog.rejected,
            variants_state=self.variants_state.value,
            variants_reason=self.variants_reason,
            variants=self.catalog.variants,
            base_items=self.catalog.items,
            relists=self.relists,
            relist_pending=any(queue.busy for queue in self._queues()),
        )

    @property
    def serving(self) -> bool:
        return self.state in (UpstreamState.READY, UpstreamState.DEGRADED)

    def _backoff(self, backoff: Backoff | None = None) -> Backoff:
        """The retry delays now (a reload may have changed them), keeping the attempt count."""
        backoff = backoff or Backoff()
        backoff.base = self.timing.backoff_base or self.retry.initial_seconds
        backoff.cap = self.timing.backoff_cap or self.retry.max_seconds
        backoff.jitter = self.retry.jitter
        return backoff

    async def run(self) -> None:
        backoff = self._backoff()
        try:
            with self.cancel_scope:
                if self.server.transport == "http":
                    self.http = new_http_client(self.server)
                while True:
                    if self.state is not UpstreamState.FAILED:
                        # A retry after a failure stays `failed` (with its reason) until an
                        # attempt succeeds: /status and the state gauge do not flap between
                        # failed and connecting at every retry of a dead upstream.
                        self._publish(UpstreamState.CONNECTING, self.reason, keep_items=False)
                    try:
                        await self._session(backoff)
                        reason = "session ended"
                    except Exception as exc:
                        # Isolation: whatever goes wrong in one upstream's session (a group from
                        # its tasks, a bug in a client) fails that upstream only, never the rest.
                        reason = self._reason(exc)
                    self.failures += 1
                    self._publish(UpstreamState.FAILED, reason, keep_items=False)
                    delay = self._backoff(backoff).next_delay()
                    self._log_failure(reason, delay)
                    self.attempted.set()
                    await trio.sleep(delay)
        finally:
            if self.http is not None:
                with trio.CancelScope(shield=True):
                    await self.http.aclose()
            self.finished.set()

    def _log_failure(self, reason: str, delay: float) -> None:
        # The change of state (or of reason) is news; the same failure again is logged at a
        # falling rate (backoff.worth_logging), so a dead upstream does not flood the log.
        news = self.failures == 1 or reason != self._logged_reason
        report = log.warning if news or worth_logging(self.failures) else log.debug
        report(
            "upstream failed" if news else "upstream still failing",
            server=self.server.name,
            reason=reason,
            failures=self.failures,
            retry_in=round(delay, 1),
        )
        self._logged_reason = reason

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_failure(exc) or _first_exception(exc)
            if found is not None:
                return self._reason(found)
        if isinstance(exc, UpstreamError):
            return exc.message
        if isinstance(exc, trio.TooSlowError):
            return f"no answer within {self.server.timeout_seconds:g}s"
        log.error("upstream session crashed", server=self.server.name, exc_info=exc)
        return f"internal error: {type(exc).__name__}"

    async def stop(self) -> None:
        self.cancel_scope.cancel()
        await self.finished.wait()

    def _publish(self, state: UpstreamState, reason: str | None, *, keep_items: bool) -> None:
        was_serving = self.serving
        self.state, self.reason = state, reason
        if not keep_items and self._wants_variants:
            # Variant sessions end with the base one; the next session probes again.
            self.variants_state, self.variants_reason = VariantsState.PENDING, None
            self.variant_items = {}
        if not keep_items and (self.catalog.items or self.catalog.variants):
            self.catalog = ServerCatalog()
        if was_serving or self.serving:
            self.on_change()

    @property
    def _wants_variants(self) -> bool:
        return self.variants_enabled and self.server.transport == "http"

    async def _session(self, backoff: Backoff) -> None:
        client = self.client_factory(self.server, self.http)
        self.client = client
        base_listed = trio.Event()
        try:
            async with client.opened(), trio.open_nursery() as nursery:
                if self._wants_variants:
                    # Probed side by side with the base handshake, so readiness (which waits
                    # for the first variant decision) costs no extra round trips.
                    nursery.start_soon(self._maintain_variants, base_listed)
                result = await self._initialize(client)
                self.protocol_version = client.protocol_version
                if self.server.transport == "http":
                    self._learnt_mode(client)
                info = result.get("serverInfo")
                self.server_info = info if isinstance(info, dict) else None
                kinds = offered_kinds(result)
                await self._refresh(client, kinds)
                base_listed.set()
                nursery.start_soon(self._backstop)
                if not self._wants_variants:
                    self.attempted.set()  # else once its variants are decided
                log.info("upstream ready", server=self.server.name, tools=self.catalog.count(TOOLS))
                if self.link_events is not None and self.server.transport != "http":
                    nursery.start_soon(self.link_events.reconnected, self.server.name)
                await self._hold(client, kinds, self._refresh, backoff, BASE_ANSWERS, base=True)
        except BaseExceptionGroup as group:
            # The first of these tasks to fail ends the session; report that failure.
            failure = _first_failure(group)
            if failure is None:
                raise
            raise failure from None

    def _learnt_mode(self, client: UpstreamClient) -> None:
        """Tell the router (upstream/modern.py) whether calls to this upstream need a backend
        session and which revision it speaks: learnt here, at every connect, so an upstream
        that changed era on a restart is spoken to the new way from its next call on."""
        self.stateless = client.session_id is None
        record_mode(self.server, UpstreamMode(self.server.url, client.protocol_version or "", self.stateless))

    async def _initialize(self, client: UpstreamClient) -> JsonObject:
        with trio.fail_after(self.server.timeout_seconds):
            result: JsonObject = await client.initialize()
        problems = validate_initialize(result)
        if problems:
            raise UpstreamError("; ".join(problems))
        return result

    async def _hold(
        self,
        client: UpstreamClient,
        kinds: tuple[ListKind, ...],
        refresh: Callable[[UpstreamClient, tuple[ListKind, ...]], Awaitable[None]],
        backoff: Backoff | None,
        answers: Mapping[str, JsonObject],
        *,
        base: bool,
    ) -> None:
        """Keep one discovery session: its GET stream (list_changed → `refresh`; requests of
        the upstream answered from `answers`), its re-list queue (what `relist` asks, from
        any session's list_changed), and pings."""
        # Registered before the first checkpoint: the session became serving with its listing
        # just now, so there is no moment a re-list request finds it serving without a queue.
        queue = RelistQueue(partial(self._relisted, base=base))
        if base:
            self.base_queue = queue
        else:
            self.variant_queues.add(queue)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, client, kinds, queue, answers)
                nursery.start_soon(queue.run, partial(refresh, client, kinds))
                nursery.start_soon(self._ping, client, backoff)
        finally:
            queue.close()  # whoever waits on a listing this session will not do returns now
            if self.base_queue is queue:
                self.base_queue = None
            self.variant_queues.discard(queue)

    async def _list(
        self, client: UpstreamClient, kinds: tuple[ListKind, ...]
    ) -> tuple[dict[str, tuple[JsonObject, ...]], list[Rejected], dict[str, CacheHint]]:
        """Each kind's accepted items, the rejected ones, and what each listing said about
        caching it."""
        items: dict[str, tuple[JsonObject, ...]] = {}
        rejected: list[Rejected] = []
        hints: dict[str, CacheHint] = {}
        with trio.fail_after(self.server.timeout_seconds):
            for kind in kinds:
                pages: list[JsonObject] = []
                listed = await client.list_all(kind.method, kind.result_key, pages.append)
                items[kind.kind], bad = accept_items(kind, listed, self.server.prefix)
                rejected.extend(bad)
                hints[kind.kind] = listing_cache_hint(pages)
        return items, rejected, hints

    async def _refresh(self, client: UpstreamClient, kinds: tuple[ListKind, ...]) -> None:
        items, rejected, hints = await self._list(client, kinds)
        changed = items != self.catalog.items
        self.catalog = ServerCatalog(items, tuple(rejected), self.catalog.variants)
        self.cache_hints = hints
        if changed:
            record_tool_params(self.server.name, self.catalog)
        self.last_refresh = time.time()
        self.failures = 0
        if rejected:
            state, reason = UpstreamState.DEGRADED, f"{len(rejected)} item(s) rejected"
        elif self.state is UpstreamState.DEGRADED and self.reason and "GET stream" in self.reason:
            state, reason = UpstreamState.DEGRADED, self.reason
        else:
            state, reason = UpstreamState.READY, None
        became_serving = not self.serving
        self.state, self.reason = state, reason
        if changed or became_serving:
            self.on_change()

    async def _listen(
        self,
        client: UpstreamClient,
        kinds: tuple[ListKind, ...],
        relist: RelistQueue,
        answers: Mapping[str, JsonObject] | None = None,
    ) -> None:
        watched = {k.changed_notification for k in kinds}

        async def on_message(message: JsonObject) -> None:
            method = message.get("method")
            if method in watched:
                relist.request()
            elif method == "notifications/resources/updated" and self.link_events is not None:
                if self.server.transport != "http":  # HTTP: on each client's backend session
                    self.link_events.updated(self.server.name, message.get("params"))
            elif "id" in message and isinstance(method, str):
                await _answer_server_request(client, message, answers or BASE_ANSWERS)

        while True:
            try:
                await client.listen(on_message)
            except UpstreamError as exc:
                if exc.status not in (405, 406):
                    raise
                await self._poll_instead(client, kinds, relist)
            # The stream ended cleanly. Either the upstream is going away (then this ping fails
            # and the session ends now, not at the next ping tick) or it closed an idle stream:
            # reopen, and re-list since a list_changed may have been missed meanwhile.
            with trio.fail_after(self.server.timeout_seconds):
                await client.ping()
            await trio.sleep(self.timing.stream_reopen_delay)
            relist.request()

    async def _poll_instead(
        self, client: UpstreamClient, kinds: tuple[ListKind, ...], relist: RelistQueue
    ) -> None:
        self.state = UpstreamState.DEGRADED
        self.reason = f"no GET stream; re-listing every {self.timing.poll_interval:g}s"
        while True:
            await trio.sleep(self.timing.poll_interval)
            relist.request()

    # -- re-listing on request -----------------------------------------------------------------
    #
    # An upstream announces a change on the session that caused it, so the broker and the
    # router ask here when any backend session hears a list_changed (upstream/relist.py). Every
    # held discovery session is listed again (a change may concern a capability variant only);
    # the answer is the base session's.

    def _queues(self) -> list[RelistQueue]:
        base = [] if self.base_queue is None else [self.base_queue]
        return [*base, *self.variant_queues]

    def request_relists(self) -> None:
        for queue in self._queues():
            queue.request()

    async def relist(self) -> RelistOutcome:
        base = self.base_queue
        if base is None:
            return RelistOutcome.NOT_SERVING  # the next session lists everything anyway
        variants = [(queue, queue.request()) for queue in self.variant_queues]
        listed = await base.wait(base.request())
        for queue, ticket in variants:
            await queue.wait(ticket)  # a variant that fails never fails the base: no verdict
        return RelistOutcome.RELISTED if listed else RelistOutcome.NOT_SERVING

    def _relisted(self, *, base: bool) -> None:
        self.relists += 1
        if base:
            self._reset_backstop()

    def set_relist_interval(self, seconds: float) -> None:
        self.relist_interval = seconds
        self._reset_backstop()

    def _reset_backstop(self) -> None:
        self.backstop_reset.set()
        self.backstop_reset = trio.Event()

    async def _backstop(self) -> None:
        """Re-list `relist_interval` after the base session last listed, for upstreams that
        never announce a change (or announce it where nobody of ours hears). Any listing
        restarts the wait, one in flight or queued is never doubled, and each wait is drawn
        from [75 %, 100 %] of the interval, so upstreams that connected together spread out
        and none waits longer than configured."""
        while True:
            reset = self.backstop_reset
            interval = self.relist_interval
            if interval <= 0:
                await reset.wait()  # off, until a reload sets an interval
                continue
            with trio.move_on_after(interval * (1 - BACKSTOP_JITTER * self.rng.random())):
                await reset.wait()
                continue
            if not any(queue.busy for queue in self._queues()):
                self.request_relists()

    async def _ping(self, client: UpstreamClient, backoff: Backoff | None) -> None:
        while True:
            await trio.sleep(self.timing.ping_interval)
            with trio.fail_after(self.server.timeout_seconds):
                await client.ping()
            # Alive for a whole ping interval: a later failure starts backoff from the bottom.
            if backoff is not None:
                backoff.reset()

    # -- capability variants -----------------------------------------------------------------
    #


def _first_exception(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The first plain exception in a group (a bug's own type, for the status reason)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_exception(exc)
            if found is not None:
                return found
        elif isinstance(exc, Exception):
            return exc
    return None


def _first_failure(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_failure(exc)
            if found is not None:
                return found
        elif isinstance(exc, UpstreamError | trio.TooSlowError):
            return exc
    return None


# What a discovery session answers when an upstream asks its "client" something; anything
# else gets -32601. The base session (and a stdio/WebSocket link) answers only pings: a link is
# shared by real clients, and an upstream that caches an answer per session (server-everything
# caches roots) must ask again, during a call, where the broker relays it to the caller.
BASE_ANSWERS: Mapping[str, JsonObject] = {"ping": {}}
async def _answer_server_request(
    client: UpstreamClient, message: JsonObject, answers: Mapping[str, JsonObject]
) -> None:
    """Answer a server→client request on a discovery session at once; it never waits on us."""
    answer = answers.get(str(message.get("method")))
    if answer is not None:
        reply: JsonObject = {"jsonrpc": "2.0", "id": message["id"], "result": dict(answer)}
    else:
        reply = {
            "jsonrpc": "2.0",
            "id": message["id"],
            "error": {"code": -32601, "message": "the gateway's discovery session has no client"},
        }
    await client.respond(reply)


class Supervisor:
    """Supervises every upstream of a config; `apply` a new config to start/stop/restart the diff."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        timing: Timing | None = None,
        client_factory: ClientFactory = default_client_factory,
    ) -> None:
        self.config = config
        self.timing = timing or Timing()
        self._client_factory = client_factory
        # Told of subscription events on stdio/WebSocket links; set before `run`.
        self.link_events: LinkEvents | None = None
        self._upstreams: dict[str, _Upstream] = {}
        self._nursery: trio.Nursery | None = None
        self._subscribers: list[trio.MemorySendChannel[int]] = []
        self.version = 0  # bumped on every catalog change

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for server in self.config.servers:
                self._start(server)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def apply(self, new_config: GatewayConfig) -> None:
        """Restart only the upstreams whose config changed; the rest keep their sessions."""
        diff = diff_configs(self.config, new_config)
        changed = diff.changed
        if new_config.gateway.capability_variants != self.config.gateway.capability_variants:
            # Variants are decided per upstream session: the HTTP upstreams start over.
            http = [s.name for s in new_config.servers if s.transport == "http"]
            changed = tuple(dict.fromkeys((*changed, *(n for n in http if n in self._upstreams))))
        interval = new_config.gateway.relist_interval_seconds
        if interval != self.config.gateway.relist_interval_seconds:
            for running in self._upstreams.values():
                running.set_relist_interval(interval)  # no restart: the next wait uses it
        for running in self._upstreams.values():
            running.retry = new_config.gateway.upstream_retry  # no restart: the next retry uses it
        self.config = new_config
        async with trio.open_nursery() as stopping:
            for name in (*diff.removed, *changed):
                upstream = self._upstreams.pop(name, None)
                if upstream is not None:
                    stopping.start_soon(upstream.stop)
        for name in (*diff.added, *changed):
            server = new_config.server(name)
            if server is not None:
                self._start(server)
        if diff.removed or changed or diff.added:
            self._changed()

    def _start(self, server: ServerConfig) -> None:
        upstream = _Upstream(
            server,
            self._changed,
            self.timing,
            self._client_factory,
            variants_enabled=self.config.gateway.capability_variants,
            link_events=self.link_events,
            relist_interval=self.config.gateway.relist_interval_seconds,
            retry=self.config.gateway.upstream_retry,
        )
        self._upstreams[server.name] = upstream
        if not server.enabled:
            upstream.state = UpstreamState.DISABLED
            upstream.reason = "disabled in config"
            upstream.attempted.set()
            upstream.finished.set()
            return
        if self._nursery is None:
            raise RuntimeError("Supervisor.run() must be running")
        self._nursery.start_soon(upstream.run, name=f"upstream:{server.name}")

    def _changed(self) -> None:
        self.version += 1
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(self.version)
            except trio.WouldBlock:
                pass  # an undelivered change is already queued; the reader re-reads everything
            except trio.BrokenResourceError:
                self._subscribers.remove(channel)

    # -- readers -----------------------------------------------------------------------------

    def changes(self) -> trio.MemoryReceiveChannel[int]:
        """A new subscription to catalog changes (the value is the new catalog version)."""
        send, receive = trio.open_memory_channel[int](1)
        self._subscribers.append(send)
        return receive

    def status(self) -> list[UpstreamStatus]:
        return [u.status() for u in self._upstreams.values()]

    def status_of(self, name: str) -> UpstreamStatus | None:
        upstream = self._upstreams.get(name)
        return upstream.status() if upstream is not None else None

    def catalog(self) -> list[tuple[ServerConfig, ServerCatalog]]:
        """Each serving upstream's config and items, in config order."""
        return [(u.server, u.catalog) for u in self._upstreams.values() if u.serving]

    def cache_hint(self, name: str, kind: str) -> CacheHint:
        """What upstream `name`'s last base listing of `kind` said about caching it."""
        upstream = self._upstreams.get(name)
        return upstream.cache_hints.get(kind, NO_CACHE_HINT) if upstream is not None else NO_CACHE_HINT

    def first_round_done(self) -> bool:
        return all(u.attempted.is_set() for u in self._upstreams.values())

    async def wait_first_round(self) -> None:
        for upstream in list(self._upstreams.values()):
            await upstream.attempted.wait()

    # -- re-listing on request (upstream/relist.py; docs/broker.md "Re-listing on request") --

    def request_relist(self, name: str) -> None:
        """Someone heard `name` announce a list change: re-list it soon (coalesced), without
        waiting. A catalog change follows only if the listing differs."""
        upstream = self._upstreams.get(name)
        if upstream is not None:
            upstream.request_relists()

    async def relist(self, name: str) -> RelistOutcome:
        """Re-list `name` and return once a listing that started after this call has finished
        and is published in `catalog()`. Concurrent callers share one listing (at most one in
        flight, one queued), so the wait is at most two listings, each bounded by the server's
        `timeoutSeconds`; callers bound it tighter with a cancel scope."""
        upstream = self._upstreams.get(name)
        if upstream is None or upstream.state is UpstreamState.DISABLED:
            return RelistOutcome.UNKNOWN
        return await upstream.relist()

    def stream_client(self, name: str) -> UpstreamClient | None:
        """The connected client of a stdio/WebSocket upstream: calls to it share its link."""
        upstream = self._upstreams.get(name)
        if upstream is None or upstream.server.transport == "http" or not upstream.serving:
            return None
        return upstream.client

    def http_client(self, name: str) -> httpx.AsyncClient | None:
        """The pooled HTTP client of a running upstream, for calls the broker forwards."""
        upstream = self._upstreams.get(name)
        return upstream.http if upstream is not None else None
