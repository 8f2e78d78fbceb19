"""The strict JSON reader both the full parser and the peek stand on.

RFC 8259 leaves some choices to the reader; ours refuses everything ambiguous, so that the
gateway and whatever reads the body after it (Envoy, an upstream SDK) cannot disagree about
what a body says. Every refusal here is a -32700 parse error with a null id: the text is not
a JSON value we accept, so no id inside it can be trusted.

Refused: an empty body, a UTF-8 byte order mark, bytes that are not UTF-8, nesting deeper than
``Limits.max_depth``, a ``\\u`` escape that leaves a lone surrogate, duplicate object keys (at
any depth), NaN/Infinity, numbers that overflow a float or exceed Python's 4300-digit integer
conversion limit, strings longer than ``Limits.max_string_length`` code points, and anything
``json`` itself refuses (trailing data, control characters in strings, single quotes ...).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._limits import Limits

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"

# A JSON string in well-formed text, written as an unrolled loop so sre does not backtrack.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TO_PARENS = str.maketrans("[{]}", "(())")
# Cheap hint that a surrogate escape may be present; only then is every escape examined.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
# Walks escapes left to right (so "\\\\ud800" is an escaped backslash, not a surrogate);
# a valid pair matches the first branch, a lone surrogate the second.
_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|(\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
    r"|\\.",
    re.DOTALL,
)


class _Refused(Exception):
    """Raised from inside json's hooks; turned into a ProtocolError at the boundary."""


def parse_error(detail: str) -> ProtocolError:
    return ProtocolError(ErrorCode.PARSE_ERROR, f"Parse error: {detail}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("duplicate object key")
    return obj


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _Refused("number out of range")
    return value


def _no_constant(literal: str) -> Any:
    raise _Refused(f"{literal} is not JSON")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_object, parse_float=_finite_float, parse_constant=_no_constant
)


def decode_text(data: bytes) -> str:
    """Bytes to text: refuses empty, BOM-prefixed and non-UTF-8 bodies."""
    if not data.strip(_JSON_WHITESPACE):
        raise parse_error("empty body")
    if data.startswith(_BOM):
        raise parse_error("byte order mark is not allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise parse_error("body is not valid UTF-8") from None


def check_depth(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than max_depth before json recurses into it.

    The count of every bracket character is an upper bound on the depth, so the common case
    costs two C-level counts. Only beyond it are strings removed and nesting measured: each
    pass deletes every innermost "()" pair, which lowers the depth of well-formed text by one.
    For malformed text the bound is still an over-estimate of how far json would recurse, and
    malformed text is a parse error either way.
    """
    if text.count("{") + text.count("[") <= max_depth:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_TO_PARENS)
    passes = 0
    while "()" in brackets:
        passes += 1
        if passes > max_depth:
            raise parse_error(f"nesting deeper than {max_depth}")
        brackets = brackets.replace("()", "")
    if passes + brackets.count("(") > max_depth:
        raise parse_error(f"nesting deeper than {max_depth}")


def check_surrogates(text: str) -> None:
    if _SURROGATE_HINT.search(text) is None:
        return
    for match in _ESCAPE.finditer(text):
        if match.group(1) is not None:
            raise parse_error("lone surrogate in a \\u escape")


def _check_string_lengths(value: Any, limit: int) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > limit:
                raise parse_error(f"string longer than {limit} characters")
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def precheck(data: bytes, limits: Limits) -> str:
    """Everything that must hold before decoding; shared by the parser and the peek."""
    text = decode_text(data)
    check_depth(text, limits.max_depth)
    check_surrogates(text)
    return text


def loads(text: str, limits: Limits) -> Any:
    """Decode prechecked text into Python values, refusing what the module doc lists."""
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise parse_error(str(exc)) from None
    except RecursionError:
        raise parse_error("nesting too deep") from None
    except ValueError as exc:  # json.JSONDecodeError and int()'s digit limit
        raise parse_error(_describe(exc)) from None
    # A string can only be as long as the text around it: most bodies skip the walk.
    if len(text) - 2 > limits.max_string_length:
        _check_string_lengths(value, limits.max_string_length)
    return value


def read_json(data: bytes, limits: Limits) -> Any:
    return loads(precheck(data, limits), limits)


def _describe(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at offset {exc.pos}"
    return "number too large"
