"""Capability variants of an HTTP upstream (docs/upstream.md, "Capability variants").

Some upstreams offer items only to sessions whose client declared a capability (roots,
sampling, elicitation). `CapabilityVariants` is the part of a supervised upstream
(`supervisor._Upstream`) that finds and holds such sessions; it is a mixin because it runs on
the upstream's own state (its catalog, its readiness, its sessions' handshake and listing),
which the upstream provides (the members declared below without a body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.upstream.backoff import Backoff, worth_logging
from mcp_gateway.upstream.catalog import (
    ALL_FEATURES,
    CLIENT_FEATURES,
    KINDS,
    CacheHint,
    ListKind,
    Rejected,
    ServerCatalog,
    Variant,
    declared_capabilities,
    offered_kinds,
)
from mcp_gateway.upstream.clients import ClientFactory
from mcp_gateway.upstream.rpc import UpstreamClient
from mcp_gateway.upstream.status import VariantsState
from mcp_gateway.upstream.tool_params import record_tool_params

JsonObject = dict[str, Any]
Refresh = Callable[[UpstreamClient, tuple[ListKind, ...]], Awaitable[None]]

log = get_logger("mcp_gateway.upstream")

# A capability-variant session declared roots and elicitation with no user behind it: no
# roots to share, nothing to fill in (server-everything asks a roots session for its roots
# 350 ms after initialize, and gets a valid answer).
VARIANT_ANSWERS: Mapping[str, JsonObject] = {
    "ping": {},
    "roots/list": {"roots": []},
    "elicitation/create": {"action": "decline"},
}


# Upstreams whose capability variants are settled and add nothing, by server name, in this
# process: the router (in the same process) routes a 2026-07-28 client's call to them itself,
# since no name of theirs exists only for clients declaring more (the broker's -32021).
_settled_without_variants: set[str] = set()


def settled_without_variants(server: str) -> bool:
    return server in _settled_without_variants


class CapabilityVariants:
    # Provided by the supervised upstream.
    server: ServerConfig
    timing: Any  # supervisor.Timing
    http: httpx.AsyncClient | None
    client_factory: ClientFactory
    catalog: ServerCatalog
    attempted: trio.Event
    on_change: Callable[[], None]
    variants_state: VariantsState
    variants_reason: str | None
    variant_items: dict[frozenset[str], dict[str, tuple[JsonObject, ...]]]

    @property
    def serving(self) -> bool:
        raise NotImplementedError

    def _backoff(self, backoff: Backoff | None = None) -> Backoff:
        raise NotImplementedError

    def _reason(self, exc: Exception) -> str:
        raise NotImplementedError

    async def _initialize(self, client: UpstreamClient) -> JsonObject:
        raise NotImplementedError

    async def _list(
        self, client: UpstreamClient, kinds: tuple[ListKind, ...]
    ) -> tuple[dict[str, tuple[JsonObject, ...]], list[Rejected], dict[str, CacheHint]]:
        raise NotImplementedError

    async def _hold(
        self,
        client: UpstreamClient,
        kinds: tuple[ListKind, ...],
        refresh: Refresh,
        backoff: Backoff | None,
        answers: Mapping[str, JsonObject],
        *,
        base: bool,
    ) -> None:
        raise NotImplementedError

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
            _settled_without_variants.discard(self.server.name)
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
        async with probe_client.opened():  # the probe session ends (DELETE) with the block
            result = await self._initialize(probe_client)
            probe, _rejected, _hints = await self._list(probe_client, offered_kinds(result))
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
        _settled_without_variants.add(self.server.name)
        self.attempted.set()
        log.info("no capability variants", server=self.server.name)

    def _variant_client(self, features: frozenset[str]) -> UpstreamClient:
        capabilities = declared_capabilities(features)
        return self.client_factory(self.server, self.http, capabilities=capabilities)

    async def _hold_variant(
        self, features: frozenset[str], *, task_status: trio.TaskStatus[None]
    ) -> None:
        client = self._variant_client(features)
        async with client.opened():
            result = await self._initialize(client)
            kinds = offered_kinds(result)

            async def refresh(client: UpstreamClient, kinds: tuple[ListKind, ...]) -> None:
                # Invalid items of a variant are dropped; the base listing reports rejections.
                items, _rejected, _hints = await self._list(client, kinds)
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
        record_tool_params(self.server.name, self.catalog)
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


__all__ = ["VARIANT_ANSWERS", "CapabilityVariants"]
