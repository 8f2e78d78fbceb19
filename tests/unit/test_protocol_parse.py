"""Every defined answer of parse_message (and, by the shared envelope, of peek)."""

import json

import pytest

from mcp_gateway.protocol import (
    ErrorCode,
    ErrorResponse,
    Limits,
    Notification,
    ProtocolError,
    Request,
    Response,
    error_response,
    parse_message,
    peek,
    result_response,
    serialize,
)


def body(**members: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **members}).encode()


DEFAULT_LIMITS = Limits()


def refusal(data: bytes, limits: Limits = DEFAULT_LIMITS, **kwargs: bool) -> ProtocolError:
    with pytest.raises(ProtocolError) as parse_info:
        parse_message(data, limits, **kwargs)
    with pytest.raises(ProtocolError) as peek_info:
        peek(data, limits, **kwargs)
    parsed, peeked = parse_info.value, peek_info.value
    assert (parsed.code, parsed.id, parsed.http_status) == (
        peeked.code,
        peeked.id,
        peeked.http_status,
    )
    return parsed


# ---- accepted messages -------------------------------------------------------------------


def test_request_keeps_string_id_as_string() -> None:
    message = parse_message(body(id="1", method="ping"))
    assert message == Request("1", "ping", None)
    assert isinstance(message, Request) and type(message.id) is str


def test_request_keeps_huge_integer_id_exact() -> None:
    huge = 2**200 + 1
    message = parse_message(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}' % huge)
    assert isinstance(message, Request) and message.id == huge and type(message.id) is int


def test_notification_has_no_id() -> None:
    assert parse_message(body(method="notifications/initialized")) == Notification(
        "notifications/initialized", None
    )


def test_response_and_error_response() -> None:
    assert parse_message(body(id=7, result={"tools": []})) == Response(7, {"tools": []})
    assert parse_message(body(id=None, error={"code": -32700, "message": "bad"})) == (
        ErrorResponse(None, -32700, "bad", None)
    )
    assert parse_message(body(id="x", error={"code": 1, "message": "m", "data": [1]})) == (
        ErrorResponse("x", 1, "m", [1])
    )


def test_tools_call_params_are_fully_decoded() -> None:
    data = body(id=1, method="tools/call", params={"name": "a_b", "arguments": {"x": [1.5, None]}})
    assert parse_message(data) == Request(
        1, "tools/call", {"name": "a_b", "arguments": {"x": [1.5, None]}}
    )


def test_whitespace_around_and_inside_is_fine() -> None:
    assert parse_message(b' \r\n\t{ "jsonrpc" : "2.0" , "id" : 1 , "method" : "ping" }\n') == (
        Request(1, "ping", None)
    )


def test_nested_duplicate_keys_in_pass_through_values_keep_last_value() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1,"a":2}}}'
    message = parse_message(data)
    assert isinstance(message, Request) and message.params == {
        "name": "t",
        "arguments": {"a": 2},
    }


def test_escaped_surrogate_pair_is_one_character() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","id":"\\ud83d\\ude00","method":"ping"}')
    assert isinstance(message, Request) and message.id == "\U0001f600"


# ---- -32700: not a JSON text we accept (id always null) ----------------------------------


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty body"),
        (b" \r\n\t", "whitespace only"),
        (b"\xef\xbb\xbf" + body(id=1, method="ping"), "UTF-8 byte order mark"),
        (b'{"jsonrpc":"2.0","id":1,"method":"p\xffng"}', "invalid UTF-8"),
        (b'{"jsonrpc":"2.0","id":1,"method":"p\xed\xa0\x80"}', "UTF-8-encoded surrogate"),
        (b'{"jsonrpc":"2.0","id":1,"method":"\xc0\xafx"}', "overlong UTF-8"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"} x', "trailing garbage"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"}{}', "two values"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"', "truncated"),
        (b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}', "NaN"),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":Infinity}}}',
            "Infinity",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":-Infinity}}}',
            "-Infinity",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":1e400}}}',
            "float overflow",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":'
            + b"9" * 4301
            + b"}}}",
            "integer over 4300 digits",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":"\\ud800"}}}',
            "lone high surrogate",
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"\\udc00"}', "lone low surrogate"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping\x01"}', "control character in a string"),
        (b"{'jsonrpc':'2.0'}", "single quotes"),
        (b'{"jsonrpc":"2.0","id":01,"method":"ping"}', "leading zero"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping",}', "trailing comma"),
        (b'\x0b{"jsonrpc":"2.0","id":1,"method":"ping"}', "non-JSON whitespace"),
    ],
)
def test_parse_errors_have_null_id(data: bytes, why: str) -> None:
    error = refusal(data)
    assert (error.code, error.id, error.http_status) == (ErrorCode.PARSE_ERROR, None, 400), why


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1,"code":2,"message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[1]}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\\u0061me":"b"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a\\u002c":1,"a,":2,"name":"x"}}',
    ],
)
def test_duplicate_keys_where_the_gateway_reads_are_parse_errors(data: bytes) -> None:
    error = refusal(data)
    assert (error.code, error.id) == (ErrorCode.PARSE_ERROR, None)


