"""Upstream OAuth 2.0 client credentials (upstream/credentials.py, docs/upstream.md) end to end:
the test issuer's token endpoint over HTTP issues short-lived tokens and checks the gateway's
client authentication; the upstream is an official-SDK probe server behind an ASGI guard that
answers 401 to any request without a token the issuer issued and that is still valid. The
broker's discovery, the upstream client, and routed calls through a real Envoy (slow path and
Lua fast path) all carry a valid token; an expired one is never sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from mcp_gateway.logs import forget_registered_secrets
from mcp_gateway.upstream.client import HttpUpstreamClient
from tests.support.issuer import Issuer, bearer_required, running_issuer
from tests.support.routing import (
    call_body,
    gateway_stack,
    initialize_raw,
    probe_server,
    sdk_app,
    serve_asgi,
    session_headers,
    sse_result,
)
from tests.support.servers import gateway_config, running_broker

pytestmark = pytest.mark.integration

SECRET = "integration-client-secret-9f2c"
SECRET_ENV = "MCP_GATEWAY_TEST_UPSTREAM_SECRET"
CLIENT_ID = "mcp-gateway"
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
# The upstream's identifier (RFC 8707): what the gateway asks a token for, what the upstream checks.
RESOURCE = "https://alpha.upstream.test/mcp"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    yield
    forget_registered_secrets()


@asynccontextmanager
async def guarded_probe(issuer: Issuer, name: str) -> AsyncIterator[tuple[str, Any]]:
    """A probe upstream that needs the issuer's bearer token for RESOURCE; yields (url, guard)."""
    guard = bearer_required(sdk_app(probe_server(name)), issuer, RESOURCE)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, guard)
        yield f"http://127.0.0.1:{port}/mcp", guard
        nursery.cancel_scope.cancel()


def oauth_keys(issuer: Issuer, **more: Any) -> dict[str, Any]:
    return {"oauth": {"tokenUrl": issuer.token_url, "clientId": CLIENT_ID, "clientSecretEnvVar": SECRET_ENV,
                      "resource": RESOURCE, "scopes": ["mcp"], **more}}


@asynccontextmanager
async def token_issuer(lifetime: float = 300.0) -> AsyncIterator[Issuer]:
    async with running_issuer("RS256") as issuer:
        issuer.clients[CLIENT_ID] = SECRET
        issuer.token_lifetime = lifetime
        yield issuer


async def test_discovery_uses_the_token_and_a_failing_token_endpoint_is_a_clear_status_without_secrets() -> None:
    async with token_issuer() as issuer, token_issuer() as broken, guarded_probe(issuer, "alpha") as (url, guard):
        broken.token_status = 503  # its endpoint answers, but gives no token
        config = gateway_config(
            [("alpha", url, "a_"), ("beta", url, "b_")],
            server_keys={"alpha": oauth_keys(issuer), "beta": oauth_keys(broken)},
        )
        with capture_logs() as logs:
            async with running_broker(config) as broker, httpx.AsyncClient(timeout=10) as http:
                alpha = (await http.get(broker.admin + "/status/alpha")).json()
                with trio.fail_after(10):
                    while (beta := (await http.get(broker.admin + "/status/beta")).json())["state"] != "failed":  # noqa: ASYNC110
                        await trio.sleep(0.05)
                status_page = (await http.get(broker.admin + "/status")).text
        assert alpha["state"] == "ready" and alpha["toolCount"] >= 3, alpha
        assert beta["reason"] == f"beta: access token from {broken.token_url}: HTTP 503 (temporarily_unavailable)"
        # The whole discovery went with valid tokens; each fetch authenticated the client.
        assert guard.seen and guard.refused == 0
        assert {r.method for r in issuer.token_requests} == {"client_secret_basic"}
        assert all(r.form == {"grant_type": "client_credentials", "scope": "mcp", "resource": RESOURCE}
                   for r in issuer.token_requests)
        issued = list(issuer.issued)
        # Neither the secret nor a token in /status or in any log event (as the code emitted it,
        # before redaction).
        for secret in [SECRET, *issued]:
            assert secret not in status_page
            assert secret not in json.dumps(logs, default=str)
        assert any(e["event"] == "access token request failed" for e in logs)


async def test_the_upstream_client_replaces_a_refused_token_and_sends_again() -> None:
    async with token_issuer() as issuer, guarded_probe(issuer, "alpha") as (url, guard):
        config = gateway_config([("alpha", url, "a_")], server_keys={"alpha": oauth_keys(issuer)})
        async with HttpUpstreamClient(config.servers[0]) as client:
            await client.initialize()
            issuer.revoke_all()  # the upstream now refuses the token the client holds
            tools = await client.request("tools/list")
        assert "observe" in [tool["name"] for tool in tools["tools"]]
        assert guard.refused == 1 and len(issuer.token_requests) == 2


async def test_routed_calls_carry_a_valid_token_on_both_paths_and_a_fresh_one_after_expiry(tmp_path: Path) -> None:
    async with token_issuer(lifetime=2.0) as issuer, guarded_probe(issuer, "alpha") as (url, guard):
        async with gateway_stack(
            [("alpha", url, "a_")], tmp_path, server_keys={"alpha": oauth_keys(issuer)},
            # Decisions could live 30 s: only the token's refresh time ends them here.
            envoy={"fast_path": {"ttl_seconds": 30}},
        ) as stack, httpx.AsyncClient(timeout=10) as http:
            session = await initialize_raw(http, stack.url)

            async def observed(request_id: int) -> str:
                answer = await http.post(stack.url, json=call_body("a_observe", {}, request_id),
                                         headers=session_headers(session))
                assert answer.status_code == 200, answer.text
                result = sse_result(answer)["result"]
                assert not result.get("isError"), result
                seen = json.loads(result["content"][0]["text"])["authorization"]
                assert isinstance(seen, str) and seen.startswith("Bearer ")
                return seen.removeprefix("Bearer ")

            first = await observed(1)  # the router's call (slow path); Envoy learns the decision
            before = await stack.envoy.stat(EXT_PROC_STREAMS)
            assert await observed(2) == first
            assert await stack.envoy.stat(EXT_PROC_STREAMS) == before, "the second call was not on the fast path"
            # Call until the token changes: every call succeeds (the guard refuses an expired
            # token), so Envoy never sent one past its life.
            request_id, tokens = 3, [first]
            with trio.fail_after(10):
                while tokens[-1] == first:
                    tokens.append(await observed(request_id))
                    request_id += 1
                    await trio.sleep(0.05)
            fresh = tokens[-1]
            assert len(tokens) > 5, "the first token's life was not called through"
            assert issuer.accepts(fresh, RESOURCE)
            # The fresh token's decision is Envoy's again.
            settled = await stack.envoy.stat(EXT_PROC_STREAMS)
            assert await observed(request_id) == fresh
            assert await stack.envoy.stat(EXT_PROC_STREAMS) == settled, "the fresh token's call was not on the fast path"
        assert guard.refused == 0
        assert issuer.issued[first].expires_at < issuer.issued[fresh].expires_at
