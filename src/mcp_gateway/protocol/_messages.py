"""The four JSON-RPC 2.0 message shapes MCP uses, as plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

# MCP ids are strings or integers, never float or bool; null appears only in error responses
# whose request id could not be read. Integers are Python ints: exact at any size.
RequestId: TypeAlias = str | int
# MCP params are always an object (named parameters); a JSON-RPC array is refused with -32602.
Params: TypeAlias = dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: Params = None


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: Params = None


@dataclass(frozen=True, slots=True)
class Response:
    id: RequestId
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    id: RequestId | None
    code: int
    message: str
    data: Any = None


Message: TypeAlias = Request | Notification | Response | ErrorResponse
