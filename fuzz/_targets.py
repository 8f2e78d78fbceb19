"""The properties both fuzz targets check, shared so run.py's fallback checks the same."""

from __future__ import annotations

from typing import Any

from mcp_gateway.protocol import (
    Limits,
    Message,
    Notification,
    Peek,
    ProtocolError,
    Request,
    Response,
    parse_message,
    peek,
)

# Default limits, and small ones so that every limit is actually reached by short inputs.
LIMITS = (Limits(), Limits(max_body_bytes=512, max_depth=5, max_batch=3, max_string_length=16))
PROTOCOL_CODES = {-32700, -32600, -32601, -32602}


def outcome(function: Any, data: bytes, limits: Limits, allow_batch: bool) -> Any:
    """What a call gives: its result, or the (code, id, status) of its ProtocolError.
    Any other exception propagates: that is the crash the fuzzer looks for."""
    try:
        return function(data, limits, allow_batch=allow_batch)
    except ProtocolError as error:
        assert error.code in PROTOCOL_CODES, error
        assert error.http_status in (400, 413), error
        error.to_json()
        return (error.code, error.id, error.http_status)


def expected_peek(parsed: Message | list[Message]) -> Peek:
    if isinstance(parsed, list):
        return Peek("batch", None, None, None)
    if isinstance(parsed, Request):
        member = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
        name = parsed.params[member[parsed.method]] if parsed.method in member else None
        return Peek("request", parsed.method, parsed.id, name)  # type: ignore[index]
    if isinstance(parsed, Notification):
        return Peek("notification", parsed.method, None, None)
    if isinstance(parsed, Response):
        return Peek("response", None, parsed.id, None)
    return Peek("error", None, parsed.id, None)


def check_parse(data: bytes) -> None:
    for limits in LIMITS:
        for allow_batch in (False, True):
            outcome(parse_message, data, limits, allow_batch)


def check_peek_against_parse(data: bytes) -> None:
    for limits in LIMITS:
        for allow_batch in (False, True):
            parsed = outcome(parse_message, data, limits, allow_batch)
            peeked = outcome(peek, data, limits, allow_batch)
            expected = parsed if isinstance(parsed, tuple) else expected_peek(parsed)
            if peeked != expected:
                raise AssertionError(f"peek {peeked!r} != parse {expected!r} for {data!r}")
