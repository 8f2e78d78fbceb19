"""The ext_proc side of a 2026-07-28 client's routed call (router/modern_clients.py decides it):
the backend session it goes on, the mutations, and the answer's body rewritten on the way back.
A mixin of `exchange.Exchange`, which owns the conversation; kept apart so that one reads top
to bottom for the handshake clients. docs/router.md, "Modern clients".

- To a modern upstream: no backend session; the client's own `_meta` envelope passes through;
  the revision's headers for that upstream (router/modern_upstreams.py). An `input_required`
  answer gets its `requestState` sealed (the client never holds the upstream's).
- To a legacy upstream: the gateway-held session modern clients declaring no feature share
  (sessions/modern.py), opened lazily like a legacy client's backend session; the call under a
  gateway-made id (clients' ids may collide there), its envelope removed, at that session's
  `MCP-Protocol-Version`; the answer gets the client's id back and `resultType`.
- An upstream whose capability variants are not known to add nothing: the broker's (a name
  may exist only for clients declaring more, which is -32021 there).
- Envoy's Lua fast path applies the decision to the next calls with the same inputs itself
  (`_hand_modern_to_fast_path`); it asks here, over its internal listener, to have a modern
  upstream's `input_required` answer to such a call sealed (`_seal_answer`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import trio_asyncio
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from mcp_gateway.auth import Principal
from mcp_gateway.protocol import encode_header_value
from mcp_gateway.router.accesslog import METADATA_NAMESPACE
from mcp_gateway.router.backends import BackendUnavailable, NoSessionNeeded, SessionGone
from mcp_gateway.router.decision import (
    ROUTED_METHODS,
    SESSION_HEADER,
    SESSION_KEY_HEADER,
    Answer,
    NeedsBackend,
    Reply,
    ToUpstream,
    forward,
    rewrite_response_headers,
    store_unavailable,
    upstream_unavailable,
)
from mcp_gateway.router.ext_proc_messages import (
    BODY_CONTINUE,
    STREAM_RESPONSE_BODY,
    header_mutation,
    immediate,
    to_upstream,
)
from mcp_gateway.router.fast_path import (
    ANSWERING_KEY,
    BINDING_KEY_PURPOSE,
    LEARN_HEADER,
    Decision,
    decision_expiries,
    lifetime_within,
    open_binding,
    seal_binding,
    write_decision,
)
from mcp_gateway.router.modern_clients import (
    ModernAnswer,
    Rewrite,
    for_legacy_upstream,
    legacy_answer,
    new_gateway_id,
    sealed_input_required,
)
from mcp_gateway.router.modern_upstreams import VERSION_HEADER, param_mismatch, to_modern_upstream
from mcp_gateway.router.relay import EVENT_STREAM
from mcp_gateway.sessions.modern import BACKEND_PROTOCOL_VERSION
from mcp_gateway.sessions.request_state import RequestBinding
from mcp_gateway.sessions.store import SessionStoreUnavailable
from mcp_gateway.upstream.credentials import Credential
from mcp_gateway.upstream.modern import UpstreamMode
from mcp_gateway.upstream.variants import settled_without_variants

if TYPE_CHECKING:
    from mcp_gateway.router.exchange import Router, Snapshot
    from mcp_gateway.router.relay import SseIdTagger


class ModernCalls:
    # Provided by exchange.Exchange.
    router: Router
    headers: dict[str, str]
    need: NeedsBackend | None
    backend_id: str | None
    rewrite: Rewrite | None
    tagger: SseIdTagger | None
    upstream_id: str | None
    extend: Callable[[float], Awaitable[None]]

    def _timeout_of(self, need: NeedsBackend) -> float:
        raise NotImplementedError

    async def _decide_modern(
        self, need: NeedsBackend, snapshot: Snapshot, principal: Principal | None
    ) -> pb.ProcessingResponse:
        server = need.upstream.server
        if snapshot.capability_variants and not settled_without_variants(server):
            return BODY_CONTINUE  # the broker's: it knows which names need more capabilities
        backends = self.router.backends
        mode = backends.mode_of(need)
        backend_id: str | None = None
        try:
            if mode is None or not mode.stateless:
                await trio_asyncio.trio_as_aio(backends.ensure_modern_session)(
                    snapshot.fast.session_ttl_seconds
                )
                backend_id = backends.known_backend(need)
                if backend_id is None:
                    backend_id = await trio_asyncio.trio_as_aio(backends.lookup)(need)
                if backend_id is None:
                    await self.extend(self._timeout_of(need))
                    backend_id = await trio_asyncio.trio_as_aio(backends.backend_for)(need)
        except NoSessionNeeded as learnt:
            mode, backend_id = learnt.mode, None
        except (SessionGone, BackendUnavailable, SessionStoreUnavailable) as error:
            return immediate(modern_failure(error, need))
        credential = await self._credential(need, snapshot)
        if credential is None:
            return immediate(modern_failure(BackendUnavailable(), need))
        if credential.value != need.upstream.authorization:
            need = replace(need, upstream=replace(need.upstream, authorization=credential.value))
        if mode is not None and mode.modern:
            if (refused := param_mismatch(self.headers, need)) is not None:
                return immediate(refused)
            binding = RequestBinding(
                server, need.method, need.exposed_name, principal.subject if principal is not None else ""
            )
            seal = self.router.request_states.seal
            self.rewrite = sealed_input_required(lambda state: seal(binding, state))
            mutations = to_modern_upstream(forward(need, None), need, mode.protocol_version)
        else:
            gateway_id = new_gateway_id()
            self.rewrite = legacy_answer(gateway_id, need.request_id)
            self.upstream_id = gateway_id  # what a cancellation names (`_modern_abandoned`)
            need = replace(need, body=for_legacy_upstream(need.body, gateway_id))
            version = mode.protocol_version if mode is not None else BACKEND_PROTOCOL_VERSION
            mutations = _with_version(forward(need, backend_id), version)
        self.need, self.backend_id = need, backend_id
        reply = to_upstream(_without_session_key(mutations))
        if snapshot.fast.enabled and LEARN_HEADER in self.headers and need.method in ROUTED_METHODS:
            self._hand_modern_to_fast_path(reply, need, backend_id, snapshot, principal, credential, mode)
        return reply

    def _hand_modern_to_fast_path(
        self,
        reply: pb.ProcessingResponse,
        need: NeedsBackend,
        backend_id: str | None,
        snapshot: Snapshot,
        principal: Principal | None,
        credential: Credential,
        mode: UpstreamMode | None,
    ) -> None:
        """The decision for Envoy's Lua filter to apply to the next calls with the same inputs
        (it asked: LEARN_HEADER): the values set on this call, and what its answer needs."""
        now = time.time()
        lifetime, not_after_ms = lifetime_within(snapshot.fast.ttl_ms, decision_expiries(principal, credential), now)
        if lifetime <= 0:
            return
        upstream = need.upstream
        modern = mode is not None and mode.modern
        version = mode.protocol_version if mode is not None else BACKEND_PROTOCOL_VERSION
        # A legacy upstream's fast call on the shared session is cancelled there if its client
        # leaves (the access log reports the mark, the Lua filter appends the gateway's id); a
        # modern upstream takes the request's reset as its cancellation, a stateless legacy one
        # has no session to cancel in. Sealed once per decision, not per call.
        mark = self.router.marks.seal_session(upstream.server, need.claims.session_id, version) if backend_id and not modern else ""
        binding = ""
        if modern:
            subject = principal.subject if principal is not None else ""
            key = self.router.tokens.derived_key(BINDING_KEY_PURPOSE)
            binding = seal_binding(key, RequestBinding(upstream.server, need.method, need.exposed_name, subject))
        decision = Decision(
            server=upstream.server,
            routed_name=need.routed_name,
            backend_id=backend_id or "",
            authority=upstream.authority,
            path=upstream.path,
            authorization=upstream.authorization or "",
            mark=mark,
            lifetime_ms=lifetime,
            replay_timeout_ms=int(2 * self._timeout_of(need) * 1000),
            not_after_ms=not_after_ms,
            kind="modern" if modern else "legacy",
            version=version,
            name_header=encode_header_value(need.routed_name),
            binding=binding,
            # The gateway's ids on the shared session are "mcpgw-fast:<nonce>:<n>", n counting
            # the calls of the one Envoy worker that learns this decision.
            nonce="" if modern else os.urandom(12).hex(),
        )
        write_decision(reply.dynamic_metadata, METADATA_NAMESPACE, decision, snapshot.fast.generation)

    def _seal_answer(self, binding_text: str, body: bytes) -> pb.ProcessingResponse:
        """Envoy's Lua filter's request (its internal listener only: SEAL_HEADER) to seal a
        modern upstream's answer to a fast call: every `input_required` result's requestState
        replaced, as on the router's own calls; the rest of the answer as it came."""
        binding = open_binding(self.router.tokens.derived_key(BINDING_KEY_PURPOSE), binding_text)
        if binding is None:
            return immediate(Reply(403, b""))
        seal = self.router.request_states.seal
        content_type = self.headers.get("content-type", "")
        sealed = rewrite_whole(
            sealed_input_required(lambda state: seal(binding, state)), binding.server, body, content_type
        )
        return immediate(Reply(200, sealed, (("content-type", content_type),)))

    async def _credential(self, need: NeedsBackend, snapshot: Snapshot) -> Credential | None:
        raise NotImplementedError

    async def _modern_abandoned(self, need: NeedsBackend, backend_id: str) -> None:
        """Envoy ended our stream before the answer's end (it streams through us whole): the
        client left. A legacy upstream gets `notifications/cancelled` on the shared backend
        session, naming the gateway's id it saw, at that session's revision. A modern upstream
        has no backend session: Envoy resetting its request is the revision's cancellation."""
        if self.upstream_id is None:
            return
        mode = self.router.backends.mode_of(need)
        version = mode.protocol_version if mode is not None else BACKEND_PROTOCOL_VERSION
        claims = replace(need.claims, protocol_version=version)
        cancel = replace(need, request_id=self.upstream_id, claims=claims)
        await trio_asyncio.trio_as_aio(self.router.backends.cancel_abandoned)(cancel, backend_id)

    def _modern_response(
        self, answer: Answer, need: NeedsBackend, headers: Mapping[str, str], backend_id: str | None
    ) -> pb.ProcessingResponse | None:
        """The reply to the answer's headers; None: the backend session expired, replay."""
        if answer is Answer.BACKEND_SESSION_EXPIRED and backend_id:
            return None
        if answer is Answer.NOT_FROM_UPSTREAM:
            return immediate(modern_failure(BackendUnavailable(), need))
        # No session id on a modern answer: the backend's (the shared session's) never leaks.
        removed = (*rewrite_response_headers(headers, "").remove_headers, SESSION_HEADER)
        reply = pb.ProcessingResponse(
            response_headers=pb.HeadersResponse(
                response=pb.CommonResponse(header_mutation=header_mutation((), removed))
            )
        )
        if answer is Answer.FROM_UPSTREAM:
            content_type = headers.get("content-type", "")
            if content_type.startswith(EVENT_STREAM):
                # Envoy's Lua filter re-lists a change told inside it, as on legacy clients' calls.
                reply.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields[
                    ANSWERING_KEY
                ].string_value = need.upstream.server
            self._modern_answer(reply, need, content_type)
        return reply

    def _modern_answer(self, reply: pb.ProcessingResponse, need: NeedsBackend, content_type: str) -> None:
        """Stream the answer's body through the rewrite (router/modern_clients.py)."""
        assert self.rewrite is not None
        self.tagger = ModernAnswer(need.upstream.server, self.rewrite, sse=content_type.startswith(EVENT_STREAM))
        reply.mode_override.CopyFrom(STREAM_RESPONSE_BODY)
        reply.response_headers.response.header_mutation.remove_headers.append("content-length")


