"""The hot-path look at a body: kind, method, id and routing name, nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import (
    ErrorResponse,
    Notification,
    Request,
    RequestId,
    Response,
)
from mcp_gateway.protocol._parse import ROUTING_PARAM, parse_message

PeekKind: TypeAlias = Literal["request", "notification", "response", "error", "batch"]
_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Peek:
    kind: PeekKind
    method: str | None
    id: RequestId | None
    # params.name for tools/call and prompts/get, params.uri for resources/read.
    name: str | None


def peek(data: bytes, limits: Limits = _DEFAULT_LIMITS, *, allow_batch: bool = False) -> Peek:
    """What the router needs to route a body. Raises the ProtocolError parse_message would."""
    message = parse_message(data, limits, allow_batch=allow_batch)
    if isinstance(message, list):
        return Peek("batch", None, None, None)
    if isinstance(message, Request):
        member = ROUTING_PARAM.get(message.method)
        name = message.params[member] if member is not None and message.params else None
        return Peek("request", message.method, message.id, name)
    if isinstance(message, Notification):
        return Peek("notification", message.method, None, None)
    if isinstance(message, Response):
        return Peek("response", None, message.id, None)
    assert isinstance(message, ErrorResponse)
    return Peek("error", None, message.id, None)
