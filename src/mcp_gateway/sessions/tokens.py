"""Gateway session ids: AES-GCM sealed, so they verify without a lookup and cannot be forged.

A token carries a random 128-bit session id, the negotiated protocol revision and the issue
time. The first key seals; every configured key opens, which is how keys rotate: add the new
key in front, keep the old one until its sessions have expired, then drop it.
"""

from __future__ import annotations

import base64
import hmac
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_FORMAT_VERSION = 1
_NONCE_BYTES = 12
_HEADER = struct.Struct(">BQ")  # format version, issued-at (unix seconds)
_ASSOCIATED_DATA = b"mcp-gateway session v1"
# Longest sensible token; anything longer is rejected before any base64 or crypto work.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class SessionClaims:
    session_id: str  # 32 hex chars; the key of this session in the store
    protocol_version: str
    issued_at: int


def derive_key(secret: str | bytes) -> bytes:
    """Turn a configured secret into a 256-bit AES key (configs hold text, AES wants 32 bytes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    material = secret.encode() if isinstance(secret, str) else secret
    if len(material) < 16:
        raise ValueError("a session key needs at least 16 bytes of secret material")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mcp-gateway session key").derive(
        material
    )


class SessionTokens:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is required")
        self._ciphers = [AESGCM(key) for key in keys]
        self._sealing_key = bytes(keys[0])

    def derived_key(self, purpose: bytes) -> bytes:
        """A key for `purpose`, derived from the sealing key: every replica configured with the
        same session keys derives the same one, and it reveals nothing of the sealing key."""
        return hmac.digest(self._sealing_key, b"mcp-gateway derived key: " + purpose, "sha256")

    def issue(self, protocol_version: str, *, now: float | None = None) -> str:
        issued_at = int(time.time() if now is None else now)
        session_id = os.urandom(16)
        plaintext = _HEADER.pack(_FORMAT_VERSION, issued_at) + session_id + protocol_version.encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._ciphers[0].encrypt(nonce, plaintext, _ASSOCIATED_DATA)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def verify(self, token: str) -> SessionClaims | None:
        """The claims of a token sealed by one of our keys, or None for anything else."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) < _NONCE_BYTES + 16:
            return None
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                plaintext = cipher.decrypt(nonce, sealed, _ASSOCIATED_DATA)
            except InvalidTag:
                continue
            return _claims_from(plaintext)
        return None


def _claims_from(plaintext: bytes) -> SessionClaims | None:
    if len(plaintext) < _HEADER.size + 16:
        return None
    version, issued_at = _HEADER.unpack_from(plaintext)
    if version != _FORMAT_VERSION:
        return None
    session_id = plaintext[_HEADER.size : _HEADER.size + 16].hex()
    try:
        protocol_version = plaintext[_HEADER.size + 16 :].decode()
    except UnicodeDecodeError:
        return None
    return SessionClaims(session_id, protocol_version, issued_at)
