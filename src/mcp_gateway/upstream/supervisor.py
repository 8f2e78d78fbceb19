"""The supervisor: one task per upstream, each in its own cancel scope, all in one nursery.

Each upstream task loops: connect, initialize, validate, list everything it offers, then hold
its GET stream (re-listing on list_changed) and ping it; on any failure its items leave the
catalog, its status says why, and it retries after a capped, jittered backoff. Nothing one
upstream does can block another: they share no lock and no request, and readers (the broker's
tools/list) only ever read the last published catalog.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import trio

from mcp_gateway.config import GatewayConfig, ServerConfig, UpstreamRetrySettings, diff_configs
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import LATEST_STABLE
from mcp_gateway.upstream.backoff import Backoff, worth_logging
from mcp_gateway.upstream.catalog import (
    ALL_FEATURES,
    CLIENT_FEATURES,
    KINDS,
    TOOLS,
    ListKind,
    Rejected,
    ServerCatalog,
    Variant,
    accept_items,
    declared_capabilities,
    offered_kinds,
    validate_initialize,
)
from mcp_gateway.upstream.client import JsonObject, UpstreamClient, new_http_client
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.relist import RelistOutcome, RelistQueue

log = get_logger("mcp_gateway.upstream")

GATEWAY_CLIENT_INFO: Mapping[str, str] = {"name": "mcp-gateway-discovery", "version": "0.1.0"}


class UpstreamState(enum.StrEnum):
    CONNECTING = "connecting"
    READY = "ready"
    DEGRADED = "degraded"  # serving its items, but something is partly wrong (see reason)
    FAILED = "failed"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    name: str
    url: str
    prefix: str
    state: UpstreamState
    reason: str | None
    counts: Mapping[str, int]
    last_refresh: float | None  # unix time of the last successful listing
    protocol_version: str | None
    server_info: Mapping[str, Any] | None
    consecutive_failures: int
    rejected: tuple[Rejected, ...] = ()
    variants_state: str = "off"  # see VariantsState
    variants_reason: str | None = None
    variants: tuple[Variant, ...] = ()
    base_items: Mapping[str, tuple[JsonObject, ...]] = field(default_factory=dict)
    relists: int = 0  # listings done on request (list_changed, the backstop), all sessions
    relist_pending: bool = False  # one in flight or queued now

    @property
    def tool_count(self) -> int:
        return self.counts.get(TOOLS.kind, 0)

    def to_json(self) -> JsonObject:
        return {
            "name": self.name,
            "url": _public_url(self.url),
            "prefix": self.prefix,
            "state": self.state.value,
            "reason": self.reason,
            "toolCount": self.tool_count,
            "counts": dict(self.counts),
            "lastRefresh": self.last_refresh,
            "protocolVersion": self.protocol_version,
            "serverInfo": dict(self.server_info) if self.server_info else None,
            "consecutiveFailures": self.consecutive_failures,
            "rejected": [{"item": r.item, "reason": r.reason} for r in self.rejected],
            "relists": {"done": self.relists, "pending": self.relist_pending},
            "capabilityVariants": {
                "state": self.variants_state,
                "reason": self.variants_reason,
                "variants": [
                    {
                        "requires": sorted(v.requires),
                        "counts": {kind: len(items) for kind, items in v.items.items()},
                        "extra": v.extra(self.base_items),
                    }
                    for v in self.variants
                ],
            },
        }


class VariantsState(enum.StrEnum):
    """Where an upstream's capability variants stand (docs/upstream.md, "Capability variants")."""

    OFF = "off"  # gateway.capability_variants is false
    SHARED_LINK = "shared-link"  # stdio/WebSocket: one link declaring every relayed capability
    PENDING = "pending"  # the base session is not serving yet
    PROBING = "probing"
    NONE = "none"  # a session declaring every client feature lists what the base one lists
    ACTIVE = "active"  # variant sessions are held; their items reach the clients that qualify
    FAILED = "failed"  # probing or a variant session failed (reason); the base is unaffected


