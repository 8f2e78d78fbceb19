"""What an upstream gets in its `Authorization` header: the config's fixed `credential`, or an
OAuth 2.0 access token obtained with the client-credentials grant (RFC 6749 §4.4).

A token is fetched on first use, kept, and fetched again before it expires: at
`expires_in - min(60 s, expires_in / 5)` after it was issued (80 % of a short lifetime, a
minute before the end of a long one). Concurrent callers share one fetch. A failed fetch is
retried after a capped, jittered backoff (1 s doubling to 60 s); meanwhile callers get the token
still held while it has not expired, else the same failure at once, so a dead token endpoint is
not asked once per call. An upstream answering 401 to a token makes the next caller fetch a new
one at once (`credential_rejected`; at most once per `REJECTION_INTERVAL`, so an upstream that
refuses every token is not a token-endpoint flood).

Tokens are process-wide, one provider per server name (like `client.tls_context()`): the
broker's upstream clients and the router's backend sessions and routed calls in one
`mcp-gateway serve` share a token. A provider holds no task and no connection (each fetch uses
a client of its own), so it belongs to no nursery and outlives any Trio run harmlessly. A config
change of the server's `oauth` (or of its secret) replaces its provider.

Every token obtained is registered with `logs.register_secrets`; neither the token, the client
secret nor the token endpoint's answer is ever logged or put in an error message (an error says
what failed: the endpoint's URL without user info, the HTTP status, the OAuth `error` code).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import trio

from mcp_gateway.config import ServerConfig, UpstreamOAuth
from mcp_gateway.logs import get_logger, register_secrets
from mcp_gateway.upstream.backoff import Backoff
from mcp_gateway.upstream.errors import UpstreamError

__all__ = [
    "ClientCredentialsToken",
    "Credential",
    "cached_authorization",
    "credential_nowait",
    "credential_rejected",
    "upstream_authorization",
    "upstream_credential",
]

_log = get_logger("mcp_gateway.upstream")

# A token endpoint that does not say how long its token lives (expires_in is only RECOMMENDED,
# RFC 6749 §5.1): the token is used this long, then fetched again.
DEFAULT_LIFETIME_SECONDS: Final = 300.0
# Refresh this long before expiry at most (less for tokens living under five minutes).
REFRESH_MARGIN_SECONDS: Final = 60.0
# A 401 drops the token at most this often.
REJECTION_INTERVAL: Final = 5.0
TOKEN_REQUEST_TIMEOUT: Final = 10.0
MAX_TOKEN_RESPONSE_BYTES: Final = 64 * 1024
# RFC 6750 §2.1 b64token: what may follow "Bearer " in a header, and nothing else.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, slots=True)
class Credential:
    """An `Authorization` value and how long whoever keeps it may use it."""

    value: str | None
    # Epoch seconds: a holder that keeps the value (Envoy's fast path) must not use it after
    # this. None: no bound (a fixed credential, or none).
    use_until: float | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    value: str  # "Bearer <access_token>"
    obtained_at: float
    refresh_at: float
    expires_at: float


class ClientCredentialsToken:
    """The access token of one upstream (one `oauth` config): cached, refreshed, single-flight."""

    def __init__(
        self,
        server_name: str,
        settings: UpstreamOAuth,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self.server_name = server_name
        self.settings = settings
        self._clock = clock
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._token: _Token | None = None
        self._flight: trio.Event | None = None
        self._failure: UpstreamError | None = None
        self._retry_at = 0.0
        self._last_rejection = float("-inf")
        self.fetches = 0  # token requests made (observability and tests)

    def fresh_nowait(self) -> Credential | None:
        """The token when it needs no fetch (held and not due for refresh), else None."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return Credential(token.value, token.refresh_at)
        return None

    def held(self) -> str | None:
        """The token held, if it has not expired; never fetches (for best-effort requests)."""
        token = self._token
        return token.value if token is not None and self._clock() < token.expires_at else None

    async def current(self) -> Credential:
        """A valid token, fetched if none is held or it is due; raises UpstreamError."""
        while True:
            fresh = self.fresh_nowait()
            if fresh is not None:
                return fresh
            if self._flight is not None:
                await self._flight.wait()  # another caller is fetching: share its outcome
                continue
            now = self._clock()
            if now < self._retry_at:
                # Backing off after a failed fetch: the old token while it lasts, else the failure.
                return self._held_or_raise(now)
            return await self._fetch()

    def rejected(self, value: str | None) -> bool:
        """The upstream answered 401 to `value`: drop it so the next caller fetches a new one.
        True when it was dropped (the request may be sent again with a new token)."""
        token, now = self._token, self._clock()
        if token is None or token.value != value or now - self._last_rejection < REJECTION_INTERVAL:
            return False
        self._last_rejection = now
        self._token = None
        self._retry_at = 0.0
        _log.info("upstream refused its access token; fetching a new one", server=self.server_name)
        return True

    def _held_or_raise(self, now: float) -> Credential:
        token = self._token
        if token is not None and now < token.expires_at:
            return Credential(token.value, token.expires_at)
        assert self._failure is not None
        raise self._failure

    async def _fetch(self) -> Credential:
        self._flight = flight = trio.Event()
        try:
            self.fetches += 1
            try:
                token = await self._request()
            except UpstreamError as failure:
                now = self._clock()
                self._failure = failure
                self._retry_at = now + self._backoff.next_delay()
                _log.warning("access token request failed", server=self.server_name, reason=failure.message)
                return self._held_or_raise(now)
            self._token, self._failure, self._retry_at = token, None, 0.0
            self._backoff.reset()
            return Credential(token.value, token.refresh_at)
        finally:
            # Also when cancelled: a waiter then finds no flight and fetches itself.
            self._flight = None
            flight.set()

    async def _request(self) -> _Token:
        settings = self.settings
        form = {"grant_type": "client_credentials"}
        if settings.scopes:
            form["scope"] = " ".join(settings.scopes)
        if settings.resource is not None:
            form["resource"] = settings.resource
        if settings.audience is not None:
            form["audience"] = settings.audience
        headers = {"accept": "application/json"}
        if settings.auth_method == "client_secret_post":
            form |= {"client_id": settings.client_id, "client_secret": settings.client_secret}
        else:
            headers["authorization"] = _basic(settings.client_id, settings.client_secret)
        where = f"{self.server_name}: access token from {_shown(settings.token_url)}"
        started = self._clock()
        try:
            # A client per fetch: fetches are minutes apart, and a provider then holds no
            # connection that would outlive the Trio run (or the nursery) that opened it.
            async with httpx.AsyncClient(
                timeout=TOKEN_REQUEST_TIMEOUT, trust_env=False, follow_redirects=False, verify=_tls()
            ) as http:
                response = await http.post(settings.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{where}: {type(exc).__name__}") from None
        answer = _json_object(response)
        if response.status_code != 200:
            raise UpstreamError(f"{where}: HTTP {response.status_code}{_oauth_error(answer)}", status=response.status_code)
        if answer is None:
            raise UpstreamError(f"{where}: the answer is not a JSON object")
        return self._token_of(answer, started, where)

    def _token_of(self, answer: dict[str, Any], started: float, where: str) -> _Token:
        access_token, token_type = answer.get("access_token"), answer.get("token_type")
        if not isinstance(access_token, str) or not _B64TOKEN.fullmatch(access_token):
            raise UpstreamError(f"{where}: no usable access_token in the answer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = token_type[:40] if isinstance(token_type, str) else type(token_type).__name__
            raise UpstreamError(f"{where}: token_type {shown!r} is not Bearer")
        register_secrets([access_token])  # before anything could log it
        lifetime = answer.get("expires_in", DEFAULT_LIFETIME_SECONDS)
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)  # some servers send it as a string
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise UpstreamError(f"{where}: expires_in is not a positive number")
        # From when the request was sent: the token's clock started no earlier than that.
        expires_at = started + float(lifetime)
        refresh_at = expires_at - min(REFRESH_MARGIN_SECONDS, float(lifetime) / 5)
        _log.info("access token obtained", server=self.server_name, expires_in=lifetime)
        return _Token(f"Bearer {access_token}", started, refresh_at, expires_at)


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: both form-urlencoded before they are joined and base64-encoded.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
        return None
    try:
        decoded = response.json()
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _oauth_error(answer: dict[str, Any] | None) -> str:
    """The RFC 6749 §5.2 error code, if the answer has a well-formed one (never its description:
    free text from elsewhere does not go into a status page)."""
    code = answer.get("error") if answer is not None else None
    if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,64}", code):
        return f" ({code})"
    return ""


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _tls() -> Any:
    from mcp_gateway.upstream.client import tls_context  # client imports this module

    return tls_context()


