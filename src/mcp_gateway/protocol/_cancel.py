"""`notifications/cancelled` names the request it cancels in ``params.requestId``; the router
sends it to the upstream running that request."""

from __future__ import annotations

from typing import Final

import msgspec

from mcp_gateway.protocol._json import RAW_SCALAR, TOP
from mcp_gateway.protocol._messages import RequestId

CANCELLED_METHOD: Final = "notifications/cancelled"


def cancelled_request_id(data: bytes) -> RequestId | None:
    """``params.requestId`` of a `notifications/cancelled` body that peek accepted; None when it
    is missing or not a string or integer."""
    message = TOP.decode(data)
    params = message.get("params") if isinstance(message, dict) else None
    raw = params.get("requestId") if isinstance(params, dict) else None
    if raw is None:
        return None
    try:
        value = RAW_SCALAR.decode(raw)
    except msgspec.ValidationError:
        return None
    return value if type(value) is str or type(value) is int else None
