"""A bearer JWT checked against keys already held: signature, issuer, audience, expiry. No I/O.

PyJWT does the JOSE work (it reads `alg` from the header only to check it against the
configured list: a token may not choose a weaker or unsigned algorithm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jwt

from mcp_gateway.auth._policy import Principal

# Bigger is not a token of ours: refuse before any parsing (a header bomb costs nothing then).
MAX_TOKEN_LENGTH = 16_384


class InvalidToken(Exception):
    """The token is missing, malformed, or fails a check; the message says which, and is safe
    to show the client (it never contains the token)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def unverified_key_id(token: str) -> str | None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as error:
        raise InvalidToken("malformed token") from error
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def verify_token(
    token: str,
    key_for: Callable[[str | None], Any],
    *,
    issuer: str,
    audiences: Sequence[str],
    algorithms: Sequence[str],
    leeway: float,
) -> Principal:
    """Verify `token`; `key_for(kid)` returns the issuer's verification key for that key id, or
    None when it has none. Raises InvalidToken."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too large")
    kid = unverified_key_id(token)
    key = key_for(kid)
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=list(audiences),
            issuer=issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("token expired") from error
    except jwt.InvalidAudienceError as error:
        raise InvalidToken("token not issued for this resource") from error
    except jwt.InvalidIssuerError as error:
        raise InvalidToken("token from another issuer") from error
    except jwt.InvalidAlgorithmError as error:
        raise InvalidToken("signing algorithm not accepted") from error
    except jwt.InvalidSignatureError as error:
        raise InvalidToken("bad signature") from error
    except jwt.InvalidTokenError as error:
        raise InvalidToken(f"invalid token ({type(error).__name__})") from error
    return Principal(
        subject=str(claims.get("sub", "")),
        scopes=_scopes(claims),
        expires_at=float(claims["exp"]),
        claims=claims,
    )


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    # RFC 9068 / RFC 8693: `scope` is a space-separated string; some issuers send `scp` (a list).
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()
