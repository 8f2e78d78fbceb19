"""The 2026-07-28 request headers that mirror the body: Mcp-Method, Mcp-Name, Mcp-Param-*.

Values that cannot travel as a plain header value (anything outside printable ASCII, leading
or trailing whitespace, or text that itself looks like the encoded form) are sent as
``=?base64?<standard base64 of the UTF-8 bytes>?=``; the markers are lowercase and exact.
A server that reads the body must reject, with 400 and JSON-RPC error -32020 (HeaderMismatch),
a request whose mirrored headers are missing, malformed, or disagree with the body.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from mcp_gateway.protocol._envelope import ROUTING_PARAM
from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._peek import Peek

_PREFIX = "=?base64?"
_SUFFIX = "?="
# Printable ASCII and space (RFC 9110 field-value characters, minus HTAB, which the spec
# counts among the control characters that must be encoded).
_PLAIN = re.compile(r"[\x20-\x7e]*")
_MIRRORED = frozenset({"mcp-method", "mcp-name", "mcp-protocol-version"})
# Revisions whose clients must send Mcp-Method (and Mcp-Name on routed requests).
HEADER_MIRRORING_VERSIONS = frozenset({"2026-07-28"})


def _looks_encoded(value: str) -> bool:
    return value.startswith(_PREFIX) and value.endswith(_SUFFIX)


def encode_header_value(value: str) -> str:
    """The header form of a string value; plain when it is safe, else the base64 form."""
    if (
        _PLAIN.fullmatch(value) is not None
        and value.strip(" ") == value
        and not _looks_encoded(value)
    ):
        return value
    return _PREFIX + base64.b64encode(value.encode("utf-8")).decode("ascii") + _SUFFIX


def decode_header_value(value: str) -> str:
    """The string a header value carries. ValueError if it is not a valid header value or
    its base64 form is malformed (bad alphabet or padding, or bytes that are not UTF-8)."""
    if _PLAIN.fullmatch(value) is None:
        raise ValueError("header value has characters outside printable ASCII")
    if not _looks_encoded(value) or len(value) < len(_PREFIX) + len(_SUFFIX):
        return value
    payload = value[len(_PREFIX) : -len(_SUFFIX)]
    try:
        return base64.b64decode(payload, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed base64 header value") from None


def check_header_body_mismatch(headers: Mapping[str, str], peek: Peek) -> ProtocolError | None:
    """The HeaderMismatch error for a request whose mirrored headers disagree with its body.

    Header names compare case-insensitively. A mirrored header that is present must match,
    whatever the revision (an intermediary might route on it); on a revision that mirrors
    (MCP-Protocol-Version 2026-07-28) Mcp-Method is required on requests and Mcp-Name on
    tools/call, prompts/get and resources/read. Mcp-Param-* headers need the tool's schema to
    check and are the upstream server's to validate; they are forwarded as they are.
    """
    by_name: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if by_name.setdefault(lowered, value) != value and lowered in _MIRRORED:
            # Two spellings of one header with different values: which one would a peer read?
            return _mismatch(f"conflicting {name} headers", peek)
    mirroring = by_name.get("mcp-protocol-version") in HEADER_MIRRORING_VERSIONS
    is_request = peek.kind == "request"
    method_header = by_name.get("mcp-method")
    if method_header is None:
        if mirroring and is_request:
            return _mismatch("Mcp-Method header is missing", peek)
    elif method_header != peek.method:
        return _mismatch("Mcp-Method header does not match the body's method", peek)
    name_header = by_name.get("mcp-name")
    routed = is_request and peek.method in ROUTING_PARAM
    if name_header is None:
        if mirroring and routed:
            return _mismatch("Mcp-Name header is missing", peek)
        return None
    try:
        name = decode_header_value(name_header)
    except ValueError as exc:
        return _mismatch(f"Mcp-Name header is malformed: {exc}", peek)
    if not routed or name != peek.name:
        return _mismatch("Mcp-Name header does not match the body's params", peek)
    return None


def _mismatch(detail: str, peek: Peek) -> ProtocolError:
    return ProtocolError(ErrorCode.HEADER_MISMATCH, f"Header mismatch: {detail}", id=peek.id)
