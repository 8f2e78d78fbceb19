"""Replace the routing name in a body without re-serializing it.

The router strips the gateway's prefix from ``params.name`` before a call goes upstream. Only
those bytes change: every other byte of the client's body reaches the upstream as sent (no
re-dump that could reorder keys, change number spellings or escapes).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

from mcp_gateway.protocol._envelope import ROUTING_PARAM
from mcp_gateway.protocol._json import ANY_VALUE, TOP
from mcp_gateway.protocol._peek import Peek

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_SCALAR = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")
_ENCODER = msgspec.json.Encoder()


def replace_routing_name(data: bytes, peek: Peek, new_name: str) -> bytes:
    """``data`` with the routing value (``params.name`` or ``params.uri``) set to ``new_name``.

    ``peek`` must be the peek of ``data`` (a routed request); anything else is a ValueError.
    """
    member = ROUTING_PARAM.get(peek.method or "")
    if peek.kind != "request" or member is None or peek.name is None:
        raise ValueError("only a routed request has a routing name to replace")
    if type(new_name) is not str:
        raise TypeError("the new routing name must be a string")
    start, end = _routing_value_span(bytes(data), member)
    if ANY_VALUE.decode(data[start:end]) != peek.name:
        raise ValueError("the peek does not describe this body")
    return data[:start] + _ENCODER.encode(new_name) + data[end:]


def _routing_value_span(data: bytes, member: str) -> tuple[int, int]:
    """Where the value of ``params.<member>`` lies in ``data``, a body that peek accepted.

    Its top-level members are the scalars jsonrpc, id, method and the params object; params'
    members are spans whose exact lengths the two-level decode already knows (keys are unique,
    the peek refused repeats), so each value is stepped over without being read.
    """
    message = TOP.decode(data)
    if not isinstance(message, dict) or not isinstance(message.get("params"), dict):
        raise ValueError("the body has no params object")
    params: dict[str, msgspec.Raw] = message["params"]
    if member not in params:
        raise ValueError(f"params has no {member}")
    blanked = blank_escapes(data)
    params_start = find_member(
        data, blanked, skip_ws(blanked, 0), "params", lambda _, at: skip_scalar(blanked, at)
    )
    value_start = find_member(
        data, blanked, params_start, member, lambda key, at: at + len(params[key])
    )
    return value_start, value_start + len(params[member])


def blank_escapes(data: bytes) -> bytes:
    """Same-length blanking of escapes, so every quote left opens or closes a string."""
    return data.replace(b"\\\\", b"__").replace(b'\\"', b"__") if b"\\" in data else data


def find_member(
    data: bytes,
    blanked: bytes,
    position: int,
    wanted: str,
    value_end: Callable[[str, int], int],
) -> int:
    """Where the value of member ``wanted`` starts in the object at ``position``."""
    if blanked[position : position + 1] != b"{":
        raise ValueError("expected an object")
    position = skip_ws(blanked, position + 1)
    while blanked[position : position + 1] == b'"':
        key_end = blanked.index(b'"', position + 1) + 1
        key = ANY_VALUE.decode(data[position:key_end])
        value_start = skip_ws(blanked, skip_ws(blanked, key_end) + 1)  # past the colon
        if key == wanted:
            return value_start
        position = skip_ws(blanked, value_end(key, value_start))
        if blanked[position : position + 1] != b",":
            break
        position = skip_ws(blanked, position + 1)
    raise ValueError(f"no member {wanted!r}")


def skip_ws(blanked: bytes, position: int) -> int:
    match = _WHITESPACE.match(blanked, position)
    assert match is not None
    return match.end()


def skip_scalar(blanked: bytes, position: int) -> int:
    if blanked[position : position + 1] == b'"':
        return blanked.index(b'"', position + 1) + 1
    match = _SCALAR.match(blanked, position)
    if match is None:
        raise ValueError("expected a scalar member before params")
    return match.end()


_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def replace_id(data: bytes, new_id: str | int) -> bytes:
    """``data`` (one JSON-RPC message object with an ``id``) with its id set to ``new_id``;
    every other byte as it was. The router tags the ids of server→client requests with the
    server that asked, and restores them on the client's response; ValueError if there is no id.
    """
    if type(new_id) is not str and type(new_id) is not int:
        raise TypeError("a request id is a string or an integer")
    members = _MEMBERS.decode(data)
    if "id" not in members:
        raise ValueError("the message has no id")
    blanked = blank_escapes(data)
    start = find_member(data, blanked, skip_ws(blanked, 0), "id", lambda key, at: at + len(members[key]))
    return data[:start] + _ENCODER.encode(new_id) + data[start + len(members["id"]) :]
