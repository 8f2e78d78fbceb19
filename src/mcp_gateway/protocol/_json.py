"""The strict JSON reader under both the full parser and the peek.

Both read a body the same way, in the same order, with the same code, so they cannot disagree:
only the last step differs (the parser decodes the pass-through values, the peek leaves them
as unparsed ``msgspec.Raw`` spans). msgspec validates all of the text's syntax in C even where
it does not build values, which is what makes the peek cheap.

Everything refused here is a -32700 parse error with a null id: the text is not a JSON value
we accept, so no id inside it can be trusted. Refused: an empty body; a UTF-8 byte order mark;
bytes that are not UTF-8; nesting deeper than ``Limits.max_depth``; anything that is not
RFC 8259 JSON (NaN/Infinity, trailing data, control characters in strings, bad escapes ...);
a ``\\u`` escape that leaves a lone surrogate; a number out of float range or an integer of
more than 4300 digits; a string longer than ``Limits.max_string_length`` code points; and
duplicate keys in the objects the gateway interprets (see ``has_duplicate_keys``).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeAlias

import msgspec

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._limits import Limits

Scalar: TypeAlias = str | int | float | bool | None
# A member of the message object: one more level decoded, the rest left as raw spans.
Member: TypeAlias = dict[str, msgspec.Raw] | list[msgspec.Raw] | Scalar
# The top of a body: the message object with its members, a batch, or a bare scalar.
Top: TypeAlias = dict[str, Member] | list[msgspec.Raw] | Scalar

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"

# Two levels of a JSON value are decoded; everything deeper stays an unparsed (but validated)
# span. Two levels hold every object the gateway interprets: the message, params, error.
TOP = msgspec.json.Decoder(Top)
RAW_SCALAR = msgspec.json.Decoder(Scalar)
_ENCODER = msgspec.json.Encoder()
ANY_VALUE = msgspec.json.Decoder()

# Out-of-range numbers: skipping accepts them, decoding refuses them, so before skipping we
# look for what could be one. Below an exponent of 100 and a 200-digit run no number is out
# of range (< 10**200 * 10**99 < 1.8e308, and integers stay under the 4300-digit limit).
# Digits become "0", "E" becomes "e" and signs are deleted, so one substring search finds
# every exponent of 100 or more (and a few harmless look-alikes, which only cost a decode).
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_SIGNS = b"+-"
_HUGE_EXPONENT = b"e000"
_LONG_DIGIT_RUN = b"0" * 200
_ALL_BUT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_ALL_BUT_STRUCTURE_AND_COMMAS = bytes(set(range(256)) - set(b'[]{}",'))
_ALL_BUT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_BRACKETS_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_ESCAPED_COMMA = re.compile(rb"\\u002[cC]")


def parse_error(detail: str) -> ProtocolError:
    return ProtocolError(ErrorCode.PARSE_ERROR, f"Parse error: {detail}")


def precheck(data: bytes, limits: Limits) -> bytes:
    """The byte-level checks msgspec does not make, as few C-level passes over the body as
    possible. Returns the body's structure bytes (brackets, quotes and commas, in order), which
    the repeated-key check counts commas in."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise parse_error(_why_not_utf8(data)) from None
    structure = data.translate(None, _ALL_BUT_STRUCTURE_AND_COMMAS)
    # Every bracket is an upper bound on the depth; only beyond it is depth measured.
    if structure.count(b"{") + structure.count(b"[") > limits.max_depth:
        check_depth(data, limits.max_depth, structure)
    return structure


def _why_not_utf8(data: bytes) -> str:
    return "byte order mark is not allowed" if data.startswith(_BOM) else "body is not UTF-8"


