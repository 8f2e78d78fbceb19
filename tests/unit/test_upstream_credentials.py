"""OAuth 2.0 client credentials for upstreams (upstream/credentials.py) against a real token
endpoint: the test issuer's, over HTTP on loopback, which checks the client's authentication and
counts its requests. Times are real and short (tokens living 1-2 s); waits poll under
`trio.fail_after`, never a fixed sleep."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.logs import forget_registered_secrets, redact_event
from mcp_gateway.upstream.credentials import (
    ClientCredentialsToken,
    credential_nowait,
    credential_rejected,
    upstream_credential,
)
from mcp_gateway.upstream.errors import UpstreamError
from tests.support.issuer import Issuer, running_issuer

SECRET = "s3cr3t-client-secret+/="  # characters that Basic auth must form-encode
SECRET_ENV = "MCP_GATEWAY_TEST_OAUTH_SECRET"
RESOURCE = "http://upstream.test/mcp"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    yield
    forget_registered_secrets()


def server_with(issuer: Issuer, name: str = "up", **oauth: Any) -> ServerConfig:
    settings = {"tokenUrl": issuer.token_url, "clientId": "gateway one", "clientSecretEnvVar": SECRET_ENV,
                "resource": RESOURCE, **oauth}
    return ServerConfig.model_validate({"name": name, "url": "http://127.0.0.1:1/mcp", "oauth": settings})


def provider_for(server: ServerConfig) -> ClientCredentialsToken:
    assert server.oauth is not None
    return ClientCredentialsToken(server.name, server.oauth)


@asynccontextmanager
async def token_endpoint(lifetime: float = 300.0) -> AsyncIterator[Issuer]:
    async with running_issuer("RS256") as issuer:
        issuer.clients["gateway one"] = SECRET
        issuer.token_lifetime = lifetime
        yield issuer


async def test_a_token_is_fetched_once_for_concurrent_callers_with_basic_auth_and_the_form() -> None:
    async with token_endpoint() as issuer:
        server = server_with(issuer, scopes=["tools:call", "read"], audience="upstream-api")
        provider = provider_for(server)
        values: list[str | None] = []

        async def take() -> None:
            values.append((await provider.current()).value)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(take)
        assert len(issuer.token_requests) == 1 and provider.fetches == 1
        assert len(set(values)) == 1 and values[0] is not None and values[0].startswith("Bearer ")
        assert issuer.accepts(values[0].removeprefix("Bearer "), RESOURCE)
        request = issuer.token_requests[0]
        # RFC 6749 §2.3.1: id and secret form-encoded, then Basic; nothing secret in the form.
        assert request.method == "client_secret_basic" and request.client_id == "gateway one"
        assert request.form == {
            "grant_type": "client_credentials", "scope": "tools:call read", "resource": RESOURCE,
            "audience": "upstream-api",
        }
        # Held and fresh: no I/O, no new request.
        assert provider.fresh_nowait() is not None
        assert (await provider.current()).value == values[0] and len(issuer.token_requests) == 1


async def test_client_secret_post_sends_the_client_in_the_form() -> None:
    async with token_endpoint() as issuer:
        provider = provider_for(server_with(issuer, authMethod="client_secret_post"))
        credential = await provider.current()
        assert credential.value is not None
        request = issuer.token_requests[0]
        assert request.method == "client_secret_post"
        assert request.form["client_id"] == "gateway one" and request.form["client_secret"] == SECRET


async def test_the_token_is_refreshed_before_it_expires_and_never_used_past_that() -> None:
    async with token_endpoint(lifetime=1.5) as issuer:
        provider = provider_for(server_with(issuer))
        first = await provider.current()
        assert first.value is not None and first.use_until is not None
        token = first.value.removeprefix("Bearer ")
        expires_at = issuer.issued[token].expires_at
        # Refreshed at 80 % of a short lifetime: before the issuer's expiry, never after.
        assert first.use_until < expires_at
        with trio.fail_after(5):
            while (current := await provider.current()).value == first.value:
                assert issuer.accepts(token, RESOURCE)  # still valid while it is handed out
                await trio.sleep(0.02)
        assert current.value is not None and issuer.accepts(current.value.removeprefix("Bearer "), RESOURCE)
        assert len(issuer.token_requests) == 2


async def test_a_failing_endpoint_is_not_asked_again_during_backoff_and_the_secret_is_in_no_message() -> None:
    async with token_endpoint() as issuer:
        issuer.clients["gateway one"] = "another secret"  # ours is refused: invalid_client
        provider = provider_for(server_with(issuer))
        with pytest.raises(UpstreamError) as failed:
            await provider.current()
        message = failed.value.message
        assert f"access token from {issuer.token_url}: HTTP 401 (invalid_client)" in message
        # The endpoint's own description (it names the client here) is not repeated.
        assert "unknown" not in message and SECRET not in message
        with pytest.raises(UpstreamError) as again:
            await provider.current()
        assert again.value is failed.value and len(issuer.token_requests) == 1


async def test_an_endpoint_that_is_down_keeps_the_held_token_until_it_expires() -> None:
    async with token_endpoint(lifetime=1.0) as issuer:
        provider = provider_for(server_with(issuer))
        held = await provider.current()
        issuer.token_status = 503
        token = held.value
        assert token is not None
        # Due for refresh, the refresh fails: the held token until its expiry, then the error.
        with trio.fail_after(5):
            while provider.fresh_nowait() is not None:  # noqa: ASYNC110 - the clock decides, no event
                await trio.sleep(0.02)
        kept = await provider.current()
        assert kept.value == token and kept.use_until is not None
        assert kept.use_until == pytest.approx(issuer.issued[token.removeprefix("Bearer ")].expires_at, abs=0.5)
        with trio.fail_after(5):
            while True:
                try:
                    await provider.current()
                except UpstreamError as error:
                    assert "HTTP 503 (temporarily_unavailable)" in error.message
                    break
                await trio.sleep(0.02)


async def test_a_token_the_upstream_refuses_is_replaced_at_once() -> None:
    async with token_endpoint() as issuer:
        server = server_with(issuer, name="refusing")
        first = await upstream_credential(server)
        assert credential_nowait(server) == first
        issuer.revoke_all()
        assert credential_rejected(server, "Bearer some-older-token") is False  # not the held one
        assert credential_rejected(server, first.value) is True
        assert credential_nowait(server) is None
        second = await upstream_credential(server)
        assert second.value != first.value and second.value is not None
        assert issuer.accepts(second.value.removeprefix("Bearer "), RESOURCE)
        # A second refusal within the interval does not start a fetch loop.
        assert credential_rejected(server, second.value) is False


async def test_a_token_in_a_log_line_is_redacted_and_an_unreachable_endpoint_is_named() -> None:
    async with token_endpoint() as issuer:
        provider = provider_for(server_with(issuer))
        value = (await provider.current()).value
        assert value is not None
    event = redact_event(None, "info", {"event": f"upstream said {value.removeprefix('Bearer ')}"})
    assert value.removeprefix("Bearer ") not in str(event)
    # The issuer has stopped: its port refuses connections.
    provider = provider_for(server_with(issuer, name="gone"))
    with pytest.raises(UpstreamError) as failed:
        await provider.current()
    assert failed.value.message.endswith("ConnectError")


def test_oauth_and_a_fixed_credential_are_exclusive_and_the_secret_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mcp_gateway.config import ConfigError, dump_config, parse_config

    base = "servers:\n- name: a\n  url: https://up.example/mcp\n"
    oauth = "  oauth: {tokenUrl: https://idp.example/token, clientId: gw, clientSecretEnvVar: %s}\n"
    with pytest.raises(ConfigError, match="give either `oauth` or `credential`"):
        parse_config(base + "  credential: Bearer x\n" + oauth % SECRET_ENV)
    with pytest.raises(ConfigError, match="UNSET_SECRET_VAR is not set"):
        parse_config(base + oauth % "UNSET_SECRET_VAR")
    config = parse_config(base + oauth % SECRET_ENV)
    assert config.servers[0].oauth is not None and config.servers[0].oauth.client_secret == SECRET
    assert SECRET in config.secrets()
    dumped = dump_config(config)
    assert SECRET not in dumped and SECRET_ENV in dumped
    assert base64.b64encode(SECRET.encode()).decode() not in repr(config)
    assert SECRET not in repr(config)
