"""Calls the broker forwards to upstreams that keep no session: MCP 2026-07-28 ("modern")
upstreams, and handshake-era ones in stateless mode (upstream/modern.py `UpstreamMode`).

No backend session is opened for them: each call is one POST, a modern one with the `_meta`
envelope (the revision, and the capabilities and clientInfo of the calling client as the store
has them: a legacy client's initialize, or the shared session of a modern client's feature set).

A modern upstream that needs input mid-call answers `InputRequiredResult` instead of asking on
the call's stream. What happens then depends on who called:

- a modern client (`drive=False`): the answer goes back as it came; broker/input_required.py
  seals its `requestState` before the client sees it;
- a legacy client (`drive=True`): the gateway drives the rounds for it. Each input request is
  put to the client as a server→client request on the call's SSE response, through the same
  `relay` as a legacy upstream's mid-call requests (so it gets a gateway id, and the client's
  answer comes back through `Forwarder.answer_client`); the answers go back to the upstream in
  `inputResponses` with the upstream's `requestState`, which the client never sees, until the
  upstream gives its final result. A client that did not declare the capability an input
  request needs gets a JSON-RPC error naming it, and the call ends there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mcp_gateway import __version__
from mcp_gateway.broker.client_requests import Answer
from mcp_gateway.broker.client_session import ClientSession
from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import get_logger
from mcp_gateway.protocol import ErrorCode
from mcp_gateway.sessions.store import LOG_LEVEL, SessionStore
from mcp_gateway.upstream import HttpUpstreamClient, UpstreamError
from mcp_gateway.upstream.modern import LOG_LEVEL_META, MODERN_VERSION, UpstreamMode, with_meta

log = get_logger("mcp_gateway.broker")

JsonObject = dict[str, Any]
Relay = Callable[[Answer, JsonObject], Awaitable[None]]

INPUT_REQUIRED = "input_required"
# What each embedded input request asks of the client, and the capability it needs.
INPUT_CAPABILITY = {"elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}
# The SDK client's own bound on rounds (mcp.client._input_required): a loop past it is a
# misbehaving upstream, not a conversation.
MAX_ROUNDS = 10


def input_required(answer: JsonObject) -> JsonObject | None:
    """The `InputRequiredResult` in a response message, or None."""
    result = answer.get("result")
    if isinstance(result, dict) and result.get("resultType") == INPUT_REQUIRED:
        return result
    return None


def missing_capability(requests: JsonObject, capabilities: Any) -> str | None:
    """The first client capability the input requests need that `capabilities` lacks."""
    declared = capabilities if isinstance(capabilities, dict) else {}
    for request in requests.values():
        method = request.get("method") if isinstance(request, dict) else None
        needed = INPUT_CAPABILITY.get(method) if isinstance(method, str) else None
        if needed is None or needed not in declared:
            return needed or str(method)
    return None


def error_message(request_id: Any, code: int, message: str, data: Any = None) -> JsonObject:
    error: JsonObject = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class StatelessUpstreams:
    def __init__(self, store: SessionStore, http_client: Callable[[str], Any]) -> None:
        self.store = store
        self._http_client = http_client  # the supervisor's per-upstream httpx client

    async def forward(
        self,
        session: ClientSession,
        server: ServerConfig,
        mode: UpstreamMode,
        message: JsonObject,
        relay: Relay,
        *,
        drive: bool,
    ) -> JsonObject:
        """The response message to `message` (the upstream's, or an error message of ours for an
        upstream that failed or took longer than its `timeoutSeconds`, all rounds included)."""
        call_id = message.get("id")
        client = await self._client(session, server, mode)
        level = (await self.store.client(session.sid) or {}).get(LOG_LEVEL) if client.modern else None
        if isinstance(level, str):
            # A legacy client's logging/setLevel: a modern upstream takes it on each request.
            params = message.get("params")
            message = {**message, "params": with_meta(params if isinstance(params, dict) else None, {LOG_LEVEL_META: level})}

        async def on_message(incoming: JsonObject) -> None:
            await relay(client.respond, incoming)

        try:
            with trio.fail_after(server.timeout_seconds):
                return await self._rounds(session, server, client, message, on_message, relay, drive)
        except UpstreamError as exc:
            log.warning("forwarded request failed", server=server.name, method=message.get("method"), reason=exc.message)
            if exc.rpc_code is not None:
                return error_message(call_id, exc.rpc_code, exc.message, exc.rpc_data)
            return error_message(call_id, ErrorCode.INTERNAL_ERROR, f"upstream {server.name} is unavailable")
        except trio.TooSlowError:
            text = f"upstream {server.name} did not answer within {server.timeout_seconds:g}s"
            return error_message(call_id, ErrorCode.INTERNAL_ERROR, text)
        finally:
            await client.aclose(end_session=False)  # closes only an HTTP client of its own

    async def _rounds(
        self,
        session: ClientSession,
        server: ServerConfig,
        client: HttpUpstreamClient,
        message: JsonObject,
        on_message: Callable[[JsonObject], Awaitable[None]],
        relay: Relay,
        drive: bool,
    ) -> JsonObject:
        answer = await client.request_raw(message, on_message)
        for _ in range(MAX_ROUNDS):
            asked = input_required(answer) if drive else None
            if asked is None:
                return answer
            responses = await self._ask_client(session, asked, relay, message.get("id"))
            if "error" in responses:
                return responses
            params = {k: v for k, v in message["params"].items() if k not in ("inputResponses", "requestState")}
            params["inputResponses"] = responses["result"]
            if isinstance(asked.get("requestState"), str):
                params["requestState"] = asked["requestState"]
            answer = await client.request_raw({**message, "params": params}, on_message)
        text = f"upstream {server.name} asked for input more than {MAX_ROUNDS} times"
        return error_message(message.get("id"), ErrorCode.INTERNAL_ERROR, text)

    async def _client(self, session: ClientSession, server: ServerConfig, mode: UpstreamMode) -> HttpUpstreamClient:
        # The caller's declared capabilities are what a modern upstream may ask for.
        client = await self.store.client(session.sid) or {}
        upstream = HttpUpstreamClient(
            server,
            http=self._http_client(server.name),
            protocol_version=mode.protocol_version,
            client_info=client.get("clientInfo") or {"name": "mcp-gateway", "version": __version__},
            capabilities=client.get("capabilities") or {},
        )
        upstream.protocol_version = mode.protocol_version  # no session: nothing to attach to
        upstream.modern = mode.protocol_version == MODERN_VERSION
        return upstream

    async def _ask_client(self, session: ClientSession, asked: JsonObject, relay: Relay, call_id: Any) -> JsonObject:
        """Put each input request to the legacy client; {"result": inputResponses} once all
        are answered, or the error message that ends the call."""
        requests = asked.get("inputRequests")
        if not isinstance(requests, dict) or not requests:
            # Only state and nothing to ask: the next round goes at once with no responses.
            return {"result": {}}
        client = await self.store.client(session.sid) or {}
        missing = missing_capability(requests, client.get("capabilities"))
        if missing is not None:
            return error_message(
                call_id,
                ErrorCode.MISSING_REQUIRED_CLIENT_CAPABILITY,
                f"Missing required client capability: {missing} (the upstream asks for it to answer this call)",
                {"requiredCapabilities": {missing: {}}},  # a ClientCapabilities object
            )
        answers: dict[str, JsonObject] = {}
        done = trio.Event()

        def answered_by(key: str) -> Answer:
            async def respond(response: JsonObject) -> None:
                answers[key] = response
                if len(answers) == len(requests):
                    done.set()

            return respond

        for key, request in requests.items():
            shown = {"jsonrpc": "2.0", "id": key, "method": request.get("method"), "params": request.get("params") or {}}
            await relay(answered_by(key), shown)
        await done.wait()
        for response in answers.values():
            error = response.get("error")
            if error is not None:
                # The client refused (or could not be asked: a JSON answer has no stream).
                code = error.get("code") if isinstance(error, dict) else None
                text = error.get("message") if isinstance(error, dict) else None
                return error_message(
                    call_id,
                    code if isinstance(code, int) else ErrorCode.INTERNAL_ERROR,
                    text if isinstance(text, str) else "the client refused the upstream's request",
                )
        return {"result": {key: response.get("result") for key, response in answers.items()}}


__all__ = ["INPUT_CAPABILITY", "INPUT_REQUIRED", "StatelessUpstreams", "input_required", "missing_capability"]
