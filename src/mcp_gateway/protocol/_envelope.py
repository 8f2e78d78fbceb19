"""The JSON-RPC envelope of a body: what both the full parser and the peek decide on.

Reading stops at the envelope: the members of the message object, of ``params`` and of
``error`` are looked at; the values inside them (``params.arguments``, ``params._meta``,
``result``, ``error.data``) stay unparsed ``msgspec.Raw`` spans, already validated as JSON.
The full parser decodes those spans afterwards; the peek never does. Every decision about a
body is made here, once, which is why the two always give the same answer.

Decision order (first failure wins):

1. body longer than ``max_body_bytes``            -> -32600, id null, HTTP 413
2. not a JSON text we accept (see _json), or a key repeated in the message object or in an
   object directly inside it (params, result, error ...)  -> -32700, id null
3. a JSON array: batch not allowed here / empty / longer than ``max_batch`` / a member
   invalid (its own code, reported once)          -> id null
4. not an object, or not a valid JSON-RPC 2.0 envelope
                                                  -> -32600, with the id if it is a string/integer
5. a request for a method JSON-RPC reserves (``rpc.*``)
                                                  -> -32601, with the id
6. params an array (MCP params are named), or a routed method (tools/call, prompts/get,
   resources/read) without a string ``params.name`` / ``params.uri``
                                                  -> -32602, with the id
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._json import (
    RAW_SCALAR,
    TOP,
    Member,
    Top,
    has_duplicate_keys,
    parse_error,
    read_top,
)
from mcp_gateway.protocol._limits import Limits
from mcp_gateway.protocol._messages import RequestId

Kind: TypeAlias = Literal["request", "notification", "response", "error", "batch"]

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


# What a message object says, as a plain tuple (this is the hot path):
# (kind, id, method, routing name, payload). The payload is the raw params members of a request
# or notification, the two-level result of a response, or (code, message, raw data) of an error.
Envelope: TypeAlias = tuple[Kind, RequestId | None, str | None, str | None, Any]


def invalid_request(detail: str, request_id: RequestId | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, f"Invalid Request: {detail}", id=request_id)


def invalid_params(detail: str, request_id: RequestId | None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAMS, f"Invalid params: {detail}", id=request_id)


def body_too_large(limits: Limits) -> ProtocolError:
    return ProtocolError(
        ErrorCode.INVALID_REQUEST,
        f"Invalid Request: body larger than {limits.max_body_bytes} bytes",
        http_status=413,
    )


def read_envelopes(data: bytes, limits: Limits, allow_batch: bool) -> Envelope | list[Envelope]:
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise TypeError(f"a body is bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > limits.max_body_bytes:  # first, before any other work
        raise body_too_large(limits)
    top, commas = read_top(data, limits)
    if type(top) is list:
        _check_batch(top, limits, allow_batch)
        return [_batch_member(raw, index) for index, raw in enumerate(top)]
    return read_envelope(top, data, commas)


def _check_batch(members: list[msgspec.Raw], limits: Limits, allow_batch: bool) -> None:
    if not allow_batch:
        raise invalid_request("batches are allowed only in protocol revision 2025-03-26")
    if not members:
        raise invalid_request("empty batch")
    if len(members) > limits.max_batch:
        raise invalid_request(f"batch longer than {limits.max_batch}")


def _batch_member(raw: msgspec.Raw, index: int) -> Envelope:
    # All or nothing: one bad member refuses the batch, answered once with a null id.
    try:
        member = bytes(raw)
        return read_envelope(TOP.decode(member), member, member.count(b","))
    except ProtocolError as exc:
        raise ProtocolError(
            exc.code, f"{exc.message} (batch member {index})", data={"index": index}
        ) from None


def _scalar(raw: msgspec.Raw) -> Any:
    """A raw value decoded if it is a string, number, boolean or null; else _MISSING."""
    try:
        return RAW_SCALAR.decode(raw)
    except msgspec.ValidationError:
        return _MISSING


def read_envelope(message: Top, raw: bytes, commas: int) -> Envelope:
    """Validate one message object, decoded two levels deep."""
    if type(message) is not dict:
        raise invalid_request("a message must be a JSON object")
    if has_duplicate_keys(raw, message, commas):
        raise parse_error("duplicate key in the message or in its params, result or error")
    raw_id = message.get("id", _MISSING)
    # MCP ids are strings or integers; bool is an int subclass and must not pass for one.
    known_id: RequestId | None = raw_id if type(raw_id) is str or type(raw_id) is int else None
    if message.get("jsonrpc") != "2.0":
        raise invalid_request('"jsonrpc" must be "2.0"', known_id)
    if "method" in message:
        return _request_or_notification(message, raw_id, known_id)
    if "result" in message:
        return _result(message, known_id)
    if "error" in message:
        return _error(message, raw_id, known_id)
    raise invalid_request('a message needs "method", "result" or "error"', known_id)


def _request_or_notification(
    message: dict[str, Member], raw_id: Any, known_id: RequestId | None
) -> Envelope:
    if not message.keys() <= _REQUEST_MEMBERS:
        raise invalid_request("unexpected member in a request", known_id)
    method = message["method"]
    if type(method) is not str or not method:
        raise invalid_request('"method" must be a non-empty string', known_id)
    params = message.get("params", _MISSING)
    if params is _MISSING:
        params = None
    elif type(params) is not dict and type(params) is not list:
        raise invalid_request('"params" must be an object', known_id)
    if raw_id is _MISSING:
        if type(params) is list:
            raise invalid_params("MCP params must be an object, not an array", None)
        return ("notification", None, method, None, params)
    if known_id is None:
        raise invalid_request('"id" must be a string or an integer')
    if method.startswith("rpc."):
        raise ProtocolError(
            ErrorCode.METHOD_NOT_FOUND, "Method not found: rpc.* names are reserved", id=known_id
        )
    if type(params) is list:
        raise invalid_params("MCP params must be an object, not an array", known_id)
    name = None
    routing_member = ROUTING_PARAM.get(method)
    if routing_member is not None:
        raw_name = None if params is None else params.get(routing_member)
        try:
            name = None if raw_name is None else RAW_SCALAR.decode(raw_name)
        except msgspec.ValidationError:  # an object or array
            name = None
        if type(name) is not str:
            raise invalid_params(f"{method} needs a string params.{routing_member}", known_id)
    return ("request", known_id, method, name, params)


def _result(message: dict[str, Member], known_id: RequestId | None) -> Envelope:
    if not message.keys() <= _RESULT_MEMBERS:
        raise invalid_request("unexpected member in a response", known_id)
    if known_id is None:
        raise invalid_request('a response needs a string or integer "id"')
    return ("response", known_id, None, None, message["result"])


def _error(message: dict[str, Member], raw_id: Any, known_id: RequestId | None) -> Envelope:
    if not message.keys() <= _ERROR_MEMBERS:
        raise invalid_request("unexpected member in an error response", known_id)
    if raw_id is _MISSING or (raw_id is not None and known_id is None):
        raise invalid_request('an error response needs a string, integer or null "id"')
    error = message["error"]
    if not isinstance(error, dict) or not error.keys() <= _ERROR_OBJECT_MEMBERS:
        raise invalid_request('"error" must be an object of code, message and data', known_id)
    code = _scalar(error["code"]) if "code" in error else None
    text = _scalar(error["message"]) if "message" in error else None
    if type(code) is not int or type(text) is not str:
        raise invalid_request("an error needs an integer code and a string message", known_id)
    return ("error", known_id, None, None, (code, text, error.get("data")))
