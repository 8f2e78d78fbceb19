"""One ext_proc stream, one HTTP request: the exchange between Envoy and the router's decision
(router/decision.py), phase by phase; and the router state every stream reads (`Router`,
`Snapshot`, swapped whole on reload). The phases:

  request_headers   → strip client x-mcp-* headers (a POST without body is decided right here)
  request_body      → decision: to the broker, to an upstream (mutations), or an immediate reply
  response_headers  → for upstream calls, the backend session id becomes the gateway's; a
                      backend 404 is replayed once (router/backends.py); an SSE answer to a
                      client that can be asked things switches to a streamed body; every SSE
                      answer is marked for the access log of abandoned calls (router/accesslog.py)
  response_body     → (only then) server→client request ids tagged (router/relay.py)

A client that leaves a routed call is told upstream as `notifications/cancelled`: before the
answer began, seen here (Envoy ends our stream early: `Exchange.abandoned`); during an SSE
answer, which streams past us, reported by Envoy's gRPC access logger (`AccessLogReceiver`, same
server). Only the steps that need the session store or an upstream cross into Trio (`trio_as_aio`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog
import trio_asyncio
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from mcp_gateway.auth import AuthGate, NeedsKeys, Principal, Refusal
from mcp_gateway.config import GatewayConfig, ServerConfig
from mcp_gateway.router.accesslog import (
    METADATA_NAMESPACE,
    CallMarks,
    MarkedCall,
    mark_call,
)
from mcp_gateway.router.backends import (
    BackendSessions,
    BackendUnavailable,
    NoSessionNeeded,
    SessionGone,
)
from mcp_gateway.router.decision import (
    REQUEST_ID_HEADER,
    ROUTED_METHODS,
    SESSION_HEADER,
    SESSION_KEY_HEADER,
    Answer,
    Cancels,
    NeedsBackend,
    Reply,
    RoutingTable,
    ToBroker,
    client_internal_headers,
    forward,
    judge_answer,
    reply_error,
    request_id_text,
    rewrite_response_headers,
    route_request,
    session_not_found,
    store_unavailable,
    upstream_unavailable,
)
from mcp_gateway.router.decision import (
    Decision as RoutingDecision,
)
from mcp_gateway.router.ext_proc_messages import (
    BODY_CONTINUE,
    CONTINUE,
    RESPONSE_HEADERS_CONTINUE,
    STREAM_RESPONSE_BODY,
    header_mutation,
    headers_of,
    immediate,
    to_upstream,
)
from mcp_gateway.router.fast_path import (
    ANSWERING_KEY,
    LEARN_HEADER,
    SEAL_HEADER,
    Decision,
    FastPath,
    decision_expiries,
    lifetime_within,
    write_decision,
)
from mcp_gateway.router.modern_clients import (
    Rewrite,
    is_modern_request,
    missing_input_capability,
    route_modern,
)
from mcp_gateway.router.modern_exchange import ModernCalls, modern_failure, rewrite_whole
from mcp_gateway.router.modern_upstreams import to_modern_upstream
from mcp_gateway.router.relay import EVENT_STREAM, InFlightCalls, SseIdTagger
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStoreUnavailable, session_keys
from mcp_gateway.sessions.tokens import SessionTokens
from mcp_gateway.upstream.credentials import (
    Credential,
    credential_nowait,
    credential_rejected,
    upstream_credential,
)
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.modern import UpstreamMode, body_with_meta

_log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Router state shared by all streams; swapped whole on reload


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: RoutingTable
    servers: Mapping[str, ServerConfig]
    fast: FastPath
    auth: AuthGate | None = None  # inbound OAuth (docs/auth.md); None when off
    # Envoy enforces rate limits (router/rate_limits.py): say which session and id a request to
    # the broker is, as routed calls always do (decision.forward).
    rate_limited: bool = False
    capability_variants: bool = True  # gateway.capability_variants (router/modern_exchange.py)

    @classmethod
    def of(cls, config: GatewayConfig, previous: Snapshot | None = None) -> Snapshot:
        servers = {s.name: s for s in config.enabled_servers() if s.transport == "http"}
        gate = AuthGate.of(config, previous.auth if previous is not None else None)
        return cls(
            RoutingTable.from_config(config), servers, FastPath.of(config), gate,
            rate_limited=config.gateway.rate_limits.enabled,
            capability_variants=config.gateway.capability_variants,
        )


class Router:
    """What the servicer needs: the current snapshot, the tokens, the backend sessions."""

    def __init__(
        self,
        config: GatewayConfig,
        tokens: SessionTokens,
        backends: BackendSessions,
        request_states: RequestStateSeal | None = None,
    ) -> None:
        self.snapshot = Snapshot.of(config)
        # Seals an upstream's requestState for a modern client (router/modern_exchange.py); the
        # broker opens it on the retry, so serve.py hands both the same one.
        self.request_states = request_states or RequestStateSeal(session_keys(config.gateway.sessions))
        self.tokens = tokens
        self.backends = backends
        self.in_flight = InFlightCalls()  # what a client's notifications/cancelled is routed by
        # Seals the mark Envoy's access log reports an SSE answer by if its client leaves. Its key
        # comes from the session keys, so the router replica Envoy's access log reaches (any of
        # them, or this one restarted) opens marks another one sealed.
        self.marks = CallMarks(tokens.derived_key(b"access-log call marks"))

    def reload(self, config: GatewayConfig) -> None:
        self.snapshot = Snapshot.of(config, self.snapshot)


# ---------------------------------------------------------------------------------------------
# The servicer


class Exchange(ModernCalls):
    """One HTTP request's ext_proc conversation."""

    __slots__ = (
        "answer_began", "backend_id", "extend", "headers", "need", "rewrite", "router", "tagger", "upstream_id"
    )

    def __init__(self, router: Router, extend: Callable[[float], Awaitable[None]]) -> None:
        self.router = router
        # Asks Envoy to wait longer for the reply being prepared (override_message_timeout).
        self.extend = extend
        self.headers: dict[str, str] = {}
        self.need: NeedsBackend | None = None
        self.backend_id: str | None = None
        # Set when the answer's body streams through us to tag server→client request ids.
        self.tagger: SseIdTagger | None = None
        # Set once the routed call's answer has begun (its headers passed us): from then on
        # Envoy ending our stream is no sign of the client leaving before the answer.
        self.answer_began = False
        # Set for a call whose answer's messages are rewritten (router/modern_clients.py).
        self.rewrite: Rewrite | None = None
        # The id the upstream saw when it is not the client's (a modern client's call on the
        # shared backend session): what a cancellation must name.
        self.upstream_id: str | None = None

    async def abandoned(self) -> None:
        """Envoy ended our stream before the routed call's answer began: its client left
        while the answer was pending (a JSON answer, or an SSE one whose headers had not come).
        A modern client's answer streams through us whole, so for it this is any time before
        the answer's end (`_modern_abandoned`)."""
        need, backend_id = self.need, self.backend_id
        if need is None or need.follow_up or backend_id is None:
            return
        if need.modern:
            await self._modern_abandoned(need, backend_id)
            return
        if self.answer_began:
            return
        self.router.in_flight.finished(need.claims.session_id, need.request_id)
        await trio_asyncio.trio_as_aio(self.router.backends.cancel_abandoned)(need, backend_id)

    async def on_request_headers(self, message: pb.HttpHeaders) -> pb.ProcessingResponse:
        self.headers = headers_of(message)
        if message.end_of_stream and self.headers.get(":method") == "POST":
            # A POST without a body never reaches the body phase: decide now.
            return await self._decide(b"", phase="request_headers")
        removed = client_internal_headers(self.headers)
        return pb.ProcessingResponse(
            request_headers=pb.HeadersResponse(
                response=pb.CommonResponse(
                    header_mutation=header_mutation(remove_headers=removed),
                    clear_route_cache=bool(removed),
                )
            )
        )

    async def on_request_body(self, message: pb.HttpBody) -> pb.ProcessingResponse:
        return await self._decide(message.body, phase="request_body")

    async def _decide(self, body: bytes, *, phase: str) -> pb.ProcessingResponse:
        seal = self.headers.get(SEAL_HEADER)
        if seal is not None:  # Envoy's Lua filter, about a modern fast call's answer
            return self._seal_answer(seal, body)
        snapshot = self.router.snapshot
        if is_modern_request(self.headers):
            decision: RoutingDecision = route_modern(self.headers, body, snapshot.table)
        else:
            decision = route_request(self.headers, body, snapshot.table, self.router.tokens)
        if isinstance(decision, Cancels):
            decision = self._cancellation_target(decision, snapshot)
        if isinstance(decision, ToBroker):
            if phase == "request_headers":
                return pb.ProcessingResponse(
                    request_headers=pb.HeadersResponse(
                        response=pb.CommonResponse(
                            header_mutation=header_mutation(remove_headers=decision.remove_headers)
                        )
                    )
                )
            return self._to_broker(decision) if snapshot.rate_limited else BODY_CONTINUE
        principal = None
        if snapshot.auth is not None:
            # What goes to the broker is checked there; what goes anywhere else, here.
            checked = await self._authorize(snapshot.auth, decision)
            if isinstance(checked, Reply):
                return immediate(checked)
            principal = checked
        if isinstance(decision, Reply):
            return immediate(decision)
        if decision.modern:
            return await self._decide_modern(decision, snapshot, principal)
        backends = self.router.backends
        # An upstream that keeps no sessions (learnt at discovery) gets the call without one.
        mode = backends.mode_of(decision)
        backend_id: str | None = None
        try:
            if mode is None or not mode.stateless:
                backend_id = backends.known_backend(decision)
                if backend_id is None:
                    backend_id = await trio_asyncio.trio_as_aio(backends.lookup)(decision)
                if backend_id is None and decision.follow_up:
                    # An answer for a backend session that no longer exists: nobody is waiting.
                    return immediate(_no_backend_for_answer(decision))
                if backend_id is None:
                    # A first call initialises a backend session: give Envoy the server's timeout.
                    await self.extend(self._timeout_of(decision))
                    backend_id = await trio_asyncio.trio_as_aio(backends.backend_for)(decision)
            if mode is not None and mode.modern and not decision.follow_up:
                meta = await trio_asyncio.trio_as_aio(backends.modern_meta)(decision)
                decision = replace(decision, body=body_with_meta(decision.body, meta))
        except NoSessionNeeded as learnt:
            # Learnt on this call (the router runs without the supervisor's word): sent again.
            mode, backend_id = learnt.mode, None
            if mode.modern and not decision.follow_up:
                try:
                    meta = await trio_asyncio.trio_as_aio(backends.modern_meta)(decision)
                except (SessionGone, SessionStoreUnavailable) as error:
                    return immediate(*_failure_reply(error, decision))
                decision = replace(decision, body=body_with_meta(decision.body, meta))
        except (SessionGone, BackendUnavailable, SessionStoreUnavailable) as error:
            return immediate(*_failure_reply(error, decision))
        credential = await self._credential(decision, snapshot)
        if credential is None:
            return immediate(*_failure_reply(BackendUnavailable(), decision))
        if credential.value != decision.upstream.authorization:  # an OAuth access token
            decision = replace(decision, upstream=replace(decision.upstream, authorization=credential.value))
        self.need, self.backend_id = decision, backend_id
        if not decision.follow_up:
            self.router.in_flight.started(
                decision.claims.session_id, decision.request_id, decision.upstream.server
            )
        mutations = forward(decision, backend_id)
        if mode is not None and mode.modern:
            if not decision.follow_up:
                # An InputRequiredResult needs a client that can be asked: the broker asks such
                # a client (server→client requests); for any other it becomes an error.
                if await self._askable(decision.claims.session_id):
                    self.router.in_flight.finished(decision.claims.session_id, decision.request_id)
                    self.need = None
                    return self._to_broker(ToBroker(decision.remove_headers, decision.request_id))
                self.rewrite = missing_input_capability(lambda capability: False)
            mutations = to_modern_upstream(mutations, decision, mode.protocol_version)
        reply = to_upstream(mutations)
        if await self._fast_path_may_apply(decision, snapshot.fast, mode):
            self._hand_to_fast_path(reply, decision, backend_id, snapshot, principal, credential)
        return reply

    def _to_broker(self, decision: ToBroker) -> pb.ProcessingResponse:
        """On to the broker, telling Envoy's rate limits the request's session (only a verified
        one: an unknown token gets no bucket, and the broker answers it 404) and its id."""
        found: list[tuple[str, str]] = []
        token = self.headers.get(SESSION_HEADER)
        if token and self.router.tokens.verify(token) is not None:
            found.append((SESSION_KEY_HEADER, token))
        if decision.request_id is not None:
            found.append((REQUEST_ID_HEADER, request_id_text(decision.request_id)))
        if not found:
            return BODY_CONTINUE
        mutation = header_mutation(tuple(found))
        return pb.ProcessingResponse(
            request_body=pb.BodyResponse(response=pb.CommonResponse(header_mutation=mutation))
        )

    async def _credential(self, need: NeedsBackend, snapshot: Snapshot) -> Credential | None:
        """The upstream's Authorization for this call: its fixed credential, or its OAuth
        access token (fetched in Trio only when none is held or it is due). None: no token."""
        server = snapshot.servers.get(need.upstream.server)
        if server is None or server.oauth is None:
            return Credential(need.upstream.authorization)
        credential = credential_nowait(server)
        if credential is not None:
            return credential
        try:
            fetched: Credential = await trio_asyncio.trio_as_aio(upstream_credential)(server)
            return fetched
        except UpstreamError as error:
            _log.warning("no access token for a routed call", server=server.name, reason=error.message)
            return None

    async def _authorize(self, gate: AuthGate, decision: NeedsBackend | Reply) -> Principal | Reply:
        """The bearer token (401 without a valid one), then the tool's rule (403): a call the
        token may not make is refused here, never forwarded."""
        request_id = decision.request_id if isinstance(decision, NeedsBackend) else _reply_id(decision)
        authorization = self.headers.get("authorization")
        outcome = gate.check_cached(authorization, request_id)
        if isinstance(outcome, NeedsKeys):  # an unknown key id, or stale keys: fetch (in Trio)
            outcome = await trio_asyncio.trio_as_aio(gate.authenticate)(authorization, request_id)
        if isinstance(outcome, Principal) and isinstance(decision, NeedsBackend) and decision.exposed_name:
            outcome = gate.refuse_use(outcome, decision.exposed_name, request_id) or outcome
        if isinstance(outcome, Refusal):
            return Reply(outcome.status, outcome.body, outcome.headers)
        return outcome

    async def _fast_path_may_apply(
        self, need: NeedsBackend, fast: FastPath, mode: UpstreamMode | None = None
    ) -> bool:
        """Whether Envoy may apply this decision to the session's next calls by itself: a
        routed call (not a follow-up) of a client that cannot be asked anything (the SSE answers
        of those carry requests whose ids the router tags, so they always pass through it), to
        an upstream of a handshake revision (the Lua filter cannot add a modern call's `_meta`;
        a stateless one's decision simply has no backend session)."""
        if not fast.enabled or need.follow_up or need.method not in ROUTED_METHODS:
            return False
        if mode is not None and mode.modern:
            return False
        if LEARN_HEADER not in self.headers:
            return False  # no Lua filter asked (not our bootstrap, or a body it leaves to us)
        backends, sid = self.router.backends, need.claims.session_id
        askable = backends.askable_nowait(sid)
        if askable is None:
            askable = await trio_asyncio.trio_as_aio(backends.askable)(sid)
        return not askable

    def _hand_to_fast_path(
        self,
        reply: pb.ProcessingResponse,
        need: NeedsBackend,
        backend_id: str | None,
        snapshot: Snapshot,
        principal: Principal | None,
        credential: Credential,
    ) -> None:
        claims, upstream = need.claims, need.upstream
        now = time.time()
        lifetime = snapshot.fast.lifetime_ms(claims.issued_at, now)
        # With inbound OAuth, Envoy keys the decision on the Authorization value too, and never
        # keeps it past the token's `exp` (an absolute bound: the answer may come much later).
        # Likewise the upstream's own access token: Envoy stops sending it when the router would
        # fetch its successor (before it expires), and the next call takes the new one.
        lifetime, not_after_ms = lifetime_within(lifetime, decision_expiries(principal, credential), now)
        if lifetime <= 0:
            return
        # The same values `forward` set on this call, for Envoy to set on the next ones.
        decision = Decision(
            server=upstream.server,
            routed_name=need.routed_name,
            backend_id=backend_id or "",
            authority=upstream.authority,
            path=upstream.path,
            authorization=upstream.authorization or "",
            mark=self.router.marks.seal_session(upstream.server, claims.session_id, claims.protocol_version),
            lifetime_ms=lifetime,
            replay_timeout_ms=int(2 * self._timeout_of(need) * 1000),
            not_after_ms=not_after_ms,
        )
        write_decision(reply.dynamic_metadata, METADATA_NAMESPACE, decision, snapshot.fast.generation)

    def _cancellation_target(self, cancels: Cancels, snapshot: Snapshot) -> NeedsBackend | ToBroker:
        """The upstream running the cancelled request, if a routed call of this session has that
        id; else the broker (it cancels the calls it forwards itself)."""
        server = self.router.in_flight.server_of(cancels.claims.session_id, cancels.request_id)
        upstream = snapshot.table.server(server) if server is not None else None
        if upstream is None or upstream.via_broker:
            return cancels.to_broker()
        return cancels.follow_up(upstream)

    async def on_response_headers(self, message: pb.HttpHeaders) -> pb.ProcessingResponse:
        need, backend_id = self.need, self.backend_id
        if need is None:
            return RESPONSE_HEADERS_CONTINUE  # the broker's answer: its own session ids
        headers = headers_of(message)
        answer = judge_answer(headers, need, backend_id)
        streams_on = answer is Answer.FROM_UPSTREAM and headers.get("content-type", "").startswith(
            EVENT_STREAM
        )
        if not streams_on and not need.follow_up:
            # Answered whole (JSON, a replay, an error): the call is over, nothing to cancel.
            self.router.in_flight.finished(need.claims.session_id, need.request_id)
        self.answer_began = True
        if answer is Answer.FROM_UPSTREAM and headers.get(":status") == "401" and self._credential_refused(need):
            # The upstream's 401 is about the gateway's token, not the client's: a JSON-RPC
            # error, the session kept; the next call carries a new token.
            failed = BackendUnavailable()
            return immediate(modern_failure(failed, need)) if need.modern else immediate(*_failure_reply(failed, need))
        if need.modern:
            answered = self._modern_response(answer, need, headers, backend_id)
            return answered if answered is not None else await self._replay(need, backend_id or "")
        if answer is Answer.BACKEND_SESSION_EXPIRED and need.follow_up:
            # The session that asked is gone with the upstream's restart; a new one never asked.
            return immediate(_no_backend_for_answer(need))
        if answer is Answer.BACKEND_SESSION_EXPIRED and backend_id is not None:
            return await self._replay(need, backend_id)
        if answer is Answer.NOT_FROM_UPSTREAM:
            # Envoy could not deliver the call (upstream down, route not there yet): a JSON-RPC
            # error with the request id, never a plain-text 503 or somebody else's 404.
            _log.warning(
                "routed call not answered by its upstream",
                server=need.upstream.server,
                status=headers.get(":status"),
            )
            return immediate(*_failure_reply(BackendUnavailable(), need))
        mutation = rewrite_response_headers(headers, need.gateway_session)
        reply = pb.ProcessingResponse(
            response_headers=pb.HeadersResponse(
                response=pb.CommonResponse(
                    header_mutation=header_mutation(mutation.set_headers, mutation.remove_headers)
                )
            )
        )
        if streams_on:
            # Envoy's Lua filter watches an SSE answer for a list change told inside it and has
            # the broker re-list this upstream before passing that event on (envoy/fast_path.lua).
            reply.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields[
                ANSWERING_KEY
            ].string_value = need.upstream.server
        if streams_on and not need.follow_up:
            # From here on the answer streams past us: if its client leaves, Envoy's access
            # logger reports this mark (router/accesslog.py) and the call is cancelled upstream.
            call = MarkedCall(
                need.upstream.server,
                need.claims.session_id,
                need.claims.protocol_version,
                need.request_id,
            )
            mark = self.router.marks.seal(call)
            if mark is not None:
                mark_call(reply.dynamic_metadata, mark)
        if self.rewrite is not None and answer is Answer.FROM_UPSTREAM:
            # A modern upstream's answer to a legacy client: an input_required result becomes
            # an error (router/modern_clients.py).
            self._modern_answer(reply, need, headers.get("content-type", ""))
        elif await self._may_carry_server_requests(need, headers):
            # Only here does the body pass through Python: JSON answers and clients that
            # cannot be asked anything stay on Envoy's untouched stream (body mode NONE).
            self.tagger = SseIdTagger(need.upstream.server)
            reply.mode_override.CopyFrom(STREAM_RESPONSE_BODY)
            if "content-length" in headers:  # tagged ids change the length: send it chunked
                reply.response_headers.response.header_mutation.remove_headers.append(
                    "content-length"
                )
        return reply

    async def _may_carry_server_requests(
        self, need: NeedsBackend, headers: Mapping[str, str]
    ) -> bool:
        if need.follow_up or not headers.get("content-type", "").startswith(EVENT_STREAM):
            return False
        return await self._askable(need.claims.session_id)

    async def _askable(self, sid: str) -> bool:
        backends = self.router.backends
        askable = backends.askable_nowait(sid)
        if askable is None:
            askable = await trio_asyncio.trio_as_aio(backends.askable)(sid)
        return askable

    def on_response_body(self, message: pb.HttpBody) -> pb.ProcessingResponse:
        if self.tagger is None:
            return pb.ProcessingResponse(response_body=pb.BodyResponse(response=CONTINUE))
        tagged = self.tagger.feed(message.body, message.end_of_stream)
        if message.end_of_stream and self.need is not None and not self.need.follow_up:
            self.router.in_flight.finished(self.need.claims.session_id, self.need.request_id)
        return pb.ProcessingResponse(
            response_body=pb.BodyResponse(
                response=pb.CommonResponse(body_mutation=pb.BodyMutation(body=tagged))
            )
        )

    async def _replay(self, need: NeedsBackend, stale: str) -> pb.ProcessingResponse:
        session_header = () if need.modern else ((SESSION_HEADER, need.gateway_session),)
        # Re-initialise and the whole call again: twice the server's timeout at most.
        await self.extend(2 * self._timeout_of(need))
        try:
            replayed = await trio_asyncio.trio_as_aio(self.router.backends.replay)(need, stale)
        except (SessionGone, BackendUnavailable, SessionStoreUnavailable) as error:
            return immediate(modern_failure(error, need)) if need.modern else immediate(*_failure_reply(error, need))
        body = replayed.body
        if self.rewrite is not None:
            body = rewrite_whole(self.rewrite, need.upstream.server, body, replayed.content_type)
        reply = Reply(replayed.status, body, (("content-type", replayed.content_type),))
        # Envoy's Lua fast path never sees this answer (a local reply in the response phase skips
        # the filters before the ext_proc), so it keeps nothing of the stale decision it was
        # handed with the request; the session's next call is the router's again.
        return immediate(reply, session_header)

    def _credential_refused(self, need: NeedsBackend) -> bool:
        """The upstream refused the credential of a routed call. True for an OAuth token (it
        is dropped, so the session's next call carries a new one; the fast path kept nothing)."""
        server = self.router.snapshot.servers.get(need.upstream.server)
        if server is None or server.oauth is None:
            return False
        credential_rejected(server, need.upstream.authorization)
        return True

    def _timeout_of(self, need: NeedsBackend) -> float:
        server = self.router.snapshot.servers.get(need.upstream.server)
        return server.timeout_seconds if server is not None else 30.0


def _reply_id(reply: Reply) -> Any:
    """The request id an immediate JSON-RPC answer carries (for a 401 that replaces it)."""
    try:
        return json.loads(reply.body).get("id")
    except (ValueError, AttributeError):
        return None


def _no_backend_for_answer(need: NeedsBackend) -> Reply:
    return reply_error(
        need.request_id,
        -32600,
        f"Invalid Request: no session with {need.upstream.server!r} to take this message",
        status=400,
    )


def _failure_reply(
    error: Exception, need: NeedsBackend
) -> tuple[Reply, tuple[tuple[str, str], ...]]:
    """The answer to a routed call that could not be completed, and the headers to add to it."""
    if isinstance(error, SessionGone):
        return session_not_found(need.request_id), ()
    if isinstance(error, SessionStoreUnavailable):
        _log.warning("session store unavailable", server=need.upstream.server)
        return store_unavailable(need.request_id), ()
    # The gateway session is fine; only this upstream is not: the client keeps its session.
    return upstream_unavailable(need), ((SESSION_HEADER, need.gateway_session),)
