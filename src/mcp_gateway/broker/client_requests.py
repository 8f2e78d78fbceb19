"""Server→client requests (sampling/createMessage, elicitation/create, roots/list, ping) that an
upstream sends during a call the broker forwards, relayed to the client that made the call.

Many upstreams (and many clients on one stdio/WebSocket link) can ask at the same time, each
with ids of its own, so the client sees each request under a gateway id unique in this process
(a random per-process mark plus a counter: two broker replicas never hand out the same id
either). The client's answer comes back as a POST (or a WebSocket frame) carrying that id; it
goes to the upstream that asked, with the upstream's own id, and only from the gateway session
the request was shown to.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mcp_gateway.protocol import RequestId

JsonObject = dict[str, Any]
# Sends a response message to the upstream that asked (its client's `respond`).
Answer = Callable[[JsonObject], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Outstanding:
    session_id: str
    upstream_id: RequestId
    answer: Answer


class ClientRequests:
    def __init__(self) -> None:
        self._mark = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._outstanding: dict[str, _Outstanding] = {}

    @contextmanager
    def for_call(self) -> Iterator[list[str]]:
        """The ids issued during one forwarded call; forgotten when the call ends (an upstream
        whose call is over no longer waits for an answer)."""
        issued: list[str] = []
        try:
            yield issued
        finally:
            for gateway_id in issued:
                self._outstanding.pop(gateway_id, None)

    def relay(
        self, session_id: str, request: JsonObject, answer: Answer, issued: list[str]
    ) -> JsonObject:
        """The upstream's request as the client must see it: the same, under a gateway id."""
        gateway_id = f"mcp-gateway-{self._mark}-{next(self._counter)}"
        self._outstanding[gateway_id] = _Outstanding(session_id, request["id"], answer)
        issued.append(gateway_id)
        return {**request, "id": gateway_id}

    def take(self, session_id: str, response: JsonObject) -> tuple[Answer, JsonObject] | None:
        """For a client's response: where it goes and the message with the upstream's id, or
        None when we did not issue that id to this session (then it is not ours to route)."""
        gateway_id = response.get("id")
        if not isinstance(gateway_id, str):
            return None
        outstanding = self._outstanding.get(gateway_id)
        if outstanding is None or outstanding.session_id != session_id:
            return None
        del self._outstanding[gateway_id]
        return outstanding.answer, {**response, "id": outstanding.upstream_id}

    def __len__(self) -> int:
        return len(self._outstanding)
