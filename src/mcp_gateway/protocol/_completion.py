"""`completion/complete` names its target inside ``params.ref``: a prompt by name, a resource
template by URI. The router needs that reference to route the request, and must rewrite it (the
gateway's prefix off) without touching any other byte of the body.

Not on the tools/call hot path: only completion requests are read this way.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from mcp_gateway.protocol._json import ANY_VALUE, RAW_SCALAR, TOP
from mcp_gateway.protocol._rewrite import blank_escapes, find_member, skip_scalar, skip_ws

COMPLETION_METHOD: Final = "completion/complete"
# ref.type → the member of ref that names the target (MCP 2025-11-25, completion).
REF_MEMBER: Final = {"ref/prompt": "name", "ref/resource": "uri"}

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENCODER = msgspec.json.Encoder()


class CompletionRef(NamedTuple):
    type: str  # "ref/prompt" | "ref/resource"
    value: str  # the prompt's name or the resource template's URI


def completion_ref(data: bytes) -> CompletionRef:
    """The reference of a `completion/complete` request body; ValueError when it has none we
    can route by (no ``params.ref`` object, an unknown ``type``, a missing or non-string name)."""
    params = _params(data)
    ref = _ref(params)
    ref_type = _string(ref.get("type"))
    member = REF_MEMBER.get(ref_type or "")
    if member is None:
        raise ValueError("params.ref.type must be ref/prompt or ref/resource")
    value = _string(ref.get(member))
    if value is None:
        raise ValueError(f"params.ref.{member} must be a string")
    return CompletionRef(ref_type or "", value)


def replace_completion_ref(data: bytes, ref: CompletionRef, new_value: str) -> bytes:
    """``data`` with ``params.ref.name`` (or ``.uri``) set to ``new_value``, every other byte kept.

    ``ref`` must be ``completion_ref(data)``; anything else is a ValueError.
    """
    if type(new_value) is not str:
        raise TypeError("the new reference must be a string")
    params = _params(data)
    ref_members = _ref(params)
    member = REF_MEMBER[ref.type]
    blanked = blank_escapes(data)
    params_start = find_member(
        data, blanked, skip_ws(blanked, 0), "params", lambda _, at: skip_scalar(blanked, at)
    )
    ref_start = find_member(data, blanked, params_start, "ref", lambda key, at: at + len(params[key]))
    start = find_member(data, blanked, ref_start, member, lambda key, at: at + len(ref_members[key]))
    end = start + len(ref_members[member])
    if ANY_VALUE.decode(data[start:end]) != ref.value:
        raise ValueError("the reference does not describe this body")
    return data[:start] + _ENCODER.encode(new_value) + data[end:]


def _params(data: bytes) -> dict[str, msgspec.Raw]:
    message = TOP.decode(data)
    if not isinstance(message, dict) or not isinstance(message.get("params"), dict):
        raise ValueError("the body has no params object")
    params: dict[str, msgspec.Raw] = message["params"]
    return params


def _ref(params: dict[str, msgspec.Raw]) -> dict[str, msgspec.Raw]:
    raw = params.get("ref")
    if raw is None:
        raise ValueError("params.ref is required")
    try:
        return _OBJECT.decode(raw)
    except msgspec.ValidationError:
        raise ValueError("params.ref must be an object") from None


def _string(raw: msgspec.Raw | None) -> str | None:
    if raw is None:
        return None
    try:
        value = RAW_SCALAR.decode(raw)
    except msgspec.ValidationError:
        return None
    return value if type(value) is str else None