# ---------------------------------------------------------------------------------------------
# One provider per server, process-wide

_providers: dict[str, tuple[UpstreamOAuth, ClientCredentialsToken]] = {}


def _provider(server: ServerConfig) -> ClientCredentialsToken | None:
    settings = server.oauth
    if settings is None:
        return None
    known = _providers.get(server.name)
    # Compared with its secret (a private attribute pydantic compares too): a new secret, a
    # new token.
    if known is None or known[0] != settings or known[0].client_secret != settings.client_secret:
        known = (settings, ClientCredentialsToken(server.name, settings))
        _providers[server.name] = known
    return known[1]


async def upstream_credential(server: ServerConfig) -> Credential:
    """The `Authorization` value for a request to `server` now; raises UpstreamError when its
    access token cannot be had."""
    provider = _provider(server)
    if provider is None:
        return Credential(server.authorization)
    return await provider.current()


async def upstream_authorization(server: ServerConfig) -> str | None:
    return (await upstream_credential(server)).value


def credential_nowait(server: ServerConfig) -> Credential | None:
    """The credential when it needs no I/O; None when a token must be fetched first."""
    provider = _provider(server)
    return Credential(server.authorization) if provider is None else provider.fresh_nowait()


def cached_authorization(server: ServerConfig) -> str | None:
    """The value for a best-effort request (a DELETE at the end): never fetches."""
    provider = _provider(server)
    return server.authorization if provider is None else provider.held()


def credential_rejected(server: ServerConfig, value: str | None) -> bool:
    """`server` answered 401 to `value`; True when a new token is to be fetched (send again)."""
    provider = _provider(server)
    return provider is not None and provider.rejected(value)