def _public_url(url: str) -> str:
    """The URL without user info or query: either may carry a credential; /status is public."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class Timing:
    """How often and how patiently the supervisor talks to upstreams (tests shrink these)."""

    ping_interval: float = 10.0
    poll_interval: float = 30.0  # re-list period for upstreams without a GET stream
    stream_reopen_delay: float = 0.5
    # Retry delays of a failed upstream; None: the config's `gateway.upstream_retry`.
    backoff_base: float | None = None
    backoff_cap: float | None = None


# Any client with UpstreamClient's surface: HTTP here, stdio/WebSocket in their own modules.
# Called as `factory(server, http)` for the base session and, for capability variants of an
# HTTP upstream, `factory(server, http, capabilities=...)` (the client capabilities to declare).
ClientFactory = Callable[..., Any]

# The periodic re-list waits between (1 - this) and 1 times `gateway.relist_interval_seconds`.
BACKSTOP_JITTER = 0.25


class LinkEvents(Protocol):
    """What a stdio/WebSocket link says about clients' subscriptions: it is one session shared
    by every client, so the broker keeps who subscribed (`broker/link_subscriptions.py`)."""

    def updated(self, server: str, params: Any) -> None:
        """A `notifications/resources/updated` arrived on the link."""

    async def reconnected(self, server: str) -> None:
        """The link is new (the upstream restarted): its subscriptions are gone upstream."""


# A stdio/WebSocket link is one session shared by every client whose calls the broker forwards
# on it; the broker relays these requests to the calling client (docs/broker.md), so the link
# announces them. A client that cannot answer one says so itself (or the broker does).
RELAYED_CLIENT_CAPABILITIES: Mapping[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {}}


def default_client_factory(
    server: ServerConfig,
    http: httpx.AsyncClient | None,
    *,
    capabilities: Mapping[str, Any] | None = None,
) -> Any:
    """Streamable HTTP, or the message-stream clients of `stdio.py` and `websocket.py`."""
    if server.transport in ("stdio", "websocket"):
        from mcp_gateway.upstream.stdio import StdioUpstreamClient
        from mcp_gateway.upstream.websocket import WebSocketUpstreamClient

        link_client = (
            StdioUpstreamClient if server.transport == "stdio" else WebSocketUpstreamClient
        )
        return link_client(
            server,
            protocol_version=LATEST_STABLE,
            client_info=GATEWAY_CLIENT_INFO,
            capabilities=RELAYED_CLIENT_CAPABILITIES,
        )
    return UpstreamClient(
        server,
        http=http,
        protocol_version=LATEST_STABLE,
        client_info=GATEWAY_CLIENT_INFO,
        capabilities=capabilities,
    )


@asynccontextmanager
async def _connected(client: Any) -> AsyncIterator[None]:
    """Open a client for one supervised session, whatever its kind.

    Message-stream clients (stdio, WebSocket) own a link task (`run`) that must live in a
    nursery; HTTP clients are plain async context managers. Either way the session ends with
    the block, and the supervisor (not the client) decides when to reconnect.
    """
    run = getattr(client, "run", None)
    if run is None:
        async with client:
            yield
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        try:
            yield
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()


@dataclass
class _Upstream:
    """One supervised upstream: its task, its cancel scope, its published state."""

    server: ServerConfig
    on_change: Callable[[], None]
    timing: Timing
    client_factory: ClientFactory
    state: UpstreamState = UpstreamState.CONNECTING
    reason: str | None = None
    catalog: ServerCatalog = field(default_factory=ServerCatalog)
    last_refresh: float | None = None
    protocol_version: str | None = None
    server_info: Mapping[str, Any] | None = None
    failures: int = 0
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    attempted: trio.Event = field(default_factory=trio.Event)  # first connect tried (ok or not)
    http: httpx.AsyncClient | None = None
    client: Any = None  # the live discovery client (message-stream upstreams forward through it)
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
            async with _connected(client), trio.open_nursery() as nursery:
                if self._wants_variants:
                    # Probed side by side with the base handshake, so readiness (which waits
                    # for the first variant decision) costs no extra round trips.
                    nursery.start_soon(self._maintain_variants, base_listed)
                result = await self._initialize(client)
                self.protocol_version = client.protocol_version
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

    async def _initialize(self, client: Any) -> JsonObject:
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
    ) -> tuple[dict[str, tuple[JsonObject, ...]], list[Rejected]]:
        items: dict[str, tuple[JsonObject, ...]] = {}
        rejected: list[Rejected] = []
        with trio.fail_after(self.server.timeout_seconds):
            for kind in kinds:
                listed = await client.list_all(kind.method, kind.result_key)
                items[kind.kind], bad = accept_items(kind, listed, self.server.prefix)
                rejected.extend(bad)
        return items, rejected

    async def _refresh(self, client: UpstreamClient, kinds: tuple[ListKind, ...]) -> None:
        items, rejected = await self._list(client, kinds)
        changed = items != self.catalog.items
        self.catalog = ServerCatalog(items, tuple(rejected), self.catalog.variants)
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
    # Some upstreams offer items only to sessions whose client declared a capability. Once the
    # base session serves, one more session declaring every client feature is listed: when it
    # lists what the base lists (the common case) it is closed and nothing more happens until
    # the next reconnect. Otherwise one session per single feature is held (and the
    # every-feature one too if some item needs several features at once), each with its own
    # GET stream, re-listing on its own list_changed. A variant failing never fails the base:
    # its items are dropped and it is probed again after a backoff (up to poll_interval).
    # The first round (readiness) includes the first decision, so a client listing right
    # after /readyz already sees the items its capabilities bring.

    async def _maintain_variants(self, base_listed: trio.Event) -> None:
        backoff = self._backoff()
        backoff.cap = max(backoff.cap, self.timing.poll_interval)
        while True:
            self.variants_state, self.variants_reason = VariantsState.PROBING, None
            try:
                await self._discover_variants(base_listed)
                return
            except Exception as exc:
                reason = self._reason(exc)
            # A failure the base session shares (the upstream is down) ends it, and this task
            # with it, before anything is reported here.
            await base_listed.wait()
            self._set_variants(VariantsState.FAILED, reason)
            self.attempted.set()
            report = log.warning if worth_logging(backoff.attempt + 1) else log.debug
            report("capability variants failed", server=self.server.name, reason=reason)
            await trio.sleep(backoff.next_delay())

    async def _discover_variants(self, base_listed: trio.Event) -> None:
        probe_client = self._variant_client(ALL_FEATURES)
        async with _connected(probe_client):  # the probe session ends (DELETE) with the block
            result = await self._initialize(probe_client)
            probe, _rejected = await self._list(probe_client, offered_kinds(result))
            await base_listed.wait()
            if _same_items(probe, self.catalog.items):
                self._no_variants()  # before the DELETE: it is not on the readiness path
                return
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as starting:  # side by side; done once all listed
                for feature in CLIENT_FEATURES:
                    starting.start_soon(nursery.start, self._hold_variant, frozenset({feature}))
            singles = ServerCatalog(self.catalog.items, variants=self.catalog.variants)
            if not _same_items(probe, singles.for_client(ALL_FEATURES).items):
                await nursery.start(self._hold_variant, ALL_FEATURES)
            if not any(v.extra(self.catalog.items) for v in self.catalog.variants):
                # What the probe saw was the upstream's listing changing between two listings
                # (a list_changed), not a variant: nothing to hold.
                nursery.cancel_scope.cancel()
            else:
                self.variants_state = VariantsState.ACTIVE
                self.attempted.set()
                log.info(
                    "capability variants",
                    server=self.server.name,
                    variants=[sorted(v.requires) for v in self.catalog.variants],
                )
        self._no_variants()  # reached only when the held sessions were let go

    def _no_variants(self) -> None:
        self._set_variants(VariantsState.NONE, None)
        self.attempted.set()
        log.info("no capability variants", server=self.server.name)

    def _variant_client(self, features: frozenset[str]) -> Any:
        capabilities = declared_capabilities(features)
        return self.client_factory(self.server, self.http, capabilities=capabilities)

    async def _hold_variant(
        self, features: frozenset[str], *, task_status: trio.TaskStatus[None]
    ) -> None:
        client = self._variant_client(features)
        async with _connected(client):
            result = await self._initialize(client)
            kinds = offered_kinds(result)

            async def refresh(client: UpstreamClient, kinds: tuple[ListKind, ...]) -> None:
                # Invalid items of a variant are dropped; the base listing reports rejections.
                items, _rejected = await self._list(client, kinds)
                self._set_variant(features, items)

            await refresh(client, kinds)
            task_status.started()
            await self._hold(client, kinds, refresh, None, VARIANT_ANSWERS, base=False)

    def _set_variant(
        self, features: frozenset[str], items: dict[str, tuple[JsonObject, ...]]
    ) -> None:
        if self.variant_items.get(features) == items:
            return
        self.variant_items[features] = items
        self._publish_variants()

    def _set_variants(self, state: VariantsState, reason: str | None) -> None:
        self.variants_state, self.variants_reason = state, reason
        self.variant_items = {}
        self._publish_variants()

    def _publish_variants(self) -> None:
        # In a fixed order (narrow first, then by feature), whichever session listed first.
        held = sorted(self.variant_items.items(), key=lambda pair: (len(pair[0]), sorted(pair[0])))
        variants = tuple(Variant(features, items) for features, items in held)
        if variants == self.catalog.variants:
            return
        self.catalog = ServerCatalog(self.catalog.items, self.catalog.rejected, variants)
        if self.serving:
            self.on_change()


def _same_items(
    one: Mapping[str, tuple[JsonObject, ...]], other: Mapping[str, tuple[JsonObject, ...]]
) -> bool:
    """The same items of every kind, whatever their order."""
    for kind in KINDS:
        mine = {str(item[kind.id_field]): item for item in one.get(kind.kind, ())}
        theirs = {str(item[kind.id_field]): item for item in other.get(kind.kind, ())}
        if mine != theirs:
            return False
    return True


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
# A capability-variant session declared roots and elicitation with no user behind it: no
# roots to share, nothing to fill in (server-everything asks a roots session for its roots
# 350 ms after initialize, and gets a valid answer).
VARIANT_ANSWERS: Mapping[str, JsonObject] = {
    "ping": {},
    "roots/list": {"roots": []},
    "elicitation/create": {"action": "decline"},
}


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

    def stream_client(self, name: str) -> Any:
        """The connected client of a stdio/WebSocket upstream: calls to it share its link."""
        upstream = self._upstreams.get(name)
        if upstream is None or upstream.server.transport == "http" or not upstream.serving:
            return None
        return upstream.client

    def http_client(self, name: str) -> httpx.AsyncClient | None:
        """The pooled HTTP client of a running upstream, for calls the broker forwards."""
        upstream = self._upstreams.get(name)
        return upstream.http if upstream is not None else None
