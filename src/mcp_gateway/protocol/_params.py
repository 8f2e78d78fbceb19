"""2026-07-28 ``x-mcp-header``: tool parameters mirrored into ``Mcp-Param-{Name}`` headers.

A tool's ``inputSchema`` may mark primitive properties with ``"x-mcp-header": "Region"``;
clients then send the argument's value as ``Mcp-Param-Region`` (encoded like every mirrored
value, see _headers). A client must drop a tool whose annotations break the rules; a server
that reads the body must refuse a call whose ``Mcp-Param-*`` headers are missing, malformed or
disagree with the arguments (HeaderMismatch, -32020).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._headers import decode_header_value, encode_header_value
from mcp_gateway.protocol._messages import RequestId

_ANNOTATION = "x-mcp-header"
# Lowercase, as header names compare (and as Envoy's header mutations need them).
PARAM_HEADER_PREFIX = "mcp-param-"
# RFC 9110 token: 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+")
_PRIMITIVE_TYPES = frozenset({"string", "integer", "boolean"})
# JavaScript's safe integers, the range the spec allows for mirrored integers.
_MAX_SAFE_INTEGER = 2**53 - 1
# "42" or "42.0": integers compare numerically, as the spec recommends.
_INTEGER_TEXT = re.compile(r"-?[0-9]+(?:\.0+)?")


@dataclass(frozen=True, slots=True)
class ParamHeader:
    name: str  # the {Name} of Mcp-Param-{Name}, as the schema spells it
    path: tuple[str, ...]  # property names from the arguments' root
    type: str  # "string" | "integer" | "boolean"


def param_headers(input_schema: Mapping[str, Any]) -> tuple[ParamHeader, ...]:
    """The mirrored parameters a tool declares. ValueError (naming the problem) if any
    annotation breaks the rules: not a token, repeated ignoring case, on a non-primitive or
    ``number`` property, or not reachable from the root through ``properties`` alone."""
    found: list[ParamHeader] = []
    _collect(input_schema, (), found)
    reachable = len(found)
    if _count_annotations(input_schema) != reachable:
        raise ValueError(f"{_ANNOTATION} used outside a chain of 'properties'")
    seen: set[str] = set()
    for header in found:
        if header.name.lower() in seen:
            raise ValueError(f"{_ANNOTATION} {header.name!r} is not unique ignoring case")
        seen.add(header.name.lower())
    return tuple(found)


def _collect(schema: Mapping[str, Any], path: tuple[str, ...], found: list[ParamHeader]) -> None:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for key, child in properties.items():
        if not isinstance(child, Mapping):
            continue
        if _ANNOTATION in child:
            name, kind = child[_ANNOTATION], child.get("type")
            if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
                raise ValueError(f"{_ANNOTATION} at {'.'.join((*path, key))} is not a token")
            if not isinstance(kind, str) or kind not in _PRIMITIVE_TYPES:
                raise ValueError(f"{_ANNOTATION} {name!r} is on a {kind!r} property")
            found.append(ParamHeader(name, (*path, key), kind))
        _collect(child, (*path, key), found)


def _count_annotations(value: Any, in_property_map: bool = False) -> int:
    """Every annotation anywhere in the schema. Keys of a ``properties`` map are property
    names, so a property called "x-mcp-header" is not an annotation."""
    if isinstance(value, Mapping):
        count = 0 if in_property_map else int(_ANNOTATION in value)
        for key, child in value.items():
            if in_property_map or key != _ANNOTATION:
                count += _count_annotations(child, key == "properties" and not in_property_map)
        return count
    if isinstance(value, list):
        return sum(_count_annotations(item) for item in value)
    return 0


def check_param_headers(
    headers: Mapping[str, str],
    arguments: Mapping[str, Any] | None,
    declared: tuple[ParamHeader, ...],
    request_id: RequestId | None,
) -> ProtocolError | None:
    """The HeaderMismatch error for a tools/call whose Mcp-Param-* headers disagree with its
    arguments: a value present without its header, a header without its value, a malformed
    header, or a different value. Headers no annotation declares are ignored (forwarded)."""
    by_name = {name.lower(): value for name, value in headers.items()}
    for param in declared:
        header_name = f"mcp-param-{param.name.lower()}"
        header = by_name.get(header_name)
        value = _value_at(arguments or {}, param.path)
        if value is None:
            if header is not None:
                return _mismatch(
                    f"Mcp-Param-{param.name} sent but the argument is absent", request_id
                )
            continue
        if header is None:
            return _mismatch(f"Mcp-Param-{param.name} header is missing", request_id)
        try:
            text = decode_header_value(header)
        except ValueError as exc:
            return _mismatch(f"Mcp-Param-{param.name} header is malformed: {exc}", request_id)
        if not _matches(text, value, param.type):
            return _mismatch(
                f"Mcp-Param-{param.name} header does not match the argument", request_id
            )
    return None


def mirror_param_headers(
    arguments: Mapping[str, Any] | None, declared: tuple[ParamHeader, ...]
) -> dict[str, str]:
    """The Mcp-Param-* headers a client sends with a tools/call of these arguments (names
    lowercase): each declared argument that has a value, booleans as "true"/"false", numbers
    in decimal, strings plain when safe, else in the base64 form. An absent or null argument,
    or one with no header form (an object, an array), gets no header, as in the SDK client;
    a value of the wrong type is mirrored as it is, so that the server's answer is about the
    argument's type (its schema check), not about a header the client left out."""
    headers: dict[str, str] = {}
    for param in declared:
        value = _value_at(arguments or {}, param.path)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            continue
        headers[PARAM_HEADER_PREFIX + param.name.lower()] = encode_header_value(text)
    return headers


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = arguments
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _matches(text: str, value: Any, kind: str) -> bool:
    if kind == "string":
        return type(value) is str and text == value
    if kind == "boolean":
        return type(value) is bool and text == ("true" if value else "false")
    if type(value) is not int or abs(value) > _MAX_SAFE_INTEGER:
        return False
    return _INTEGER_TEXT.fullmatch(text) is not None and int(text.split(".")[0]) == value


def _mismatch(detail: str, request_id: RequestId | None) -> ProtocolError:
    return ProtocolError(ErrorCode.HEADER_MISMATCH, f"Header mismatch: {detail}", id=request_id)
