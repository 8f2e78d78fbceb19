"""The one exception the upstream layer lets out: httpx, SSE and JSON errors are translated here."""

from __future__ import annotations

import json
from typing import Any

import httpx


class UpstreamError(Exception):
    """An upstream could not be reached, answered badly, or answered with a JSON-RPC error.

    `status` is the HTTP status when one was received; `rpc_code`/`rpc_data` carry a JSON-RPC error
    the upstream returned (then the transport worked and the request itself was refused).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        rpc_code: int | None = None,
        rpc_data: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.rpc_code = rpc_code
        self.rpc_data = rpc_data

    @property
    def session_expired(self) -> bool:
        """The upstream no longer knows our session (Streamable HTTP answers 404)."""
        return self.status == 404


class NoSessionIssued(UpstreamError):
    """The upstream answered initialize but issued no `Mcp-Session-Id` (it keeps no sessions)."""


async def raise_rpc_error(name: str, what: str, response: httpx.Response) -> None:
    """A modern upstream refuses a request with a 4xx carrying its JSON-RPC error (e.g. -32021
    for a client capability the request did not declare): raised with that error's code, so it
    reaches the client as the upstream's answer rather than as an unavailable upstream."""
    if response.headers.get("content-type", "").partition(";")[0].strip() != "application/json":
        return
    try:
        decoded = json.loads(await response.aread())
    except ValueError:
        return
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int) and not isinstance(error["code"], bool):
        text = error.get("message") if isinstance(error.get("message"), str) else f"HTTP {response.status_code}"
        raise UpstreamError(
            f"{name}: {what}: {text}", status=response.status_code, rpc_code=error["code"], rpc_data=error.get("data")
        )
