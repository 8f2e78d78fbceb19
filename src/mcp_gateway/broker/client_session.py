"""A client's gateway session as a request carries it (verified from its sealed token)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientSession:
    token: str  # the Mcp-Session-Id the client holds: a bearer credential, never logged
    sid: str  # the store key sealed inside it (what logs and the store use)
    protocol_version: str
