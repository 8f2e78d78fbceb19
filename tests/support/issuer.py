"""A test OAuth issuer: real RSA and EC keys, a JWKS served over real HTTP (hypercorn on
loopback), tokens minted with PyJWT. Nothing here switches a check off: tokens are signed and
verified for real; a test that wants a bad token mints one (expired, another audience, a key
the JWKS does not publish)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import hypercorn.config
import hypercorn.trio
import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

JWKS_PATH = "/jwks.json"
# The OAuth 2.0 token endpoint (RFC 6749 §4.4, client credentials) of the issuer.
TOKEN_PATH = "/token"


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
    # The token endpoint: registered clients (id → secret), what it issues, what it was asked.
    clients: dict[str, str] = field(default_factory=dict)
    token_lifetime: float = 300.0
    token_status: int = 200  # anything else: the endpoint is failing (a 503, say)
    token_requests: list[TokenRequest] = field(default_factory=list)
    issued: dict[str, IssuedToken] = field(default_factory=dict)

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def accepts(self, access_token: str, audience: str) -> bool:
        """What a resource server checks: our signature and audience, and the token is one we
        issued, not revoked, and not past its expiry (to the sub-second: `exp` is whole seconds)."""
        issued = self.issued.get(access_token)
        if issued is None or issued.revoked or time.time() >= issued.expires_at:
            return False
        try:
            jwt.decode(
                access_token,
                self.keys[0].private.public_key(),  # type: ignore[union-attr]
                algorithms=[self.keys[0].algorithm],
                audience=audience,
                issuer=self.url,
            )
        except jwt.InvalidTokenError:
            return False
        return True

    def revoke_all(self) -> None:
        for issued in self.issued.values():
            issued.revoked = True

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


@dataclass
class TokenRequest:
    """One request the token endpoint received: how the client authenticated, and its form."""

    client_id: str | None
    method: str  # client_secret_basic, client_secret_post, or none
    form: dict[str, str]


@dataclass
class IssuedToken:
    client_id: str
    audience: str | None
    expires_at: float
    revoked: bool = False


def _client_of(headers: dict[bytes, bytes], form: dict[str, str]) -> tuple[str | None, str | None, str]:
    basic = headers.get(b"authorization", b"")
    if basic.lower().startswith(b"basic "):
        pair = base64.b64decode(basic[6:]).decode()
        client_id, _, secret = pair.partition(":")
        return unquote_plus(client_id), unquote_plus(secret), "client_secret_basic"
    if "client_id" in form:
        return form["client_id"], form.get("client_secret"), "client_secret_post"
    return None, None, "none"


def _token_answer(issuer: Issuer, headers: dict[bytes, bytes], body: bytes) -> tuple[int, dict[str, Any]]:
    """RFC 6749 §4.4 and §5: an access token for a registered client, or the error."""
    form = dict(parse_qsl(body.decode()))
    client_id, secret, method = _client_of(headers, form)
    issuer.token_requests.append(TokenRequest(client_id, method, form))
    if issuer.token_status != 200:
        return issuer.token_status, {"error": "temporarily_unavailable"}
    if client_id is None or issuer.clients.get(client_id) != secret:
        return 401, {"error": "invalid_client", "error_description": f"client {client_id} unknown or bad secret"}
    if form.get("grant_type") != "client_credentials":
        return 400, {"error": "unsupported_grant_type"}
    audience = form.get("resource") or form.get("audience")
    now = time.time()
    claims: dict[str, Any] = {"iss": issuer.url, "sub": client_id, "client_id": client_id, "iat": int(now),
                              "exp": int(now + issuer.token_lifetime) + 1, "jti": uuid.uuid4().hex}
    if audience:
        claims["aud"] = audience
    if form.get("scope"):
        claims["scope"] = form["scope"]
    key = issuer.keys[0]
    token = jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})  # type: ignore[arg-type]
    issuer.issued[token] = IssuedToken(client_id, audience, now + issuer.token_lifetime)
    answer = {"access_token": token, "token_type": "Bearer", "expires_in": issuer.token_lifetime}
    if form.get("scope"):
        answer["scope"] = form["scope"]
    return 200, answer


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send: Any, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bearer_required(app: Any, issuer: Issuer, audience: str) -> Any:
    """An ASGI wrapper in front of an MCP server: every HTTP request needs a bearer token the
    issuer issued for `audience` and that is still valid; else 401, as a resource server does.
    The tokens it saw are kept on the wrapper (`seen`)."""
    seen: list[str] = []

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            value = headers.get(b"authorization", b"").decode()
            token = value[7:] if value.lower().startswith("bearer ") else ""
            if not issuer.accepts(token, audience):
                guarded.refused += 1  # type: ignore[attr-defined]
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"www-authenticate", b'Bearer error="invalid_token"'), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            seen.append(token)
        await app(scope, receive, send)

    guarded.seen = seen  # type: ignore[attr-defined]
    guarded.refused = 0  # type: ignore[attr-defined]
    return guarded


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
        if scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            status, answer = _token_answer(issuer, dict(scope["headers"]), await _read_body(receive))
            await _send_json(send, status, answer)
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
