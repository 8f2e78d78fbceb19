"""A test OAuth issuer: real RSA and EC keys, a JWKS served over real HTTP (hypercorn on
loopback), tokens minted with PyJWT. Nothing here switches a check off: tokens are signed and
verified for real; a test that wants a bad token mints one (expired, another audience, a key
the JWKS does not publish)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import hypercorn.config
import hypercorn.trio
import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

JWKS_PATH = "/jwks.json"


@dataclass
class SigningKey:
    kid: str
    algorithm: str  # RS256 or ES256
    private: PrivateKeyTypes

    @classmethod
    def new(cls, algorithm: str = "RS256") -> SigningKey:
        private: PrivateKeyTypes
        if algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}", algorithm, private)

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))  # type: ignore[arg-type]
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}


@dataclass
class Issuer:
    """What a test holds: the issuer URL, the keys it publishes, and a token minter."""

    url: str
    keys: list[SigningKey]
    fetches: int = 0
    fetched: trio.Event = field(default_factory=trio.Event)

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def publish(self, key: SigningKey) -> None:
        """Start publishing another key (a rotation): the next JWKS fetch returns it."""
        self.keys.append(key)

    def jwks(self) -> bytes:
        return json.dumps({"keys": [k.public_jwk() for k in self.keys]}).encode()

    def token(
        self,
        audience: str | Sequence[str],
        *,
        scopes: Sequence[str] = (),
        lifetime: float = 300.0,
        key: SigningKey | None = None,
        issuer: str | None = None,
        subject: str = "user-1",
        **claims: Any,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + int(lifetime),
            "scope": " ".join(scopes),
            **claims,
        }
        return jwt.encode(payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid})  # type: ignore[arg-type]


def _app(issuer: Issuer) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] != JWKS_PATH:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        issuer.fetches += 1
        issuer.fetched.set()
        issuer.fetched = trio.Event()
        body = issuer.jwks()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def running_issuer(*algorithms: str) -> AsyncIterator[Issuer]:
    """An issuer on loopback publishing one key per algorithm (default: one RS256, one ES256)."""
    keys = [SigningKey.new(a) for a in (algorithms or ("RS256", "ES256"))]
    issuer = Issuer("", keys)
    settings = hypercorn.config.Config()
    settings.bind = ["127.0.0.1:0"]
    settings.accesslog = None
    settings.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(hypercorn.trio.serve, _app(issuer), settings)
        issuer.url = urls[0].replace("0.0.0.0", "127.0.0.1")
        yield issuer
        nursery.cancel_scope.cancel()