def test_escaped_comma_keys_that_differ_are_not_duplicates() -> None:
    data = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a\\u002c":1,"b,":2,"name":"x"}}'
    )
    assert peek(data).name == "x"


def test_nesting_limit_counts_containers_not_brackets_in_strings() -> None:
    limits = Limits(max_depth=4)
    inside = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":%s}}}'
    )
    assert peek(inside % b"[]", limits).name == "t"  # depth 4: message, params, arguments, []
    assert peek(inside % b'"[[[[[[[[[["', limits).name == "t"
    assert peek(inside % b'"\\"[[[[[[[[["', limits).name == "t"
    error = refusal(inside % b"[[]]", limits)
    assert (error.code, error.id) == (ErrorCode.PARSE_ERROR, None)


def test_deep_nesting_is_refused_before_decoding() -> None:
    error = refusal(b"[" * 100_000 + b"]" * 100_000)
    assert error.code == ErrorCode.PARSE_ERROR and "nesting" in error.message


def test_string_length_limit_applies_to_keys_and_values() -> None:
    limits = Limits(max_string_length=12)  # "tools/call" itself is 10
    twelve, thirteen = "é" * 12, "é" * 13  # code points, not bytes
    ok = body(id=1, method="tools/call", params={"name": "t", "arguments": {"k": twelve}})
    assert peek(ok, limits).name == "t"
    long_value = body(id=1, method="tools/call", params={"name": "t", "arguments": {"k": thirteen}})
    long_key = body(id=1, method="tools/call", params={"name": "t", "arguments": {thirteen: 1}})
    for data in (long_value, long_key):
        error = refusal(data, limits)
        assert (error.code, error.id) == (ErrorCode.PARSE_ERROR, None)


# ---- -32600 with HTTP 413: body over the byte limit ---------------------------------------


def test_oversized_body_is_413_before_any_parsing() -> None:
    limits = Limits(max_body_bytes=64)
    error = refusal(b"x" * 65, limits)  # not even JSON: the size decides first
    assert (error.code, error.id, error.http_status) == (ErrorCode.INVALID_REQUEST, None, 413)


def test_body_exactly_at_the_limit_is_read() -> None:
    data = body(id=1, method="ping")
    assert parse_message(data, Limits(max_body_bytes=len(data))) == Request(1, "ping", None)


# ---- batches: 2025-03-26 only ---------------------------------------------------------------


def test_batch_is_refused_unless_allowed() -> None:
    data = b"[" + body(id=1, method="ping") + b"]"
    error = refusal(data)
    assert (error.code, error.id) == (ErrorCode.INVALID_REQUEST, None)
    assert parse_message(data, allow_batch=True) == [Request(1, "ping", None)]
    assert peek(data, allow_batch=True).kind == "batch"


def test_batch_empty_too_long_or_with_a_bad_member() -> None:
    two = b"[" + body(id=1, method="ping") + b"," + body(id=2, method="ping") + b"]"
    assert refusal(b"[]", allow_batch=True).code == ErrorCode.INVALID_REQUEST
    assert refusal(two, Limits(max_batch=1), allow_batch=True).code == ErrorCode.INVALID_REQUEST
    bad = b"[" + body(id=1, method="ping") + b",1]"
    error = refusal(bad, allow_batch=True)
    assert (error.code, error.id, error.data) == (ErrorCode.INVALID_REQUEST, None, {"index": 1})


# ---- -32600: not a valid JSON-RPC envelope (id when recoverable) --------------------------


