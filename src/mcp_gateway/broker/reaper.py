"""The session reaper: a gateway session that expires ends its backend sessions upstream too.

A client that never sends DELETE leaves, behind its gateway session, one backend session per
upstream it used. The store forgets the gateway session at its TTL, but the upstreams would keep
theirs (memory, timers, open streams) until their own timeouts, which many MCP servers do not
have. So every `gateway.sessions.reap_interval_seconds` the broker claims the sessions that
expired (`SessionStore.reap_expired`: each one exactly once across replicas), closes their
client streams (a listening client learns the session ended and re-initialises on its next 404),
and sends each backend session the DELETE a client's own DELETE would have caused.

DELETEs are best effort and bounded: each takes at most 2 s (`HttpUpstreamClient.aclose`), they
run concurrently with a limit per upstream, so a slow or dead upstream delays only its own
DELETEs.
Backend session ids are credentials: only counts are logged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import httpx
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.sessions.store import SessionStoreUnavailable
from mcp_gateway.upstream import HttpUpstreamClient
from mcp_gateway.upstream.client import new_http_client

if TYPE_CHECKING:
    from mcp_gateway.broker.core import BrokerCore

log = get_logger("mcp_gateway.broker.reaper")

# Sessions claimed per round; a full batch means more are due, so the next round starts at once.
REAP_BATCH = 100
# Concurrent DELETEs per upstream: enough to drain a batch quickly, few enough not to flood one.
DELETES_PER_UPSTREAM = 8


async def run_reaper(
    core: BrokerCore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reap expired sessions until cancelled. The interval is read each round, so a reloaded
    config applies from the next one. A store that cannot be reached skips a round, never ends
    the task: its expired sessions wait there for the next one."""
    task_status.started()
    while True:
        try:
            reaped = await reap_once(core)
        except SessionStoreUnavailable as error:
            log.warning("expired sessions not reaped this round", reason=str(error))
            reaped = 0
        if reaped < REAP_BATCH:
            await trio.sleep(core.config.gateway.sessions.reap_interval_seconds)
        else:
            await trio.lowlevel.checkpoint()


async def reap_once(core: BrokerCore) -> int:
    """One round: claim up to `REAP_BATCH` expired sessions and end them; return how many."""
    expired = await core.store.reap_expired(REAP_BATCH)
    if not expired:
        return 0
    by_server: defaultdict[str, list[str]] = defaultdict(list)
    deletes = 0
    async with trio.open_nursery() as nursery:
        for sid, backends in expired:
            # What the broker holds for it (backend streams, link subscriptions), as on DELETE.
            nursery.start_soon(core.forwarder.release, sid)
            core.fanout.close_session(sid)  # the client's GET streams: they see end of stream
            for name, backend_id in backends.items():
                by_server[name].append(backend_id)
        for name, backend_ids in by_server.items():
            server = core.config.server(name)
            if server is None or server.transport != "http":
                continue  # removed since, or a shared stdio/WebSocket link: nothing to end
            nursery.start_soon(_end_backends_on, core, server, backend_ids)
            deletes += len(backend_ids)
    core.metrics.sessions_expired.inc(len(expired))
    log.info("expired sessions reaped", sessions=len(expired), backend_sessions=deletes)
    return len(expired)


async def _end_backends_on(core: BrokerCore, server: ServerConfig, backend_ids: list[str]) -> None:
    """DELETE backend sessions on one upstream, `DELETES_PER_UPSTREAM` at once, over the
    supervisor's pooled client; over one client for the round if the upstream is not running
    (a client per DELETE would cost ~15 ms of TLS setup each)."""
    pooled = core.supervisor.http_client(server.name)
    http = pooled if pooled is not None else new_http_client(server)
    limiter = trio.CapacityLimiter(DELETES_PER_UPSTREAM)
    try:
        async with trio.open_nursery() as nursery:
            for backend_id in backend_ids:
                nursery.start_soon(_end_backend, core, server, http, backend_id, limiter)
    finally:
        if pooled is None:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                await http.aclose()


async def _end_backend(
    core: BrokerCore,
    server: ServerConfig,
    http: httpx.AsyncClient,
    backend_id: str,
    limiter: trio.CapacityLimiter,
) -> None:
    async with limiter:
        client = HttpUpstreamClient(server, http=http, session_id=backend_id)
        await client.aclose()  # DELETE, shielded, at most 2 s, errors swallowed (best effort)
        core.metrics.expired_backend_deletes.labels(server.name).inc()
