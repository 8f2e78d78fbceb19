"""The one exception the upstream layer lets out: httpx, SSE and JSON errors are translated here."""

from __future__ import annotations

from typing import Any


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