def check_depth(data: bytes, max_depth: int, structure: bytes | None = None) -> None:
    """Measure nesting outside strings with C-level bytes operations only.

    Escaped backslashes, then escaped quotes, are blanked (left to right, as a JSON reader pairs
    them), so every remaining quote opens or closes a string. Keeping only quotes and brackets,
    every quote falls in an adjacent pair exactly when no string holds a bracket (counting
    pairs left to right pairs quotes as the text does: each run of quotes starts on an opening
    one), and then the quotes can simply be dropped; otherwise strings are cut out by
    splitting on quotes. Each pass of deleting every innermost
    "()" then lowers the depth of well-formed text by one. Malformed text may be mis-measured,
    but it is a parse error whichever way it is refused.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        skeleton = data.translate(None, _ALL_BUT_STRUCTURE)
    elif structure is not None:
        skeleton = structure.translate(None, b",")
    else:
        skeleton = data.translate(None, _ALL_BUT_STRUCTURE)
    if skeleton.count(b'""') * 2 == skeleton.count(b'"'):
        brackets = skeleton.translate(_BRACKETS_TO_PARENS, b'"')
    else:
        pieces = data.split(b'"')
        if len(pieces) % 2 == 0:
            raise parse_error("unterminated string")
        brackets = b"".join(pieces[0::2]).translate(_BRACKETS_TO_PARENS, _ALL_BUT_BRACKETS)
    passes = 0
    while b"()" in brackets:
        passes += 1
        if passes > max_depth:
            raise parse_error(f"nesting deeper than {max_depth}")
        brackets = brackets.replace(b"()", b"")
    if passes + brackets.count(b"(") > max_depth:
        raise parse_error(f"nesting deeper than {max_depth}")


def read_top(data: bytes, limits: Limits) -> tuple[Top, int]:
    """Check the text and decode its top two levels, the rest staying unparsed but validated.

    An empty body and a byte order mark need no check of their own: msgspec refuses both (the
    BOM is not JSON whitespace), and the message says which it was. Returns the top and the
    number of commas in the body.
    """
    structure = precheck(data, limits)
    try:
        top: Top = TOP.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise parse_error(_describe(exc, data)) from None
    except RecursionError:
        raise parse_error("nesting too deep") from None
    # Skipping validates syntax but not number ranges or string lengths; when either could be
    # exceeded, decode everything once (rare: huge numbers, or a body longer than the limit).
    long_strings_possible = len(data) - 2 > limits.max_string_length
    shape = data.translate(_NUMBER_SHAPE, _SIGNS)
    if (
        long_strings_possible
        or _HUGE_EXPONENT in shape
        or (len(shape) >= 200 and _LONG_DIGIT_RUN in shape)
    ):
        value = decode_any(data)
        if long_strings_possible:
            _check_string_lengths(value, limits.max_string_length)
    return top, structure.count(b",")


def decode_any(raw: bytes | msgspec.Raw) -> Any:
    try:
        return ANY_VALUE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise parse_error(_describe(exc)) from None
    except RecursionError:
        raise parse_error("nesting too deep") from None


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


def has_duplicate_keys(raw: bytes, message: dict[str, Member], commas: int) -> bool:
    """Whether the message object, or an object directly inside it, repeats a key.

    Those are the objects the gateway interprets (the message, params, result, error); deeper
    objects are passed through to a peer that reads them itself, so there a repeated key keeps
    JSON's usual last-wins. ``message`` is ``raw`` decoded last-wins, two levels deep, and
    ``commas`` the number of commas in ``raw``.

    A comma in JSON text is a separator (N members or elements have N - 1) or lies inside a
    string. Re-encoding the decoded two levels (msgspec writes the deeper raw spans back
    verbatim, separators compactly, commas in strings as they are) therefore gives exactly as
    many commas as ``raw`` when last-wins dropped nothing; every dropped member takes at least
    its separator with it. One encode and one count, both in C. This holds when no string at
    those two levels spells a comma as the escape ``\u002c`` (decoded, it would count where
    the text has none); when the text holds one, keys are counted by the standard library.
    """
    if b"\\u002" in raw and _ESCAPED_COMMA.search(raw) is not None:
        return _repeats_key_in_two_levels(raw)
    return _ENCODER.encode(message).count(b",") != commas


class _Pairs:
    __slots__ = ("repeats", "values")

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.repeats = len({key for key, _ in pairs}) != len(pairs)
        self.values = [value for _, value in pairs]


def _repeats_key_in_two_levels(raw: bytes) -> bool:
    """The exact check; msgspec has already validated the text, so json cannot fail here."""
    try:
        message = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_Pairs,
            parse_int=_ignore,
            parse_float=_ignore,
            parse_constant=_ignore,
        )
    except (ValueError, RecursionError):  # pragma: no cover - msgspec accepted this text
        raise parse_error("invalid JSON") from None
    if not isinstance(message, _Pairs):
        return False
    return message.repeats or any(
        isinstance(value, _Pairs) and value.repeats for value in message.values
    )


def _ignore(literal: str) -> None:
    return None


def _describe(exc: Exception, data: bytes | None = None) -> str:
    if data is not None and not data.strip(_JSON_WHITESPACE):
        return "empty body"
    if data is not None and data.startswith(_BOM):
        return "byte order mark is not allowed"
    text = str(exc)
    if text.startswith("JSON is malformed: "):
        text = text[len("JSON is malformed: ") :]
    return text.split(" - at ", 1)[0] or "invalid JSON"
