"""Bytes to JSON-RPC messages. The decisions live in _envelope; this decodes the values."""

from __future__ import annotations

from typing import Any

import msgspec

from mcp_gateway.protocol._envelope import Envelope, read_envelopes
from mcp_gateway.protocol._json import Member, decode_any
from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    Response,
)

_DEFAULT_LIMITS = Limits()


def parse_message(
    data: bytes, limits: Limits = _DEFAULT_LIMITS, *, allow_batch: bool = False
) -> Message | list[Message]:
    """Parse one HTTP body. Raises ProtocolError, and nothing else, for any bad input
    (TypeError if ``data`` is not bytes at all: that is a bug in the caller).

    ``allow_batch`` is for sessions on protocol revision 2025-03-26, the only one with batches.
    """
    envelopes = read_envelopes(data, limits, allow_batch)
    if isinstance(envelopes, list):
        return [_message(envelope) for envelope in envelopes]
    return _message(envelopes)


def _message(envelope: Envelope) -> Message:
    kind, request_id, method, _, payload = envelope
    if kind == "request":
        assert request_id is not None and method is not None
        return Request(request_id, method, _object(payload))
    if kind == "notification":
        assert method is not None
        return Notification(method, _object(payload))
    if kind == "response":
        assert request_id is not None
        return Response(request_id, _value(payload))
    code, message, raw_data = payload
    data = None if raw_data is None else decode_any(raw_data)
    return ErrorResponse(request_id, code, message, data)


def _object(members: dict[str, msgspec.Raw] | None) -> dict[str, Any] | None:
    if members is None:
        return None
    return {key: decode_any(raw) for key, raw in members.items()}


def _value(member: Member) -> Any:
    if isinstance(member, dict):
        return _object(member)
    if isinstance(member, list):
        return [decode_any(raw) for raw in member]
    return member
