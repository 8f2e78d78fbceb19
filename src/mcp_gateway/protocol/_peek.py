"""The hot-path look at a body: kind, method, id and routing name, nothing more.

The peek runs the same reader and the same envelope decisions as parse_message (see
_envelope); it only skips decoding the values the gateway passes through untouched.
"""

from __future__ import annotations

from typing import NamedTuple

from mcp_gateway.protocol._envelope import Kind, read_envelopes
from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import RequestId

_DEFAULT_LIMITS = Limits()


class Peek(NamedTuple):
    """Immutable; a NamedTuple rather than a frozen dataclass because it is built on every
    request on the hot path and costs a third as much to build."""

    kind: Kind
    method: str | None
    id: RequestId | None
    # params.name for tools/call and prompts/get, params.uri for resources/read.
    name: str | None


def peek(data: bytes, limits: Limits = _DEFAULT_LIMITS, *, allow_batch: bool = False) -> Peek:
    """What the router needs to route a body. Raises the ProtocolError parse_message would."""
    envelope = read_envelopes(data, limits, allow_batch)
    if type(envelope) is list:
        return _BATCH
    kind, request_id, method, name, _ = envelope
    return _new(Peek, (kind, method, request_id, name))


_BATCH = Peek("batch", None, None, None)
_new = tuple.__new__
