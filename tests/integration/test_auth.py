"""Inbound OAuth through a real Envoy (docs/auth.md): a test issuer with real keys serves its
JWKS over HTTP; the official SDK client and raw HTTP clients call probe upstreams (official SDK
servers) through Envoy, the router and the broker; nothing is switched off.

The gateway's public name is `mcp.test` (what clients and tokens name, RFC 8707), served by the
Envoy on a loopback port: the metadata URL names the public host, and the tests fetch its path
through Envoy.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from trio_websocket import open_websocket_url

from tests.support.issuer import Issuer, running_issuer
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
)

pytestmark = pytest.mark.integration

RESOURCE = "http://mcp.test/mcp"
METADATA_URL = "http://mcp.test/.well-known/oauth-protected-resource/mcp"
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
# `a_add` needs the scope `math`; every other tool is open to any valid token.
RULES = [{"match": "a_add", "scopes": ["math"]}]


@asynccontextmanager
async def auth_stack(tmp_path: Path, **auth: Any) -> AsyncIterator[tuple[Issuer, Stack]]:
    async with running_issuer() as issuer, probes("alpha") as urls:
        settings = {
            "enabled": True, "issuer": issuer.url, "jwks_url": issuer.jwks_url, "resource": RESOURCE,
            "rules": RULES, **auth,
        }
        # Decisions kept 30 s: in the default 1 s lifetime's last fifth one call renews through
        # the router by design, and these tests count ext_proc streams.
        async with gateway_stack(
            [("alpha", urls["alpha"], "a_")], tmp_path, auth=settings, envoy={"fast_path": {"ttl_seconds": 30}}
        ) as stack:
            yield issuer, stack


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def call(client: httpx.AsyncClient, stack: Stack, session: str, name: str, token: str | None,
               request_id: int, arguments: dict[str, Any] | None = None) -> httpx.Response:
    headers = session_headers(session, **(bearer(token) if token else {}))
    return await client.post(stack.url, json=call_body(name, arguments, request_id), headers=headers)


async def initialize(client: httpx.AsyncClient, stack: Stack, token: str) -> str:
    client.headers.update(bearer(token))
    try:
        return await initialize_raw(client, stack.url)
    finally:
        del client.headers["authorization"]


@SDK_CLIENT_WARNINGS
async def test_the_sdk_client_with_a_token_works_without_one_gets_401_and_scopes_cut_lists_and_calls(
    tmp_path: Path,
) -> None:
    async with auth_stack(tmp_path) as (issuer, stack):
        full = issuer.token(RESOURCE, scopes=["math"])
        async with httpx2.AsyncClient(headers=bearer(full)) as http2, Client(
            streamable_http_client(stack.url, http_client=http2)
        ) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            added = await client.call_tool("a_add", {"a": 2, "b": 3})
            seen = json.loads((await client.call_tool("a_observe", {})).content[0].text)  # type: ignore[union-attr]
        assert {"a_add", "a_observe"} <= tools
        assert added.content[0].text == "5"  # type: ignore[union-attr]
        # The client's token never reaches the upstream (it has no credential configured).
        assert seen["authorization"] is None and seen["toolname"] == "observe"

        # A token without `math`: a_add is not listed, and calling it is refused.
        weak = issuer.token(RESOURCE, scopes=["other"])
        async with httpx2.AsyncClient(headers=bearer(weak)) as http2, Client(
            streamable_http_client(stack.url, http_client=http2)
        ) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            with pytest.raises(MCPError) as refused:
                await client.call_tool("a_add", {"a": 2, "b": 3})
            still = await client.call_tool("a_observe", {})
        assert "a_add" not in tools and "a_observe" in tools
        assert "insufficient scope" in str(refused.value) and "math" in str(refused.value)
        assert not still.is_error
        gc.collect()

        async with httpx.AsyncClient(timeout=10) as http:
            # No token: 401, the challenge names the metadata, the body is a JSON-RPC error.
            init = {"jsonrpc": "2.0", "id": 5, "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
            accept = {"accept": "application/json, text/event-stream"}
            anonymous = await http.post(stack.url, json=init, headers=accept)
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA_URL}"'
            assert anonymous.json()["id"] == 5 and anonymous.json()["error"]["code"] == -32600
            # A bad token: invalid_token, and why.
            forged = await http.post(stack.url, json=init, headers={**accept, **bearer(issuer.token("http://other/mcp"))})
            assert forged.status_code == 401
            assert 'error="invalid_token"' in forged.headers["www-authenticate"]
            assert f'resource_metadata="{METADATA_URL}"' in forged.headers["www-authenticate"]
            # GET and DELETE reach the broker without the router: refused there.
            for method in ("GET", "DELETE"):
                answer = await http.request(method, stack.url, headers={"accept": "text/event-stream"})
                assert answer.status_code == 401 and "resource_metadata" in answer.headers["www-authenticate"]
            # The metadata (RFC 9728), path-suffixed and plain, through Envoy, without a token.
            base = stack.url.removesuffix("/mcp")
            for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
                document = await http.get(base + path)
                assert document.status_code == 200, path
                assert document.json()["resource"] == RESOURCE
                assert document.json()["authorization_servers"] == [issuer.url]
                assert document.json()["scopes_supported"] == ["math"]
            # Refused straight on the routed path too: 403 with the scope to ask for.
            session = await initialize(http, stack, weak)
            denied = await call(http, stack, session, "a_add", weak, 9, {"a": 1, "b": 1})
            assert denied.status_code == 403 and denied.json()["id"] == 9
            assert denied.headers["www-authenticate"] == (
                f'Bearer error="insufficient_scope", scope="math", resource_metadata="{METADATA_URL}"'
            )


async def test_the_fast_path_never_applies_a_decision_to_another_token(tmp_path: Path) -> None:
    async with auth_stack(tmp_path) as (issuer, stack), httpx.AsyncClient(timeout=10) as http:
        full, weak = issuer.token(RESOURCE, scopes=["math"]), issuer.token(RESOURCE, scopes=["other"])
        session = await initialize(http, stack, full)
        assert (await call(http, stack, session, "a_add", full, 1, {"a": 1, "b": 2})).status_code == 200
        before = await stack.envoy.stat(EXT_PROC_STREAMS)
        fast = await call(http, stack, session, "a_add", full, 2, {"a": 1, "b": 2})
        assert fast.status_code == 200 and sse_result(fast)["result"]["content"][0]["text"] == "3"
        assert await stack.envoy.stat(EXT_PROC_STREAMS) == before, "the good token's call was not on the fast path"
        # The same session, name and everything else, but a token without the scope: the router's.
        denied = await call(http, stack, session, "a_add", weak, 3, {"a": 1, "b": 2})
        assert denied.status_code == 403 and 'error="insufficient_scope"' in denied.headers["www-authenticate"]
        # No token at all, or a forged one: 401.
        missing = await call(http, stack, session, "a_add", None, 4, {"a": 1, "b": 2})
        assert missing.status_code == 401 and missing.json()["id"] == 4
        forged = issuer.token(RESOURCE, scopes=["math"], issuer="http://evil.test")
        assert (await call(http, stack, session, "a_add", forged, 5)).status_code == 401
        assert await stack.envoy.stat(EXT_PROC_STREAMS) == before + 3
        # The good token's decision still stands.
        again = await call(http, stack, session, "a_add", full, 6, {"a": 2, "b": 2})
        assert again.status_code == 200 and await stack.envoy.stat(EXT_PROC_STREAMS) == before + 3


async def test_a_fast_path_decision_ends_with_its_tokens_expiry(tmp_path: Path) -> None:
    async with auth_stack(tmp_path, leeway_seconds=0) as (issuer, stack), httpx.AsyncClient(timeout=10) as http:
        long_lived = issuer.token(RESOURCE, scopes=["math"])
        session = await initialize(http, stack, long_lived)
        short = issuer.token(RESOURCE, scopes=["math"], lifetime=2)
        expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]  # the test reads its own token
        assert (await call(http, stack, session, "a_add", short, 1, {"a": 1, "b": 1})).status_code == 200
        before = await stack.envoy.stat(EXT_PROC_STREAMS)
        assert (await call(http, stack, session, "a_add", short, 2, {"a": 1, "b": 1})).status_code == 200
        assert await stack.envoy.stat(EXT_PROC_STREAMS) == before, "not on the fast path"
        # Call every 50 ms until refused: never routed once the token expired.
        request_id, last_routed_sent = 10, 0.0
        with trio.fail_after(8):
            while True:
                sent = time.time()
                answer = await call(http, stack, session, "a_add", short, request_id, {"a": 1, "b": 1})
                if answer.status_code != 200:
                    break
                last_routed_sent = sent
                request_id += 1
                await trio.sleep(0.05)
        assert answer.status_code == 401 and 'error_description="token expired"' in answer.headers["www-authenticate"]
        assert answer.json()["id"] == request_id
        assert last_routed_sent < expires_at  # the fast path stopped at the token's exp


async def test_the_websocket_transport_needs_a_token_and_follows_the_rules(tmp_path: Path) -> None:
    async with auth_stack(tmp_path) as (issuer, stack):
        ws_url = stack.url.replace("http://", "ws://") + "/ws"
        upgrade = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
                   "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-protocol": "mcp"}
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.get(stack.url + "/ws", headers=upgrade)
        assert refused.status_code == 401 and "resource_metadata" in refused.headers["www-authenticate"]
        weak = issuer.token(RESOURCE, scopes=["other"])
        headers = [("authorization", f"Bearer {weak}")]
        async with open_websocket_url(ws_url, subprotocols=["mcp"], extra_headers=headers) as socket:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
            await socket.send_message(json.dumps(init))
            assert "result" in json.loads(await socket.get_message())
            await socket.send_message(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            tools = {tool["name"] for tool in json.loads(await socket.get_message())["result"]["tools"]}
            assert "a_observe" in tools and "a_add" not in tools
            await socket.send_message(json.dumps(call_body("a_add", {"a": 1, "b": 1}, 3)))
            answer = json.loads(await socket.get_message())
            assert answer["id"] == 3 and "insufficient scope" in answer["error"]["message"]
