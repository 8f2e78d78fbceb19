"""Multi-round-trip results (MCP 2026-07-28) for modern clients: `InputRequiredResult`.

In 2026-07-28 a server that needs input mid-request answers an `InputRequiredResult`
(`resultType: "input_required"`, `inputRequests` keyed by id, an optional opaque
`requestState`); the client retries the same request with `inputResponses` and that state.
A modern client's routed call reaches one of two kinds of upstream:

- a modern upstream answers `InputRequiredResult` itself. The client gets its `inputRequests`
  as they are and, in place of its `requestState`, a token sealed by the gateway
  (sessions/request_state.py: bound to the upstream, the method, the prefixed name the client
  called, the caller's principal, and an expiry). A retry's token is opened for exactly that
  binding, so a state that was edited, expired, or minted by another upstream or for another
  tool is refused (-32602, HTTP 400) even when the name would route elsewhere; the upstream
  gets its own state back with the client's `inputResponses`.
- a legacy upstream (initialize handshake) asks on the call's SSE stream instead
  (elicitation/create, sampling/createMessage, roots/list). The gateway holds that call in
  this process (`HeldCall`) and answers the client an `InputRequiredResult` with what the
  upstream asked and a sealed `kind="continuation"` state naming the held call; the retry's
  `inputResponses` answer the upstream's pending requests and the call goes on: its final
  result, or another `InputRequiredResult` if the upstream asks again. Progress goes to
  whichever HTTP response of the call is current. An HTTP upstream gets the held call on a
  backend session of its own, whose GET stream is the call's too (held_sessions.py: an
  upstream may ask there, and keeps per session what one client told it). Held calls are bounded in number
  (`MAX_HELD`) and time (`request_state_ttl_seconds`, and the upstream's `timeoutSeconds` as
  for any forwarded call); one that expires, or whose client closes a round's response before
  its outcome, is cancelled, which cancels its upstream request.
  A retry must reach the process that holds the call: elsewhere it is -32602 (docs/broker.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from mcp_gateway.broker.client_requests import Answer
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.broker.core import ROUTED_METHODS, BrokerCore, Emit
from mcp_gateway.broker.forward import Asker
from mcp_gateway.broker.held_sessions import held_call_session
from mcp_gateway.broker.stateless_upstreams import INPUT_CAPABILITY, INPUT_REQUIRED
from mcp_gateway.config import VirtualServer
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import (
    ErrorCode,
    ProtocolError,
    Request,
    RequestId,
    error_response,
    replace_id,
    result_response,
)
from mcp_gateway.sessions.request_state import OpenedState, RequestBinding
from mcp_gateway.sessions.store import SessionStoreUnavailable
from mcp_gateway.upstream import UpstreamError
from mcp_gateway.upstream.catalog import ELICITATION_FORM, ELICITATION_URL, ROOTS, SAMPLING
from mcp_gateway.upstream.modern import mode_of

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]
# Calls held for modern clients' retries, per process.
MAX_HELD = 1024
# Declared client features that let a legacy upstream ask during a call.
ASKING_FEATURES = frozenset({ROOTS, SAMPLING, ELICITATION_FORM, ELICITATION_URL})
RETRY_KEYS = ("inputResponses", "requestState")
ANSWER_SECONDS = 5.0  # delivering one of the client's answers to the upstream that asked


def expired(request_id: RequestId | None) -> ProtocolError:
    """The answer to a continuation this process does not hold (ended, expired, or held by
    another replica): the revision's answer to a state that does not verify."""
    return ProtocolError(
        ErrorCode.INVALID_PARAMS,
        "requestState is invalid or expired",
        id=request_id,
        data={"reason": "expired or unknown: the call it continues ended, or is held by another gateway process"},
    )


