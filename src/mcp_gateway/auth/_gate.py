"""The gate both the broker and the router put requests through: bearer token → Principal, or
the refusal to send. Everything but `authenticate` (which may fetch keys) is synchronous."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mcp_gateway.auth._challenge import Refusal, forbidden, metadata_document, unauthorized
from mcp_gateway.auth._jwks import JwksCache
from mcp_gateway.auth._policy import Policy, Principal
from mcp_gateway.auth._verify import InvalidToken, bearer_token, unverified_key_id, verify_token
from mcp_gateway.protocol import RequestId

if TYPE_CHECKING:
    from mcp_gateway.config import GatewayConfig


class NeedsKeys:
    """The token names a key we do not hold (or ours are stale): `authenticate` must fetch."""


NEEDS_KEYS: Final = NeedsKeys()


@dataclass(frozen=True, slots=True, eq=False)
class AuthGate:
    resource: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    leeway: float
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    policy: Policy
    jwks: JwksCache

    @classmethod
    def of(cls, config: GatewayConfig, previous: AuthGate | None = None) -> AuthGate | None:
        """The gate for `config`, None when auth is off. Keeps `previous`'s fetched keys when
        the key set URL and its cache settings are unchanged (a reload must not refetch)."""
        settings = config.gateway.auth
        if not settings.enabled:
            return None
        assert settings.issuer is not None and settings.jwks_url is not None  # the model checks
        resource = settings.resource or config.gateway.public_url
        assert resource is not None
        jwks = previous.jwks if previous is not None and previous.jwks.url == settings.jwks_url else None
        if jwks is None or previous is None or previous._jwks_settings != (
            settings.jwks_cache_seconds,
            settings.jwks_min_refresh_seconds,
        ):
            jwks = JwksCache(
                settings.jwks_url,
                max_age=settings.jwks_cache_seconds,
                min_interval=settings.jwks_min_refresh_seconds,
            )
        policy = Policy.of(settings)
        return cls(
            resource=resource,
            issuer=settings.issuer,
            audiences=tuple(settings.audiences or [resource]),
            algorithms=tuple(settings.algorithms),
            leeway=settings.leeway_seconds,
            authorization_servers=tuple(settings.authorization_servers or [settings.issuer]),
            scopes_supported=tuple(settings.scopes_supported or sorted(policy.all_scopes())),
            policy=policy,
            jwks=jwks,
        )

    @property
    def _jwks_settings(self) -> tuple[float, float]:
        return (self.jwks._max_age, self.jwks._min_interval)

    def metadata(self) -> bytes:
        """The RFC 9728 protected resource metadata document."""
        return metadata_document(self.resource, self.authorization_servers, self.scopes_supported)

    def check_cached(
        self, authorization: str | None, request_id: RequestId | None = None
    ) -> Principal | Refusal | NeedsKeys:
        """Verify with the keys held; NEEDS_KEYS when a fetch could help."""
        token = bearer_token(authorization)
        if token is None:
            return unauthorized(request_id, self.resource, None)
        try:
            kid = unverified_key_id(token)
        except InvalidToken as error:
            return unauthorized(request_id, self.resource, str(error))
        if self.jwks.needs_fetch(kid):
            return NEEDS_KEYS
        return self._verify(token, request_id)

    async def authenticate(
        self, authorization: str | None, request_id: RequestId | None = None
    ) -> Principal | Refusal:
        outcome = self.check_cached(authorization, request_id)
        if not isinstance(outcome, NeedsKeys):
            return outcome
        await self.jwks.refresh()
        token = bearer_token(authorization)
        assert token is not None  # check_cached asked for keys only for a bearer token
        return self._verify(token, request_id)

    def _verify(self, token: str, request_id: RequestId | None) -> Principal | Refusal:
        try:
            principal = verify_token(
                token,
                self.jwks.key_for,
                issuer=self.issuer,
                audiences=self.audiences,
                algorithms=self.algorithms,
                leeway=self.leeway,
            )
        except InvalidToken as error:
            return unauthorized(request_id, self.resource, str(error))
        if not self.policy.admits(principal):
            return forbidden(request_id, self.resource, None, self.policy.required_scopes)
        return principal

    def refuse_use(
        self, principal: Principal, name: str, request_id: RequestId | None
    ) -> Refusal | None:
        """403 when this token may not use the tool, prompt or resource exposed as `name`."""
        if self.policy.allows(principal, name):
            return None
        return forbidden(request_id, self.resource, name, self.policy.scopes_for(name))
