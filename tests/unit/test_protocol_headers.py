"""2026-07-28 mirrored request headers: value encoding and header/body mismatch."""

import pytest

from mcp_gateway.protocol import (
    ErrorCode,
    Peek,
    check_header_body_mismatch,
    decode_header_value,
    encode_header_value,
    peek,
)

TOOLS_CALL = peek(
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}'
)
READ = peek(b'{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"file:///a b"}}')
LIST = peek(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
MODERN = {"MCP-Protocol-Version": "2026-07-28"}


# The spec's own encoding table (basic/transports/streamable-http, "Value Encoding").
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_encoding_matches_the_spec_examples(value: str, encoded: str) -> None:
    assert encode_header_value(value) == encoded
    assert decode_header_value(encoded) == value


def test_tab_and_delete_are_encoded() -> None:
    assert encode_header_value("a\tb").startswith("=?base64?")
    assert encode_header_value("a\x7fb").startswith("=?base64?")


def test_plain_values_that_only_resemble_the_form_stay_plain() -> None:
    for value in ("=?base64?", "?=", "=?BASE64?abc?=", "a=?base64?b?="):
        assert encode_header_value(value) == value
        assert decode_header_value(value) == value


@pytest.mark.parametrize(
    "bad",
    [
        "=?base64?not base64!?=",
        "=?base64?SGVsbG8?=",  # missing padding
        "=?base64?/w==?=",  # 0xff: not UTF-8
        "caf\u00e9",  # a raw non-ASCII header value
        "a\nb",
    ],
)
def test_malformed_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_header_value(bad)


def test_matching_headers_pass() -> None:
    headers = {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "get_weather"}
    assert check_header_body_mismatch(headers, TOOLS_CALL) is None
    lower = {
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "MCP-NAME": "get_weather",
    }
    assert check_header_body_mismatch(lower, TOOLS_CALL) is None
    encoded_uri = {
        **MODERN,
        "Mcp-Method": "resources/read",
        "Mcp-Name": encode_header_value("file:///a b"),
    }
    assert check_header_body_mismatch(encoded_uri, READ) is None
    assert check_header_body_mismatch({**MODERN, "Mcp-Method": "tools/list"}, LIST) is None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({**MODERN, "Mcp-Name": "get_weather"}, TOOLS_CALL),  # Mcp-Method missing
        ({**MODERN, "Mcp-Method": "tools/call"}, TOOLS_CALL),  # Mcp-Name missing
        ({**MODERN, "Mcp-Method": "tools/list", "Mcp-Name": "get_weather"}, TOOLS_CALL),
        ({**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "other"}, TOOLS_CALL),
        ({**MODERN, "Mcp-Method": "Tools/Call", "Mcp-Name": "get_weather"}, TOOLS_CALL),
        ({**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "=?base64?!!?="}, TOOLS_CALL),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "other"}, TOOLS_CALL),  # older revision, present
        (
            {**MODERN, "Mcp-Method": "tools/list", "Mcp-Name": "x"},
            LIST,
        ),  # a name on an unrouted call
        (
            {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "get_weather "},
            TOOLS_CALL,
        ),  # trailing space: not the body's name
    ],
)
def test_mismatches_are_header_mismatch_with_the_request_id(
    headers: dict[str, str], body: Peek
) -> None:
    error = check_header_body_mismatch(headers, body)
    assert error is not None
    assert (error.code, error.id, error.http_status) == (ErrorCode.HEADER_MISMATCH, body.id, 400)
    assert error.code == -32020


def test_older_revisions_do_not_require_the_headers() -> None:
    assert check_header_body_mismatch({"MCP-Protocol-Version": "2025-11-25"}, TOOLS_CALL) is None
    assert check_header_body_mismatch({}, TOOLS_CALL) is None


def test_two_spellings_of_a_mirrored_header_with_different_values_are_refused() -> None:
    headers = {**MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "get_weather", "mcp-name": "x"}
    error = check_header_body_mismatch(headers, TOOLS_CALL)
    assert error is not None and error.code == ErrorCode.HEADER_MISMATCH
    same = {
        **MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "get_weather",
        "mcp-name": "get_weather",
    }
    assert check_header_body_mismatch(same, TOOLS_CALL) is None