def seal_answer(answer: bytes, seal: Callable[[str], str]) -> bytes:
    """An upstream's answer as the client gets it: an InputRequiredResult's `requestState`
    replaced by `seal(state)`; any other answer unchanged."""
    try:
        message = json.loads(answer)
    except ValueError:
        return answer
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, dict) or result.get("resultType") != INPUT_REQUIRED:
        return answer
    state = result.get("requestState")
    if state is None:
        return answer
    if not isinstance(state, str):
        return error_response(message.get("id"), ErrorCode.INTERNAL_ERROR, "the upstream's requestState is not a string")
    try:
        result["requestState"] = seal(state)
    except ValueError as exc:  # longer than the seal takes
        return error_response(message.get("id"), ErrorCode.INTERNAL_ERROR, str(exc))
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def without_retry_keys(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if not params or not any(key in params for key in RETRY_KEYS):
        return params
    return {k: v for k, v in params.items() if k not in RETRY_KEYS}


def progress_token(params: dict[str, Any] | None) -> Any:
    meta = (params or {}).get("_meta")
    return meta.get("progressToken") if isinstance(meta, dict) else None


@dataclass(slots=True)
class _Ask:
    request: JsonObject  # {"method", "params"}: an InputRequest as the client gets it
    upstream_id: RequestId
    answer: Answer


class HeldCall:
    """A legacy upstream's call held between a modern client's rounds."""

    def __init__(self, key: str, seal: Callable[[], str], first_progress_token: Any) -> None:
        self.key = key
        # Seals a requestState naming this call: a new token each round (a fresh nonce), as a
        # server gives a new state per round; every one of them names the same held call.
        self._seal = seal
        self._first_token = first_progress_token
        self._asks: dict[str, _Ask] = {}
        self._ask_ids = itertools.count(1)
        self._answer: bytes | None = None
        self._ended = False
        self._changed = trio.Event()
        self.delivered = trio.Event()
        self._emit: Emit | None = None
        self._progress_token: Any = None
        self._waiting = False
        # The upstream call's scope (entered by its task): cancelled when the client leaves
        # before a round's outcome (`outcome`).
        self.scope = trio.CancelScope()

    # -- the upstream's side (the held call's task) -------------------------------------------

    async def ask(self, incoming: JsonObject, answer: Answer) -> None:
        """An upstream's request during the call: kept for the client's next round."""
        method = incoming.get("method")
        if method == "ping":
            await answer({"jsonrpc": "2.0", "id": incoming.get("id"), "result": {}})
            return
        if method not in INPUT_CAPABILITY:
            error = {"code": ErrorCode.METHOD_NOT_FOUND, "message": f"not relayed to a 2026-07-28 client: {method}"}
            await answer({"jsonrpc": "2.0", "id": incoming.get("id"), "error": error})
            return
        params = incoming.get("params")
        request = {"method": method, "params": params if isinstance(params, dict) else {}}
        self._asks[f"input-{next(self._ask_ids)}"] = _Ask(request, incoming["id"], answer)
        self._changed.set()

    async def emit(self, data: bytes) -> None:
        """A notification of the call (progress) to the current HTTP response, if any, under
        that request's progress token."""
        current = self._emit
        if current is None:
            return
        if self._progress_token is not None and self._progress_token != self._first_token:
            data = _with_progress_token(data, self._first_token, self._progress_token)
        # A response that has ended drops it; the next round's gets the rest.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await current(data)

    def finish(self, answer: bytes | None) -> None:
        if answer is not None:
            self._answer = answer
        self._ended = True
        self._changed.set()

    # -- the client's side (each round's HTTP request) ------------------------------------------

    async def resume(self, responses: Any, emit: Emit | None, request: Request) -> bytes:
        """A retry: its `inputResponses` to the upstream requests they answer, then the next
        outcome."""
        if self._waiting:
            raise ProtocolError(
                ErrorCode.INVALID_PARAMS, "requestState is already being answered by another request", id=request.id
            )
        if isinstance(responses, dict):
            for key, response in responses.items():
                ask = self._asks.pop(key, None) if isinstance(key, str) else None
                if ask is not None:
                    await _deliver(ask, response)
        return await self.outcome(emit, request)

    async def outcome(self, emit: Emit | None, request: Request) -> bytes:
        """Wait for the call's next outcome: its answer, or the upstream's pending requests."""
        self._waiting, self._emit = True, emit
        self._progress_token = progress_token(request.params)
        try:
            while True:
                if self._answer is not None:
                    self.delivered.set()
                    return replace_id(self._answer, request.id)
                if self._ended:
                    raise expired(request.id)
                if self._asks:
                    pending = {key: ask.request for key, ask in self._asks.items()}
                    result = {"resultType": INPUT_REQUIRED, "inputRequests": pending, "requestState": self._seal()}
                    return result_response(request.id, result)
                self._changed = trio.Event()
                await self._changed.wait()
        except trio.Cancelled:
            # The client closed this round's response before its outcome: nobody will retry,
            # so the upstream call is cancelled now, not at its TTL. A call whose outcome was
            # an InputRequiredResult is not: it awaits the client's retry (until its TTL).
            self.scope.cancel()
            raise
        finally:
            self._waiting, self._emit = False, None


class InputRequired:
    """The broker's side of multi-round-trip results for modern clients (see the module)."""

    def __init__(self, core: BrokerCore) -> None:
        self.core = core
        self._held: dict[str, HeldCall] = {}

    def binding(
        self, request: Request, virtual: VirtualServer | None, features: frozenset[str], principal: str
    ) -> RequestBinding | None:
        """What a state for this request is bound to: None when the name owns no upstream (the
        call is then answered as unknown, state or not)."""
        kind = ROUTED_METHODS.get(request.method)
        name = (request.params or {}).get(kind.id_field) if kind is not None else None
        if kind is None or not isinstance(name, str):
            return None
        owner = self.core._owner(kind, name, virtual, features)
        return RequestBinding(owner[0].name, request.method, name, principal) if owner is not None else None

    def opened(self, request: Request, binding: RequestBinding | None) -> OpenedState | None:
        """The request's state opened for `binding` (None: it carries none); ProtocolError
        (-32602) for one that does not open, or a continuation this process does not hold."""
        state = (request.params or {}).get("requestState")
        if state is None or binding is None:
            return None
        opened = self.core.request_state.open(state, binding, request_id=request.id)
        if opened.kind == "continuation" and opened.state not in self._held:
            raise expired(request.id)
        return opened

    async def call(
        self,
        request: Request,
        session: ClientSession,
        emit: Emit | None,
        *,
        virtual: VirtualServer | None,
        allowed: Callable[[str], bool] | None,
        features: frozenset[str],
        principal: str,
    ) -> bytes:
        """A modern client's tools/call, prompts/get or resources/read (envelope keys already
        removed from its params)."""
        core = self.core
        binding = self.binding(request, virtual, features, principal)
        opened = self.opened(request, binding)
        if opened is not None and opened.kind == "continuation":
            return await self._held[opened.state].resume(
                (request.params or {}).get("inputResponses"), emit, request
            )
        server = core.config.server(binding.server) if binding is not None else None
        mode = mode_of(server) if server is not None and server.transport == "http" else None
        if binding is not None and mode is not None and mode.modern:
            params = dict(request.params or {})
            if opened is not None:
                params["requestState"] = opened.state  # the upstream's own, as it minted it
            answer = await core.handle(
                Request(request.id, request.method, params), session, emit, virtual=virtual, allowed=allowed, can_ask=False
            )
            return seal_answer(answer, lambda state: core.request_state.seal(binding, state))
        # A legacy upstream: retry keys mean nothing to it (and a state for it would have been
        # a continuation).
        upstream_request = Request(request.id, request.method, without_retry_keys(request.params))
        if binding is None or not features & ASKING_FEATURES or len(self._held) >= MAX_HELD:
            if binding is not None and features & ASKING_FEATURES:
                log.warning("too many held calls: this one's upstream requests are refused", held=len(self._held))
            return await core.handle(upstream_request, session, emit, virtual=virtual, allowed=allowed, can_ask=False)
        held = self._hold(binding, progress_token(request.params))

        async def run(ask: Asker) -> bytes:
            if server is None or server.transport != "http":
                # A stdio/WebSocket link has no sessions: its requests come on the call's link.
                return await core.handle(upstream_request, session, held.emit, virtual=virtual, allowed=allowed, can_ask=ask)
            # A session of the call's own, whose GET stream is the call's (held_sessions.py).
            try:
                async with held_call_session(core, features, ask, held.emit) as own:
                    return await core.handle(upstream_request, own, held.emit, virtual=virtual, allowed=allowed, can_ask=ask)
            except SessionStoreUnavailable:
                return error_response(request.id, ErrorCode.INTERNAL_ERROR, "session store unavailable")

        core.nursery.start_soon(self._run, held, run)
        return await held.outcome(emit, request)

    def _hold(self, binding: RequestBinding, first_progress_token: Any) -> HeldCall:
        key = secrets.token_urlsafe(16)
        held = HeldCall(
            key, partial(self.core.request_state.seal, binding, key, kind="continuation"), first_progress_token
        )
        self._held[key] = held
        return held

    async def _run(self, held: HeldCall, run: Callable[[Asker], Awaitable[bytes]]) -> None:
        """The held call's task (in the broker's nursery): the upstream call, then its answer
        kept until a round delivers it; all of it within the state's lifetime."""
        ttl = self.core.config.gateway.sessions.request_state_ttl_seconds
        answer: bytes | None = None
        try:
            with held.scope, trio.move_on_after(ttl):
                answer = await run(held.ask)
                held.finish(answer)
                await held.delivered.wait()
        finally:
            del self._held[held.key]
            held.finish(answer)
        if answer is None and held.scope.cancel_called:
            log.info("client left before the held call's outcome: cancelled upstream", call=held.key[:8])
        elif answer is None:
            log.info("held call expired before the client's retry: cancelled upstream", call=held.key[:8])

    def __len__(self) -> int:
        return len(self._held)


async def _deliver(ask: _Ask, response: Any) -> None:
    """One of the client's input responses to the upstream request it answers (bounded)."""
    if isinstance(response, dict):
        message: JsonObject = {"jsonrpc": "2.0", "id": ask.upstream_id, "result": response}
    else:
        error = {"code": ErrorCode.INVALID_PARAMS, "message": "the client's input response is not an object"}
        message = {"jsonrpc": "2.0", "id": ask.upstream_id, "error": error}
    with trio.move_on_after(ANSWER_SECONDS):
        try:
            await ask.answer(message)
        except UpstreamError as exc:
            log.info("client's input response not delivered upstream", reason=exc.message)


def _with_progress_token(data: bytes, first: Any, current: Any) -> bytes:
    """A progress notification of the first round under the current round's token."""
    try:
        message = json.loads(data)
    except ValueError:
        return data
    params = message.get("params") if isinstance(message, dict) else None
    if not isinstance(params, dict) or params.get("progressToken") != first:
        return data
    params["progressToken"] = current
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


__all__ = ["ASKING_FEATURES", "MAX_HELD", "HeldCall", "InputRequired", "seal_answer", "without_retry_keys"]
