"""Inbound OAuth (src/mcp_gateway/auth): real keys, a real JWKS over HTTP (tests/support/issuer.py),
tokens minted and verified with PyJWT; no check switched off."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from mcp_gateway.auth import (
    AuthGate,
    JwksCache,
    Principal,
    Refusal,
    metadata_path,
    metadata_url,
    requested_name,
)
from mcp_gateway.config import ConfigError, GatewayConfig, parse_config
from mcp_gateway.logs import redact_event
from tests.support.issuer import Issuer, SigningKey, running_issuer

RESOURCE = "http://127.0.0.1:8080/mcp"


def auth_config(issuer: Issuer, **auth: Any) -> GatewayConfig:
    settings = {"enabled": True, "issuer": issuer.url, "jwks_url": issuer.jwks_url, **auth}
    return GatewayConfig.model_validate({"gateway": {"public_url": RESOURCE, "auth": settings}})


def refusal(outcome: object) -> Refusal:
    assert isinstance(outcome, Refusal), outcome
    return outcome


def challenge(outcome: object) -> str:
    return dict(refusal(outcome).headers)["www-authenticate"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_a_token_of_the_issuer_for_this_resource_is_accepted(algorithm: str) -> None:
    async with running_issuer(algorithm) as issuer:
        gate = AuthGate.of(auth_config(issuer))
        assert gate is not None
        token = issuer.token(RESOURCE, scopes=["tools:read", "tools:write"])
        principal = await gate.authenticate(f"Bearer {token}", 7)
        assert isinstance(principal, Principal)
        assert principal.scopes == {"tools:read", "tools:write"} and principal.subject == "user-1"
        assert issuer.fetches == 1
        # The keys are held now: the next token is verified without I/O, and without a fetch.
        again = gate.check_cached(f"bearer {issuer.token(RESOURCE)}")
        assert isinstance(again, Principal) and issuer.fetches == 1


async def test_no_token_gets_the_bare_challenge_with_the_metadata_url_and_a_json_rpc_body() -> None:
    async with running_issuer() as issuer:
        gate = AuthGate.of(auth_config(issuer))
        assert gate is not None
        for header in (None, "", "Basic dXNlcjpwdw==", "Bearer ", "Bearer"):
            outcome = refusal(await gate.authenticate(header, 3))
            assert outcome.status == 401
            assert challenge(outcome) == (
                'Bearer resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"'
            )
            body = json.loads(outcome.body)
            assert body["id"] == 3 and body["error"]["code"] == -32600
        assert issuer.fetches == 0  # nothing to verify: no fetch


async def test_bad_tokens_get_invalid_token_and_why() -> None:
    async with running_issuer("RS256") as issuer:
        gate = AuthGate.of(auth_config(issuer, leeway_seconds=5))
        assert gate is not None
        cases = {
            "token expired": issuer.token(RESOURCE, lifetime=-60),
            "token not issued for this resource": issuer.token("http://elsewhere.example/mcp"),
            "token from another issuer": issuer.token(RESOURCE, issuer="http://evil.example"),
            "malformed token": "not.a.jwt",
        }
        for reason, token in cases.items():
            header = challenge(await gate.authenticate(f"Bearer {token}"))
            assert 'error="invalid_token"' in header and f'error_description="{reason}"' in header, header
            assert 'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"' in header
        # Within the leeway: still good.
        assert isinstance(await gate.authenticate(f"Bearer {issuer.token(RESOURCE, lifetime=-2)}"), Principal)


async def test_a_token_that_chooses_its_own_algorithm_or_key_is_refused() -> None:
    async with running_issuer("RS256") as issuer:
        gate = AuthGate.of(auth_config(issuer))
        assert gate is not None
        key = issuer.keys[0]
        now = {"iss": issuer.url, "aud": RESOURCE, "exp": 2**31, "sub": "x"}
        unsigned = jwt.encode(now, None, algorithm="none", headers={"kid": key.kid})
        # HS256 keyed with the issuer's *public* key: the classic confusion attack.
        forged = hs256(now, key.kid, json.dumps(key.public_jwk()).encode())
        for token in (unsigned, forged):
            outcome = refusal(await gate.authenticate(f"Bearer {token}"))
            assert outcome.status == 401 and 'error="invalid_token"' in challenge(outcome)
        # Signed by a key the issuer does not publish, under a published kid.
        stranger = SigningKey.new("RS256")
        stranger.kid = key.kid
        outcome = refusal(await gate.authenticate(f"Bearer {issuer.token(RESOURCE, key=stranger)}"))
        assert 'error_description="bad signature"' in challenge(outcome)


def hs256(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """Signed by hand: PyJWT itself refuses to HMAC with something that looks like a public key."""
    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + b"." + part(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + part(signature)).decode()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unknown_kid_fetches_the_keys_again_at_most_once_per_interval() -> None:
    async with running_issuer("RS256") as issuer:
        clock = ManualClock()
        cache = JwksCache(issuer.jwks_url, max_age=300, min_interval=10, clock=clock)
        assert cache.needs_fetch("anything")
        await cache.refresh()
        assert issuer.fetches == 1 and cache.key_for(issuer.keys[0].kid) is not None
        # A rotation: the issuer publishes a new key; a token signed with it names its kid.
        rotated = SigningKey.new("ES256")
        issuer.publish(rotated)
        clock.now += 3
        assert not cache.needs_fetch(rotated.kid), "refetched within the rate limit"
        clock.now += 10
        assert cache.needs_fetch(rotated.kid)
        await cache.refresh()
        assert issuer.fetches == 2 and cache.key_for(rotated.kid) is not None
        # A kid nobody publishes: one fetch per interval at most, however many tokens name it.
        clock.now += 10
        for _ in range(5):
            if cache.needs_fetch("forged-kid"):
                await cache.refresh()
        assert issuer.fetches == 3
        # Known keys go stale after max_age: fetched again then.
        clock.now += 301
        assert cache.needs_fetch(rotated.kid)


async def test_a_key_rotation_is_followed_through_the_gate() -> None:
    async with running_issuer("RS256") as issuer:
        gate = AuthGate.of(auth_config(issuer, jwks_min_refresh_seconds=0))
        assert gate is not None
        assert isinstance(await gate.authenticate(f"Bearer {issuer.token(RESOURCE)}"), Principal)
        rotated = SigningKey.new("ES256")
        issuer.publish(rotated)
        token = issuer.token(RESOURCE, key=rotated)
        assert gate.check_cached(f"Bearer {token}").__class__.__name__ == "NeedsKeys"
        assert isinstance(await gate.authenticate(f"Bearer {token}"), Principal)
        assert issuer.fetches == 2


async def test_rules_decide_per_exposed_name_first_match_wins() -> None:
    async with running_issuer("RS256") as issuer:
        config = auth_config(
            issuer,
            rules=[
                {"match": "a_admin_*", "scopes": ["admin"], "claims": {"groups": "ops"}},
                {"match": "a_*", "scopes": ["tools:a"]},
                {"match": "mcp-gateway:a_*", "scopes": ["resources:a"]},
            ],
        )
        gate = AuthGate.of(config)
        assert gate is not None
        reader = await gate.authenticate(f"Bearer {issuer.token(RESOURCE, scopes=['tools:a'])}")
        admin = await gate.authenticate(
            f"Bearer {issuer.token(RESOURCE, scopes=['admin'], groups=['dev', 'ops'])}"
        )
        admin_elsewhere = await gate.authenticate(
            f"Bearer {issuer.token(RESOURCE, scopes=['admin'], groups=['dev'])}"
        )
        assert isinstance(reader, Principal) and isinstance(admin, Principal)
        assert isinstance(admin_elsewhere, Principal)
        assert gate.refuse_use(reader, "a_echo", 1) is None
        assert gate.refuse_use(reader, "b_other", 1) is None  # no rule: any valid token
        denied = refusal(gate.refuse_use(reader, "a_admin_reset", 9))
        assert denied.status == 403
        assert challenge(denied) == (
            'Bearer error="insufficient_scope", scope="admin", '
            'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"'
        )
        body = json.loads(denied.body)
        assert body["id"] == 9 and "a_admin_reset" in body["error"]["message"]
        assert gate.refuse_use(admin, "a_admin_reset", 1) is None
        assert gate.refuse_use(admin_elsewhere, "a_admin_reset", 1) is not None  # claim not held
        assert gate.refuse_use(admin, "a_echo", 1) is not None  # first match wins: a_* needs tools:a
        assert gate.scopes_supported == ("admin", "resources:a", "tools:a")


async def test_required_scopes_gate_every_request() -> None:
    async with running_issuer("RS256") as issuer:
        gate = AuthGate.of(auth_config(issuer, required_scopes=["mcp"]))
        assert gate is not None
        outcome = refusal(await gate.authenticate(f"Bearer {issuer.token(RESOURCE, scopes=['x'])}"))
        assert outcome.status == 403 and 'scope="mcp"' in challenge(outcome)
        assert isinstance(await gate.authenticate(f"Bearer {issuer.token(RESOURCE, scopes=['mcp'])}"), Principal)


def test_metadata_is_served_under_the_resources_path() -> None:
    assert metadata_path("http://h:8080/mcp") == "/.well-known/oauth-protected-resource/mcp"
    assert metadata_path("https://h/") == "/.well-known/oauth-protected-resource"
    assert metadata_url("https://h.example/a/mcp") == "https://h.example/.well-known/oauth-protected-resource/a/mcp"


def test_the_name_a_request_uses() -> None:
    assert requested_name("tools/call", {"name": "a_x"}) == "a_x"
    assert requested_name("resources/read", {"uri": "mcp-gateway:a_f"}) == "mcp-gateway:a_f"
    assert requested_name("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}}) == "p"
    assert requested_name("completion/complete", {"ref": {"type": "ref/resource", "uri": "u"}}) == "u"
    assert requested_name("tools/list", {}) is None
    assert requested_name("tools/call", {"name": 3}) is None


def test_auth_config_is_checked() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("gateway:\n  auth: {enabled: true, issuer: 'http://i.example'}\n")
    assert "needs issuer and jwks_url" in str(error.value)
    with pytest.raises(ConfigError) as error:
        parse_config(
            "gateway:\n  auth: {enabled: true, issuer: 'http://i', jwks_url: 'http://i/j'}\n"
        )
    assert "auth.resource or public_url" in str(error.value)
    with pytest.raises(ConfigError) as error:
        parse_config(
            "gateway:\n  public_url: http://g/mcp\n  auth: {enabled: true, issuer: 'http://i', "
            "jwks_url: 'http://i/j', rules: [{match: 'a_*', scopes: ['bad scope']}]}\n"
        )
    assert "not an OAuth scope token" in str(error.value)
    assert parse_config("gateway:\n  auth: {enabled: false}\n").gateway.auth.enabled is False


async def test_a_token_is_never_logged_even_bare() -> None:
    async with running_issuer("RS256") as issuer:
        token = issuer.token(RESOURCE, scopes=["x"])
    for text in (f"Authorization: Bearer {token}", f"got {token} from the client", f"token={token}"):
        # Free text, as in a log line's event: the processor every logged event goes through.
        logged = str(redact_event(None, "info", {"event": text}))
        assert token not in logged
        assert token.split(".")[1] not in logged
