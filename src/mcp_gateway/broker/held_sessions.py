"""A held call's own backend session: a modern client's call to a legacy HTTP upstream that may
ask it something (broker/input_required.py).

Modern clients share one gateway-held session per declared feature set (sessions/modern.py). A
call the broker holds for InputRequiredResult rounds cannot run there:

- an upstream may ask on the backend session's own GET stream rather than on the call's SSE
  stream: a TypeScript SDK server sends a request made without `relatedRequestId` there
  (server-everything's `get-roots-list` asks `roots/list` that way, and once more 350 ms after
  `initialized`). On a shared session such a request names no call, and nobody reads that
  stream, so the TypeScript server drops it and the call waits for the answer until the
  upstream's timeout;
- an upstream keeps what a client told it per session (server-everything caches the roots it
  got, per session id, for good): on a shared session one client's roots would answer every
  later client's calls.

So the held call gets a gateway session of its own, declaring the same client capabilities as
the shared one. The forwarding path opens its backend session lazily as for any session and
announces it (sessions/openings.py); this module holds that backend session's GET stream before
the call goes out, and every request on it is the call's: it goes to the held call's `ask`, as
a request on the call's own stream does. When the call ends, the backend session is ended
(DELETE, bounded) and the gateway session deleted; a gateway process that dies first leaves
them to the reaper (the session's TTL). The cost: an initialize, a GET and a DELETE per held
call, on calls that declared roots, sampling or elicitation only.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import trio

from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.core import BrokerCore, Emit
from mcp_gateway.broker.forward import Asker
from mcp_gateway.logs import get_logger
from mcp_gateway.sessions.modern import (
    BACKEND_PROTOCOL_VERSION,
    GATEWAY_CLIENT_INFO,
    held_call_session_id,
)
from mcp_gateway.sessions.openings import Opening
from mcp_gateway.sessions.store import SessionStoreUnavailable
from mcp_gateway.upstream import HttpUpstreamClient, UpstreamError
from mcp_gateway.upstream.catalog import declared_capabilities

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]
# Ending the session when the call is over: a DELETE per backend (each bounded at 2 s itself)
# and the store entry.
END_SECONDS: Final = 5.0


@asynccontextmanager
async def held_call_session(
    core: BrokerCore, features: frozenset[str], ask: Asker, emit: Emit
) -> AsyncIterator[ClientSession]:
    """A gateway session for one held call, with its backend sessions' GET streams relayed to
    `ask` (requests) and `emit` (the call's progress) until the block ends; ended after it."""
    sid = held_call_session_id(secrets.token_urlsafe(16))
    client = {"capabilities": declared_capabilities(features), "clientInfo": dict(GATEWAY_CLIENT_INFO)}
    await core.store.create(sid, core.config.gateway.sessions.ttl_seconds, client=client)
    session = ClientSession("", sid, BACKEND_PROTOCOL_VERSION)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(_listen, core, sid, ask, emit)
            try:
                yield session
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(END_SECONDS):
            try:
                await core.forwarder.end_backends(session)
                await core.store.delete(sid)
            except SessionStoreUnavailable:
                log.info("held call's session not ended: session store unavailable (the reaper will)")


async def _listen(
    core: BrokerCore,
    sid: str,
    ask: Asker,
    emit: Emit,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Each backend session opened for `sid` from now on: its GET stream held (the call that
    opened it waits for that, bounded, in `BackendOpenings.announce`)."""
    with core.forwarder.streams.openings.watch(sid) as announced:
        task_status.started()
        async with trio.open_nursery() as nursery:
            async for opening in announced:
                nursery.start_soon(_hold, core, opening, ask, emit)


async def _hold(core: BrokerCore, opening: Opening, ask: Asker, emit: Emit) -> None:
    server = core.config.server(opening.server)
    if server is None or server.transport != "http":
        opening.attached.set()
        return
    client = HttpUpstreamClient(
        server,
        http=core.forwarder.streams.http_client(),
        session_id=opening.backend_id,
        protocol_version=BACKEND_PROTOCOL_VERSION,
    )
    try:
        await client.listen(partial(_relay, client, ask, emit), task_status=_Attached(opening.attached))
    except UpstreamError as exc:
        # No GET stream (405) or it failed: the call goes on; what the upstream asks on the
        # call's own stream still reaches the client.
        log.info("held call's backend stream not available", server=server.name, reason=exc.message)
    finally:
        opening.attached.set()  # a stream that failed to open releases the waiting call too
        await client.aclose(end_session=False)  # closes only an HTTP client of its own


async def _relay(client: HttpUpstreamClient, ask: Asker, emit: Emit, message: JsonObject) -> None:
    """What the upstream sends on the session's own stream: every request is the held call's
    (the session has no other call); progress is the call's too. Anything else (log messages,
    list changes the supervisor hears on its own session) has no one to go to."""
    method = message.get("method")
    if not isinstance(method, str):
        return  # a response on a GET stream answers nothing of ours
    if "id" in message:
        await ask(message, client.respond)
    elif method == "notifications/progress":
        await emit(json.dumps(message, separators=(",", ":")).encode())


class _Attached:
    """`listen`'s task status: the upstream accepted the stream, so the call may go out."""

    def __init__(self, attached: trio.Event) -> None:
        self._attached = attached

    def started(self, value: None = None) -> None:
        self._attached.set()


__all__ = ["held_call_session"]