def modern_failure(error: Exception, need: NeedsBackend) -> Reply:
    """A modern call that could not be completed: never a session header on it (it has none)."""
    if isinstance(error, SessionStoreUnavailable):
        return store_unavailable(need.request_id)
    return upstream_unavailable(need)


def rewrite_whole(rewrite: Rewrite, server: str, body: bytes, content_type: str) -> bytes:
    """A whole answer (a replayed one) through the rewrite."""
    return ModernAnswer(server, rewrite, sse=content_type.startswith(EVENT_STREAM)).feed(body, True)


def _with_version(to: ToUpstream, version: str) -> ToUpstream:
    kept = tuple((n, v) for n, v in to.set_headers if n != VERSION_HEADER)
    removed = tuple(n for n in to.remove_headers if n != VERSION_HEADER)
    return ToUpstream((*kept, (VERSION_HEADER, version)), removed, to.body)


def _without_session_key(to: ToUpstream) -> ToUpstream:
    """A modern client has no gateway session for Envoy's per-session rate limit to count."""
    kept = tuple((n, v) for n, v in to.set_headers if n != SESSION_KEY_HEADER)
    return ToUpstream(kept, to.remove_headers, to.body)


__all__ = ["SESSION_HEADER", "ModernCalls", "modern_failure", "rewrite_whole"]
