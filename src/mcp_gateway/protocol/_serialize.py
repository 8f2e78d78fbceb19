"""Messages to bytes: compact UTF-8 JSON, members in JSON-RPC's usual order."""

from __future__ import annotations

import json
from typing import Any

from mcp_gateway.protocol._messages import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
)

# allow_nan=False: NaN/Infinity are not JSON; serializing them is a bug to surface, not hide.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _dump(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def to_jsonable(message: Message) -> dict[str, Any]:
    if isinstance(message, Request):
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": message.id, "method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Notification):
        out = {"jsonrpc": "2.0", "method": message.method}
        if message.params is not None:
            out["params"] = message.params
        return out
    if isinstance(message, Response):
        return {"jsonrpc": "2.0", "id": message.id, "result": message.result}
    if isinstance(message, ErrorResponse):
        error: dict[str, Any] = {"code": message.code, "message": message.message}
        if message.data is not None:
            error["data"] = message.data
        return {"jsonrpc": "2.0", "id": message.id, "error": error}
    raise TypeError(f"not a JSON-RPC message: {type(message).__name__}")


def serialize(message: Message | list[Message]) -> bytes:
    """UTF-8 JSON for one message or a batch. Raises ValueError for NaN/Infinity and
    UnicodeEncodeError for lone surrogates: neither can come out of parse_message."""
    if isinstance(message, list):
        return _dump([to_jsonable(item) for item in message])
    return _dump(to_jsonable(message))


def error_response(
    id: RequestId | None,
    code: int,
    message: str,
    data: Any = None,
) -> bytes:
    return serialize(ErrorResponse(id, int(code), message, data))


def result_response(id: RequestId, result: Any) -> bytes:
    return serialize(Response(id, result))