@pytest.mark.parametrize(
    ("data", "expected_id"),
    [
        (b"1", None),
        (b'"ping"', None),
        (b"null", None),
        (b'{"id":1,"method":"ping"}', 1),  # no jsonrpc
        (b'{"jsonrpc":"1.0","id":"a","method":"ping"}', "a"),
        (b'{"jsonrpc":2.0,"id":"a","method":"ping"}', "a"),
        (body(id=1, method=""), 1),
        (body(id=1, method=5), 1),
        (body(id=1, method="ping", params="x"), 1),
        (body(id=1, method="ping", params=None), 1),
        (body(id=1, method="ping", extra=True), 1),
        (body(id=1), 1),  # neither method nor result nor error
        (body(id=1, result={}, error={"code": 1, "message": "m"}), 1),
        (body(id=1, error={"code": "1", "message": "m"}), 1),
        (body(id=1, error={"code": 1}), 1),
        (body(id=1, error={"code": 1, "message": "m", "extra": 1}), 1),
        (body(id=1, error="boom"), 1),
        (body(result={}), None),  # response without id
        (body(error={"code": 1, "message": "m"}), None),
    ],
)
def test_invalid_requests_carry_the_id_when_it_is_recoverable(
    data: bytes, expected_id: object
) -> None:
    error = refusal(data)
    assert (error.code, error.id, error.http_status) == (
        ErrorCode.INVALID_REQUEST,
        expected_id,
        400,
    )


@pytest.mark.parametrize("bad_id", [b"true", b"false", b"1.0", b"1e3", b"null", b"[1]", b'{"a":1}'])
def test_ids_that_are_not_string_or_integer_are_invalid_with_null_id(bad_id: bytes) -> None:
    error = refusal(b'{"jsonrpc":"2.0","id":%s,"method":"ping"}' % bad_id)
    assert (error.code, error.id) == (ErrorCode.INVALID_REQUEST, None)


def test_null_id_is_allowed_only_in_error_responses() -> None:
    assert parse_message(body(id=None, error={"code": 1, "message": "m"})) == ErrorResponse(
        None, 1, "m", None
    )
    assert refusal(body(id=None, result={})).code == ErrorCode.INVALID_REQUEST


# ---- -32601 and -32602: the envelope is fine, the call is not ------------------------------


def test_reserved_rpc_methods_are_method_not_found() -> None:
    error = refusal(body(id="r", method="rpc.discover"))
    assert (error.code, error.id) == (ErrorCode.METHOD_NOT_FOUND, "r")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", None),
        ("tools/call", {}),
        ("tools/call", {"name": 5}),
        ("tools/call", {"name": None}),
        ("tools/call", {"name": ["a"]}),
        ("prompts/get", {"arguments": {}}),
        ("resources/read", {"name": "not-a-uri-member"}),
        ("ping", [1, 2]),
        ("tools/call", ["t"]),
    ],
)
def test_invalid_params_carry_the_id(method: str, params: object) -> None:
    members: dict[str, object] = {"id": 9, "method": method}
    if params is not None:
        members["params"] = params
    error = refusal(body(**members))
    assert (error.code, error.id) == (ErrorCode.INVALID_PARAMS, 9)


def test_notification_with_array_params_is_invalid_params_without_id() -> None:
    error = refusal(body(method="notifications/x", params=[1]))
    assert (error.code, error.id) == (ErrorCode.INVALID_PARAMS, None)


def test_decision_order_envelope_before_method_before_params() -> None:
    # jsonrpc wrong and rpc.* and bad params: the envelope decides first.
    assert refusal(b'{"jsonrpc":"1","id":1,"method":"rpc.x","params":[1]}').code == (
        ErrorCode.INVALID_REQUEST
    )
    assert refusal(body(id=1, method="rpc.x", params=[1])).code == ErrorCode.METHOD_NOT_FOUND


# ---- answers -------------------------------------------------------------------------------


def test_error_to_json_is_a_jsonrpc_error_response() -> None:
    error = refusal(body(id="abc", method="tools/call", params={}))
    assert json.loads(error.to_json()) == {
        "jsonrpc": "2.0",
        "id": "abc",
        "error": {"code": -32602, "message": error.message},
    }


def test_error_and_result_responses() -> None:
    assert error_response(None, ErrorCode.PARSE_ERROR, "Parse error") == (
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    )
    assert result_response(2**70, {"é": 1}) == (
        '{"jsonrpc":"2.0","id":1180591620717411303424,"result":{"é":1}}'.encode()
    )


def test_serialize_refuses_nan() -> None:
    with pytest.raises(ValueError):
        serialize(Response(1, float("nan")))


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_message("{}")  # type: ignore[arg-type]
