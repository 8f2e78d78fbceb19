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
    decode_header_value,
    encode_header_value,
    parse_message,
    peek,
    replace_routing_name,
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


# Names the rewrite must be able to write: escapes, quotes, non-ASCII, separators, empty.
NEW_NAMES = ("tool", "", 'q"uote\\back', "caf\u00e9 \u2028\U0001f600", "a,b:c}]", "\x00\x1f")


def check_rewrite(data: bytes) -> None:
    """For any body that peeks as a routed request: replacing the routing name changes that
    value and nothing else the parser can see. Also: header values round-trip."""
    text = data.decode("utf-8", errors="replace")
    if decode_header_value(encode_header_value(text)) != text:
        raise AssertionError(f"header round trip failed for {text!r}")
    try:
        seen = peek(data)
        parsed = parse_message(data)
    except ProtocolError:
        return
    if seen.name is None:
        return
    new_name = NEW_NAMES[len(data) % len(NEW_NAMES)]
    rewritten = replace_routing_name(data, seen, new_name)
    assert isinstance(parsed, Request) and parsed.params is not None
    member = "uri" if parsed.method == "resources/read" else "name"
    expected = Request(parsed.id, parsed.method, {**parsed.params, member: new_name})
    if parse_message(rewritten) != expected or peek(rewritten).name != new_name:
        raise AssertionError(f"rewrite of {data!r} gave {rewritten!r}")
