"""Hypothesis properties of the protocol core (the CI profile runs 500 examples each)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
from hypothesis import assume, given
from hypothesis import strategies as st

from mcp_gateway.protocol import (
    SUPPORTED_VERSIONS,
    ErrorResponse,
    Limits,
    Message,
    Notification,
    Peek,
    ProtocolError,
    Request,
    Response,
    apply_prefix,
    decode_header_value,
    encode_header_value,
    is_valid_prefix,
    is_valid_tool_name,
    negotiate_version,
    parse_message,
    peek,
    replace_routing_name,
    serialize,
    strip_prefix,
)

# ---- strategies --------------------------------------------------------------------------

# Any text a JSON string can hold (lone surrogates cannot be UTF-8 encoded at all).
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
huge_ints = st.integers(min_value=-(10**150), max_value=10**150)
ints = st.one_of(st.integers(min_value=-(2**64), max_value=2**64), huge_ints)
floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)
request_ids = st.one_of(texts, ints)
ROUTED_METHODS = ("tools/call", "prompts/get", "resources/read")
plain_methods = texts.filter(
    lambda m: bool(m) and not m.startswith("rpc.") and m not in ROUTED_METHODS
)
routed = st.sampled_from(
    [("tools/call", "name"), ("prompts/get", "name"), ("resources/read", "uri")]
)
tool_names = st.from_regex(r"[A-Za-z0-9_.\-]{1,128}", fullmatch=True)
prefixes = st.from_regex(r"[A-Za-z0-9_.\-]{0,127}", fullmatch=True)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    request_id = draw(request_ids)
    if draw(st.booleans()):
        method, member = draw(routed)
        params = draw(json_objects)
        params[member] = draw(texts)
        return Request(request_id, method, params)
    return Request(request_id, draw(plain_methods), draw(st.none() | json_objects))


messages: st.SearchStrategy[Message] = st.one_of(
    requests(),
    st.builds(Notification, texts.filter(bool), st.none() | json_objects),
    st.builds(Response, request_ids, json_values),
    st.builds(ErrorResponse, st.none() | request_ids, ints, texts, json_values),
)


@st.composite
def encodings(draw: st.DrawFn, value: Any) -> bytes:
    """The same JSON value spelled as different senders spell it."""
    spaced = draw(st.booleans())
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=(", ", ": ") if spaced else (",", ":"),
        indent=draw(st.none() | st.integers(0, 2)) if spaced else None,
    )
    return text.encode()


def _tamper(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for position, deleted, inserted in edits:
        at = position % (len(out) + 1)
        out[at : at + deleted] = inserted
    return bytes(out)


NASTY_PIECES = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\u002c",
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"9" * 300,
    b"\xff",
    b"\xef\xbb\xbf",
    b"\x00",
    b"null",
    b'"id"',
    b'"id":',
    b'"method":',
    b'"params":',
    b'"name":',
    b'"jsonrpc":"2.0"',
    b"true",
    b" ",
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Valid messages, their batches, other JSON, and all of these tampered with."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return draw(encodings(draw(json_values)))
    message = draw(messages)
    if choice == 2 and draw(st.booleans()):
        data = serialize([message, draw(messages)])
    else:
        data = serialize(message)
    if choice <= 3:
        return data
    edits = st.tuples(
        st.integers(0, 10_000),
        st.integers(0, 3),
        st.sampled_from(NASTY_PIECES) | st.binary(max_size=3),
    )
    return _tamper(data, draw(st.lists(edits, min_size=1, max_size=3)))


SMALL_LIMITS = Limits(max_body_bytes=400, max_depth=6, max_batch=2, max_string_length=30)
limits = st.sampled_from([Limits(), SMALL_LIMITS])


def _outcome(function: Any, data: bytes, chosen: Limits, allow_batch: bool) -> Any:
    try:
        return function(data, chosen, allow_batch=allow_batch)
    except ProtocolError as error:
        return (error.code, error.id, error.http_status)


def _peek_of(parsed: Message | list[Message]) -> Peek:
    if isinstance(parsed, list):
        return Peek("batch", None, None, None)
    if isinstance(parsed, Request):
        name = None
        if parsed.method in ("tools/call", "prompts/get") and parsed.params:
            name = parsed.params["name"]
        elif parsed.method == "resources/read" and parsed.params:
            name = parsed.params["uri"]
        return Peek("request", parsed.method, parsed.id, name)
    if isinstance(parsed, Notification):
        return Peek("notification", parsed.method, None, None)
    if isinstance(parsed, Response):
        return Peek("response", None, parsed.id, None)
    return Peek("error", None, parsed.id, None)


# ---- properties --------------------------------------------------------------------------


@given(st.binary(max_size=300), limits, st.booleans())
def test_any_bytes_give_a_message_or_a_protocol_error(
    data: bytes, chosen: Limits, allow_batch: bool
) -> None:
    try:
        result = parse_message(data, chosen, allow_batch=allow_batch)
    except ProtocolError as error:
        assert error.code in (-32700, -32600, -32601, -32602)
        assert json.loads(error.to_json())["error"]["code"] == error.code
    else:
        assert isinstance(result, Request | Notification | Response | ErrorResponse | list)


@given(bodies(), limits, st.booleans())
def test_tampered_and_odd_bodies_give_a_message_or_a_protocol_error(
    data: bytes, chosen: Limits, allow_batch: bool
) -> None:
    for function in (parse_message, peek):
        with contextlib.suppress(ProtocolError):
            function(data, chosen, allow_batch=allow_batch)


@given(messages)
def test_serialize_then_parse_round_trips_with_exact_id_types(message: Message) -> None:
    parsed = parse_message(serialize(message))
    assert parsed == message
    if isinstance(message, Request | Response | ErrorResponse):
        assert type(parsed.id) is type(message.id)  # type: ignore[union-attr]


@given(messages, st.data())
def test_round_trip_holds_for_any_sender_spelling(message: Message, data: st.DataObject) -> None:
    spelled = data.draw(encodings(json.loads(serialize(message))))
    assert parse_message(spelled) == message


@given(st.lists(messages, min_size=1, max_size=5))
def test_batches_round_trip_when_allowed(batch: list[Message]) -> None:
    assert parse_message(serialize(batch), allow_batch=True) == batch


@given(bodies(), limits, st.booleans())
def test_peek_agrees_with_the_full_parse_on_every_input(
    data: bytes, chosen: Limits, allow_batch: bool
) -> None:
    parsed = _outcome(parse_message, data, chosen, allow_batch)
    peeked = _outcome(peek, data, chosen, allow_batch)
    if isinstance(parsed, tuple):
        assert peeked == parsed
    else:
        assert peeked == _peek_of(parsed)


@given(st.binary(max_size=200), st.booleans())
def test_peek_agrees_with_the_full_parse_on_random_bytes(data: bytes, allow_batch: bool) -> None:
    parsed = _outcome(parse_message, data, Limits(), allow_batch)
    peeked = _outcome(peek, data, Limits(), allow_batch)
    assert peeked == (parsed if isinstance(parsed, tuple) else _peek_of(parsed))


@given(requests(), st.data(), texts)
def test_replacing_the_routing_name_changes_only_that_value(
    request: Request, data: st.DataObject, new_name: str
) -> None:
    body = data.draw(encodings(json.loads(serialize(request))))
    seen = peek(body)
    assume(seen.name is not None)
    rewritten = replace_routing_name(body, seen, new_name)
    member = "uri" if request.method == "resources/read" else "name"
    assert request.params is not None
    expected = Request(request.id, request.method, {**request.params, member: new_name})
    assert parse_message(rewritten) == expected
    assert peek(rewritten).name == new_name
    assert _is_one_span_replacement(body, rewritten, seen.name, new_name)


def _is_one_span_replacement(before: bytes, after: bytes, old: str, new: str) -> bool:
    """``after`` is ``before`` with one JSON string literal meaning ``old`` swapped for the
    literal of ``new``; every other byte is the same."""
    literal = msgspec.json.encode(new)
    start = after.find(literal)
    while start != -1:
        tail = after[start + len(literal) :]
        end = len(before) - len(tail)
        if (
            before[:start] == after[:start]
            and end >= start
            and before[end:] == tail
            and _decodes_to(before[start:end], old)
        ):
            return True
        start = after.find(literal, start + 1)
    return False


def _decodes_to(literal: bytes, expected: str) -> bool:
    try:
        return bool(msgspec.json.decode(literal) == expected)
    except msgspec.DecodeError:
        return False


# Breaking the envelope (or the call) of a valid request keeps its id in the answer.
BREAKAGES: list[tuple[str, Any, int]] = [
    ("jsonrpc", "1.0", -32600),
    ("jsonrpc", 2.0, -32600),
    ("jsonrpc", None, -32600),
    ("extra", True, -32600),
    ("method", "", -32600),
    ("method", 5, -32600),
    ("params", "text", -32600),
    ("params", None, -32600),
    ("method", "rpc.call", -32601),
    ("params", [1, 2], -32602),
    ("params", {"arguments": {}}, -32602),  # for the routed methods below
]


@given(requests(), st.sampled_from(BREAKAGES))
def test_the_request_id_is_recovered_into_every_envelope_error(
    request: Request, breakage: tuple[str, Any, int]
) -> None:
    member, value, code = breakage
    message = json.loads(serialize(request))
    if code == -32602 and isinstance(value, dict):
        message["method"] = "tools/call"
    if member == "params" and code == -32600 and value is None:
        message["params"] = None  # explicitly null: not a structured value
    elif value is None:
        message.pop(member, None)
    else:
        message[member] = value
    data = json.dumps(message).encode()
    for function in (parse_message, peek):
        try:
            function(data)
        except ProtocolError as error:
            assert (error.code, error.id) == (code, request.id)
        else:
            raise AssertionError(f"{data!r} was accepted")


@given(prefixes, tool_names)
def test_prefix_apply_then_strip_round_trips(prefix: str, name: str) -> None:
    assert is_valid_prefix(prefix) and is_valid_tool_name(name)
    if len(prefix) + len(name) > 128:
        try:
            apply_prefix(prefix, name)
        except ValueError:
            return
        raise AssertionError("an over-long prefixed name was accepted")
    prefixed = apply_prefix(prefix, name)
    assert is_valid_tool_name(prefixed)
    assert strip_prefix(prefix, prefixed) == name


@given(prefixes, st.text(max_size=140))
def test_strip_prefix_returns_a_valid_name_or_none(prefix: str, name: str) -> None:
    stripped = strip_prefix(prefix, name)
    if stripped is not None:
        assert is_valid_tool_name(stripped)
        assert apply_prefix(prefix, stripped) == name


@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=60))
def test_header_encoded_word_round_trips(value: str) -> None:
    encoded = encode_header_value(value)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert encoded == encoded.strip(" ")
    assert decode_header_value(encoded) == value


@given(st.text(max_size=12))
def test_negotiation_answers_a_supported_version(requested: str) -> None:
    answer = negotiate_version(requested)
    assert answer in SUPPORTED_VERSIONS
    assert (answer == requested) == (requested in SUPPORTED_VERSIONS)
