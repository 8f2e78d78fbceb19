"""2026-07-28 x-mcp-header annotations and Mcp-Param-* header checks."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.protocol import (
    ErrorCode,
    ParamHeader,
    check_param_headers,
    encode_header_value,
    mirror_param_headers,
    param_headers,
)

# The spec's example tool, plus a nested property and an integer and a boolean.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "query": {"type": "string"},
        "options": {
            "type": "object",
            "properties": {
                "priority": {"type": "integer", "x-mcp-header": "Priority"},
                "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            },
        },
    },
}
DECLARED = param_headers(SCHEMA)


def test_annotations_reachable_through_properties() -> None:
    assert (
        ParamHeader("Region", ("region",), "string"),
        ParamHeader("Priority", ("options", "priority"), "integer"),
        ParamHeader("Dry-Run", ("options", "dry"), "boolean"),
    ) == DECLARED
    assert param_headers({"type": "object"}) == ()
    # A property that is merely called "x-mcp-header" is not an annotation.
    assert param_headers({"properties": {"x-mcp-header": {"type": "string"}}}) == ()


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {"type": "string", "x-mcp-header": ""}}},
        {"properties": {"a": {"type": "string", "x-mcp-header": "Bad Name"}}},
        {"properties": {"a": {"type": "string", "x-mcp-header": "A\r\nB"}}},
        {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}},
        {"properties": {"a": {"type": "object", "x-mcp-header": "A"}}},
        {"properties": {"a": {"type": ["string", "null"], "x-mcp-header": "A"}}},
        {
            "properties": {
                "a": {"type": "string", "x-mcp-header": "Same"},
                "b": {"type": "string", "x-mcp-header": "same"},
            }
        },
        {"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}},
        {"properties": {"a": {"oneOf": [{"type": "string", "x-mcp-header": "A"}]}}},
        {
            "$defs": {"d": {"type": "string", "x-mcp-header": "A"}},
            "properties": {"a": {"$ref": "#/$defs/d"}},
        },
        {"type": "string", "x-mcp-header": "Root"},
    ],
)
def test_invalid_annotations_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        param_headers(schema)


ARGUMENTS = {"region": "us-west1", "query": "select 1", "options": {"priority": 42, "dry": False}}
HEADERS = {"Mcp-Param-Region": "us-west1", "Mcp-Param-Priority": "42", "Mcp-Param-Dry-Run": "false"}


def test_matching_headers_pass() -> None:
    assert check_param_headers(HEADERS, ARGUMENTS, DECLARED, 1) is None
    lower = {name.lower(): value for name, value in HEADERS.items()}
    assert check_param_headers(lower, ARGUMENTS, DECLARED, 1) is None
    numeric = {**HEADERS, "Mcp-Param-Priority": "42.0"}  # integers compare numerically
    assert check_param_headers(numeric, ARGUMENTS, DECLARED, 1) is None
    greeting = {**HEADERS, "Mcp-Param-Region": encode_header_value("Hello, 世界")}
    assert (
        check_param_headers(greeting, {**ARGUMENTS, "region": "Hello, 世界"}, DECLARED, 1) is None
    )
    unknown = {**HEADERS, "Mcp-Param-Other": "x"}  # not declared: forwarded, not checked
    assert check_param_headers(unknown, ARGUMENTS, DECLARED, 1) is None


def test_absent_or_null_arguments_need_no_header() -> None:
    assert check_param_headers({}, {"query": "q"}, DECLARED, 1) is None
    assert check_param_headers({}, {"region": None, "options": None}, DECLARED, 1) is None
    assert check_param_headers({}, None, DECLARED, 1) is None


@pytest.mark.parametrize(
    ("headers", "arguments"),
    [
        ({k: v for k, v in HEADERS.items() if k != "Mcp-Param-Region"}, ARGUMENTS),  # missing
        ({**HEADERS, "Mcp-Param-Region": "eu-west1"}, ARGUMENTS),  # different
        ({**HEADERS, "Mcp-Param-Priority": "43"}, ARGUMENTS),
        ({**HEADERS, "Mcp-Param-Priority": "42.5"}, ARGUMENTS),
        ({**HEADERS, "Mcp-Param-Dry-Run": "False"}, ARGUMENTS),  # booleans are lowercase
        ({**HEADERS, "Mcp-Param-Region": "=?base64?%%%?="}, ARGUMENTS),  # malformed
        (HEADERS, {**ARGUMENTS, "region": None}),  # header without a value
        (HEADERS, {**ARGUMENTS, "options": {"priority": True, "dry": False}}),  # bool is no integer
        (HEADERS, {**ARGUMENTS, "options": {"priority": 2**60, "dry": False}}),  # unsafe integer
    ],
)
def test_mismatches_are_header_mismatch_with_the_id(
    headers: dict[str, str], arguments: dict[str, Any]
) -> None:
    error = check_param_headers(headers, arguments, DECLARED, "call-1")
    assert error is not None
    assert (error.code, error.id, error.http_status) == (ErrorCode.HEADER_MISMATCH, "call-1", 400)


@given(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.booleans(),
)
def test_what_a_conforming_client_sends_always_passes(
    region: str, priority: int, dry: bool
) -> None:
    arguments = {"region": region, "options": {"priority": priority, "dry": dry}}
    headers = {
        "Mcp-Param-Region": encode_header_value(region),
        "Mcp-Param-Priority": encode_header_value(str(priority)),
        "Mcp-Param-Dry-Run": encode_header_value("true" if dry else "false"),
    }
    assert check_param_headers(headers, arguments, DECLARED, 1) is None


def test_mirrored_headers_are_what_the_check_accepts() -> None:
    mirrored = mirror_param_headers(ARGUMENTS, DECLARED)
    assert mirrored == {"mcp-param-region": "us-west1", "mcp-param-priority": "42", "mcp-param-dry-run": "false"}
    assert check_param_headers(mirrored, ARGUMENTS, DECLARED, 1) is None
    # Absent or null values get no header; nor does a value with no header form.
    assert mirror_param_headers({"query": "q", "options": {"priority": None}}, DECLARED) == {}
    assert mirror_param_headers(None, DECLARED) == {}
    assert mirror_param_headers({"region": {"a": 1}, "options": [1]}, DECLARED) == {}
    # Not plain-safe: the base64 form; a wrong type as it is (the server's schema check names it).
    assert mirror_param_headers({"region": " padded"}, DECLARED) == {"mcp-param-region": "=?base64?IHBhZGRlZA==?="}
    assert mirror_param_headers({"region": 7}, DECLARED) == {"mcp-param-region": "7"}


@given(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.booleans(),
)
def test_mirrored_headers_always_pass_the_check(region: str, priority: int, dry: bool) -> None:
    arguments = {"region": region, "options": {"priority": priority, "dry": dry}}
    mirrored = mirror_param_headers(arguments, DECLARED)
    assert len(mirrored) == 3
    assert check_param_headers(mirrored, arguments, DECLARED, 1) is None
