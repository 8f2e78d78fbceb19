"""The hot-path look at a body: kind, method, id and routing name, nothing more.

The peek runs the same reader and the same envelope decisions as parse_message (see
_envelope); it only skips decoding the values the gateway passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_gateway.protocol._envelope import Kind, read_envelopes
from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import RequestId

_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Peek:
    kind: Kind
    method: str | None
    id: RequestId | None
    # params.name for tools/call and prompts/get, params.uri for resources/read.
    name: str | None


def peek(data: bytes, limits: Limits = _DEFAULT_LIMITS, *, allow_batch: bool = False) -> Peek:
    """What the router needs to route a body. Raises the ProtocolError parse_message would."""
    envelope = read_envelopes(data, limits, allow_batch)
    if isinstance(envelope, list):
        return Peek("batch", None, None, None)
    return Peek(envelope[0], envelope[2], envelope[1], envelope[3])
