"""Bytes to JSON-RPC messages, with the precise error for every way a body can be wrong.

Decision order (first failure wins), which the peek repeats exactly:

1. body longer than ``max_body_bytes``       -> -32600, id null, HTTP 413
2. not a JSON value we accept (see _json)     -> -32700, id null
3. a JSON array: batch not allowed / empty / longer than ``max_batch`` / a member invalid
                                              -> -32600, id null
4. not an object, or not a valid JSON-RPC 2.0 envelope
                                              -> -32600, with the id if it is a string/integer
5. a request for a method JSON-RPC reserves (``rpc.*``)
                                              -> -32601, with the id
6. params an array (MCP params are named), or a routed method (tools/call, prompts/get,
   resources/read) without a string ``params.name`` / ``params.uri``
                                              -> -32602, with the id
"""

from __future__ import annotations

from typing import Any

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._json import read_json
from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    RequestId,
    Response,
)

# The member of params that names the routing target of each routed method.
ROUTING_PARAM: dict[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}

_MISSING: Any = object()
_REQUEST_MEMBERS = frozenset({"jsonrpc", "id", "method", "params"})
_RESULT_MEMBERS = frozenset({"jsonrpc", "id", "result"})
_ERROR_MEMBERS = frozenset({"jsonrpc", "id", "error"})
_ERROR_OBJECT_MEMBERS = frozenset({"code", "message", "data"})
_DEFAULT_LIMITS = Limits()


def is_request_id(value: object) -> bool:
    # bool is an int subclass in Python and must not pass for one.
    return type(value) is str or type(value) is int


def invalid_request(detail: str, request_id: RequestId | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, f"Invalid Request: {detail}", id=request_id)


def invalid_params(detail: str, request_id: RequestId | None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, f"Invalid params: {detail}", id=request_id)


def check_body_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_body_bytes:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid Request: body larger than {limits.max_body_bytes} bytes",
            http_status=413,
        )


def parse_message(
    data: bytes, limits: Limits = _DEFAULT_LIMITS, *, allow_batch: bool = False
) -> Message | list[Message]:
    """Parse one HTTP body. Raises ProtocolError, and nothing else, for any bad input.

    ``allow_batch`` is for sessions on protocol revision 2025-03-26, the only one with batches.
    """
    check_body_size(data, limits)
    value = read_json(data, limits)
    if isinstance(value, list):
        check_batch(value, limits, allow_batch)
        return [_batch_member(item, index) for index, item in enumerate(value)]
    return message_from_json(value)


def check_batch(value: list[Any], limits: Limits, allow_batch: bool) -> None:
    if not allow_batch:
        raise invalid_request("batches are allowed only in protocol revision 2025-03-26")
    if not value:
        raise invalid_request("empty batch")
    if len(value) > limits.max_batch:
        raise invalid_request(f"batch longer than {limits.max_batch}")


def _batch_member(item: Any, index: int) -> Message:
    # All or nothing: one bad member refuses the batch, answered once with a null id.
    try:
        return message_from_json(item)
    except ProtocolError as exc:
        raise ProtocolError(
            exc.code, f"{exc.message} (batch member {index})", data={"index": index}
        ) from None


def message_from_json(value: Any) -> Message:
    """Validate one decoded JSON value as a JSON-RPC 2.0 message for MCP."""
    if not isinstance(value, dict):
        raise invalid_request("a message must be a JSON object")
    raw_id = value.get("id", _MISSING)
    known_id: RequestId | None = raw_id if is_request_id(raw_id) else None
    if value.get("jsonrpc") != "2.0":
        raise invalid_request('"jsonrpc" must be "2.0"', known_id)
    if "method" in value:
        return _request_or_notification(value, raw_id, known_id)
    if "result" in value or "error" in value:
        return _response(value, raw_id, known_id)
    raise invalid_request('a message needs "method", "result" or "error"', known_id)


def _request_or_notification(
    value: dict[str, Any], raw_id: Any, known_id: RequestId | None
) -> Message:
    if not value.keys() <= _REQUEST_MEMBERS:
        raise invalid_request("unexpected member in a request", known_id)
    method = value["method"]
    if type(method) is not str or not method:
        raise invalid_request('"method" must be a non-empty string', known_id)
    params = value.get("params", _MISSING)
    if params is _MISSING:
        params = None
    elif not isinstance(params, dict | list):
        raise invalid_request('"params" must be an object', known_id)
    if raw_id is _MISSING:
        if isinstance(params, list):
            raise invalid_params("MCP params must be an object, not an array", None)
        return Notification(method, params)
    if known_id is None:
        raise invalid_request('"id" must be a string or an integer')
    if method.startswith("rpc."):
        raise ProtocolError(
            ErrorCode.METHOD_NOT_FOUND, "Method not found: rpc.* names are reserved", id=known_id
        )
    if isinstance(params, list):
        raise invalid_params("MCP params must be an object, not an array", known_id)
    routing_member = ROUTING_PARAM.get(method)
    if routing_member is not None and (
        params is None or type(params.get(routing_member)) is not str
    ):
        raise invalid_params(f"{method} needs a string params.{routing_member}", known_id)
    return Request(known_id, method, params)


def _response(value: dict[str, Any], raw_id: Any, known_id: RequestId | None) -> Message:
    if "result" in value:
        if not value.keys() <= _RESULT_MEMBERS:
            raise invalid_request("unexpected member in a response", known_id)
        if known_id is None:
            raise invalid_request('a response needs a string or integer "id"')
        return Response(known_id, value["result"])
    if not value.keys() <= _ERROR_MEMBERS:
        raise invalid_request("unexpected member in an error response", known_id)
    if raw_id is _MISSING or (raw_id is not None and known_id is None):
        raise invalid_request('an error response needs a string, integer or null "id"')
    error = value["error"]
    if not isinstance(error, dict) or not error.keys() <= _ERROR_OBJECT_MEMBERS:
        raise invalid_request('"error" must be an object of code, message and data', known_id)
    code, message = error.get("code"), error.get("message")
    if type(code) is not int or type(message) is not str:
        raise invalid_request("an error needs an integer code and a string message", known_id)
    return ErrorResponse(known_id, code, message, error.get("data"))
