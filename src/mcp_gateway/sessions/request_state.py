"""`requestState` as the gateway hands it to clients: sealed, bound to its upstream and request.

In MCP 2026-07-28 a server that needs input mid-request answers `InputRequiredResult` with an
opaque `requestState`; the client retries the same request with its `inputResponses` and that
state. The client holds the state between rounds, so it is attacker-controlled: a client could
edit it, replay it on another tool, or send an upstream's state to a different upstream.

The gateway therefore never gives a client an upstream's state as it came. It seals it, with
AES-GCM under a key derived from the session keys (every replica configured alike opens what
another sealed; rotation works as for session tokens: the first key seals, all keys open), into
a token that also names:

- the upstream that minted it (`server`): a retry goes back to that upstream and no other;
- the request it belongs to (`method` and the prefixed `name`/`uri` the client called): a
  state cannot be replayed against another tool;
- the caller's authorization context (`principal`, empty without inbound auth): a state minted
  for one subject cannot be used by another;
- an expiry.

The upstream's own state is encrypted, not just signed: it is the upstream's memory and may
hold what the upstream would not show its client (the revision allows plaintext; we don't rely
on it). `state` may also be a gateway continuation (a legacy upstream's call the gateway holds
while a modern client answers what the upstream asked): `kind` says which.

Any failure to open (wrong key, edited, expired, another upstream, another request, another
principal) is one answer: -32602 (Invalid params), HTTP 400, as the revision prescribes for a
state that does not verify. The reason goes to the log, not to the client.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_gateway.protocol import ErrorCode, ProtocolError, RequestId

StateKind = Literal["upstream", "continuation"]

TOKEN_PREFIX: Final = "mgw1."
DEFAULT_TTL_SECONDS: Final = 600.0
# Upstream states longer than this are refused before sealing (and tokens longer than the
# sealed form of it before any base64 or crypto work): a client holds and echoes it.
MAX_STATE_BYTES: Final = 64 * 1024
_NONCE_BYTES: Final = 12
_ASSOCIATED_DATA: Final = b"mcp-gateway requestState v1"
_KEY_PURPOSE: Final = b"mcp-gateway requestState key"
_MAX_TOKEN_CHARS: Final = len(TOKEN_PREFIX) + 4 * ((MAX_STATE_BYTES + 1024 + 2) // 3)


@dataclass(frozen=True, slots=True)
class RequestBinding:
    """What a sealed state is bound to: the upstream, and the request the client retries."""

    server: str
    method: str
    name: str  # the prefixed tool/prompt name or the resource URI, as the client sent it
    principal: str = ""


@dataclass(frozen=True, slots=True)
class OpenedState:
    kind: StateKind
    state: str


class RequestStateSeal:
    def __init__(self, keys: Sequence[bytes], *, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        # A key of its own (purpose-separated from the session-token key it derives from).
        self._ciphers = [AESGCM(hmac.digest(key, _KEY_PURPOSE, "sha256")) for key in keys]
        self._ttl = ttl_seconds

    def seal(
        self, binding: RequestBinding, state: str, *, kind: StateKind = "upstream", now: float | None = None
    ) -> str:
        """The token a client gets in place of `state` (an upstream's requestState, or a
        continuation id). Raises ValueError for a state longer than MAX_STATE_BYTES."""
        if len(state.encode()) > MAX_STATE_BYTES:
            raise ValueError(f"requestState longer than {MAX_STATE_BYTES} bytes")
        expires = int((time.time() if now is None else now) + self._ttl)
        claims = {
            "k": kind,
            "s": binding.server,
            "m": binding.method,
            "n": binding.name,
            "p": binding.principal,
            "e": expires,
            "v": state,
        }
        plaintext = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._ciphers[0].encrypt(nonce, plaintext, _ASSOCIATED_DATA)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(
        self,
        token: object,
        binding: RequestBinding,
        *,
        request_id: RequestId | None = None,
        now: float | None = None,
    ) -> OpenedState:
        """The state sealed in `token` for exactly this `binding`, or ProtocolError(-32602)."""
        reason = self._why_not(token, binding, time.time() if now is None else now)
        if isinstance(reason, OpenedState):
            return reason
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS, "requestState is invalid or expired", id=request_id, data={"reason": reason}
        )

    def server_of(self, token: object) -> str | None:
        """The upstream a token names, if it opens under one of our keys (expiry and binding
        not checked): how a retry that carries only a state is routed back to its upstream."""
        claims = self._claims(token)
        server = claims.get("s") if claims else None
        return server if isinstance(server, str) else None

    def _why_not(self, token: object, binding: RequestBinding, now: float) -> OpenedState | str:
        claims = self._claims(token)
        if claims is None:
            return "not sealed by this gateway"
        expires = claims.get("e")
        if not isinstance(expires, int) or now > expires:
            return "expired"
        if claims.get("s") != binding.server:
            return "minted by another upstream"
        if claims.get("m") != binding.method or claims.get("n") != binding.name:
            return "minted for another request"
        if claims.get("p") != binding.principal:
            return "minted for another principal"
        kind, state = claims.get("k"), claims.get("v")
        if kind not in ("upstream", "continuation") or not isinstance(state, str):
            return "malformed"
        return OpenedState(kind, state)

    def _claims(self, token: object) -> dict[str, object] | None:
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            return None
        body = token[len(TOKEN_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) <= _NONCE_BYTES + 16:
            return None
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                plaintext = cipher.decrypt(nonce, sealed, _ASSOCIATED_DATA)
            except InvalidTag:
                continue
            try:
                claims = json.loads(plaintext)
            except ValueError:
                return None
            return claims if isinstance(claims, dict) else None
        return None


__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_STATE_BYTES",
    "OpenedState",
    "RequestBinding",
    "RequestStateSeal",
    "StateKind",
]
