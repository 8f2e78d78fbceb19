"""Bad input at /mcp gets a precise answer: JSON-RPC code, request id and HTTP status.

Raw httpx against a running broker (one real sample upstream), so every header and byte is ours.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.servers import (
    Broker,
    gateway_config,
    initialize_body,
    running_broker,
    sample_in_process,
)

pytestmark = pytest.mark.integration

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT: dict[str, Any] = initialize_body()


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with sample_in_process("echo") as echo:
        config = gateway_config(
            [("echo", echo, "echo_")],
            allowed_origins=["https://app.example.com"],
            page_size=1,
            limits={"max_body_bytes": 4096, "max_depth": 8, "max_batch": 5},
        )
        async with running_broker(config) as running:
            yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def open_session(
    http: httpx.AsyncClient, broker: Broker, version: str = "2025-11-25"
) -> dict[str, str]:
    body = {**INIT, "params": {**INIT["params"], "protocolVersion": version}}
    response = await http.post(broker.url, json=body, headers=HEADERS)
    assert response.status_code == 200
    assert response.json()["result"]["protocolVersion"] == version
    return {
        **HEADERS,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": version,
    }


def error_of(response: httpx.Response) -> tuple[int, Any, int]:
    body = response.json()
    return response.status_code, body["id"], body["error"]["code"]


async def test_initialize_issues_a_sealed_session_and_answers_ping_and_lists(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    session = await open_session(http, broker)
    token = session["mcp-session-id"]
    claims = broker.tokens.verify(token)
    assert claims is not None and claims.protocol_version == "2025-11-25"
    assert await broker.store.exists(claims.session_id)
    ping = await http.post(
        broker.url, json={"jsonrpc": "2.0", "id": "p", "method": "ping"}, headers=session
    )
    assert ping.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}
    # page_size 1: two tools come in two pages through an opaque cursor.
    first = (
        await http.post(
            broker.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session
        )
    ).json()
    cursor = first["result"]["nextCursor"]
    second = (
        await http.post(
            broker.url,
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"cursor": cursor}},
            headers=session,
        )
    ).json()
    names = [t["name"] for t in first["result"]["tools"] + second["result"]["tools"]]
    assert names == ["echo_echo", "echo_add"]
    assert "nextCursor" not in second["result"]


async def test_an_unknown_revision_is_answered_with_ours(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    body = {**INIT, "params": {**INIT["params"], "protocolVersion": "1999-01-01"}}
    response = await http.post(broker.url, json=body, headers=HEADERS)
    assert response.json()["result"]["protocolVersion"] == "2025-11-25"


@pytest.mark.parametrize(
    ("body", "status", "rid", "code"),
    [
        (b"{not json", 400, None, -32700),
        (b'{"jsonrpc":"2.0","id":7,"method":"ping"', 400, None, -32700),
        (b'{"jsonrpc":"1.0","id":7,"method":"ping"}', 400, 7, -32600),
        (b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":[1]}', 400, 7, -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"initialize","params":{}}', 200, 7, -32602),
        (b"[" + b"[" * 20 + b"]" * 20 + b"]", 400, None, None),
        (b'{"jsonrpc":"2.0","id":7,"method":"ping","pad":"' + b"x" * 5000 + b'"}', 413, None, None),
    ],
)
async def test_malformed_bodies(
    http: httpx.AsyncClient, broker: Broker, body: bytes, status: int, rid: Any, code: int | None
) -> None:
    response = await http.post(broker.url, content=body, headers=HEADERS)
    assert response.status_code == status
    payload = response.json()
    assert payload["id"] == rid
    if code is not None:
        assert payload["error"]["code"] == code


async def test_requests_in_a_session(http: httpx.AsyncClient, broker: Broker) -> None:
    session = await open_session(http, broker)
    unknown = await http.post(
        broker.url, json={"jsonrpc": "2.0", "id": 9, "method": "no/such"}, headers=session
    )
    assert error_of(unknown) == (200, 9, -32601)
    bad_cursor = await http.post(
        broker.url,
        json={"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"cursor": "forged"}},
        headers=session,
    )
    assert error_of(bad_cursor) == (200, 10, -32602)
    unknown_tool = await http.post(
        broker.url,
        json={"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "nope_x"}},
        headers=session,
    )
    assert error_of(unknown_tool) == (200, 11, -32602)
    notification = await http.post(
        broker.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
    )
    assert notification.status_code == 202 and notification.content == b""
    # 2025-11-25 has no batches.
    batch = await http.post(
        broker.url, json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}], headers=session
    )
    assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600


async def test_a_2025_03_26_session_may_batch(http: httpx.AsyncClient, broker: Broker) -> None:
    session = await open_session(http, broker, "2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
    ]
    response = await http.post(broker.url, json=batch, headers=session)
    assert response.status_code == 200
    assert [(m["id"], "error" in m) for m in response.json()] == [(1, False), (2, True)]
    too_long = await http.post(broker.url, json=[batch[0]] * 6, headers=session)
    assert too_long.status_code == 400


async def test_sessions_missing_forged_and_deleted(http: httpx.AsyncClient, broker: Broker) -> None:
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    assert error_of(await http.post(broker.url, json=ping, headers=HEADERS)) == (400, 5, -32600)
    forged = {**HEADERS, "mcp-session-id": "A" * 80}
    assert error_of(await http.post(broker.url, json=ping, headers=forged)) == (404, 5, -32600)
    huge = {**HEADERS, "mcp-session-id": "A" * 5000}
    assert (await http.post(broker.url, json=ping, headers=huge)).status_code == 404
    # A token sealed with another key is as good as forged.
    from mcp_gateway.sessions import SessionTokens

    foreign = SessionTokens([b"z" * 32]).issue("2025-11-25")
    assert (
        await http.post(broker.url, json=ping, headers={**HEADERS, "mcp-session-id": foreign})
    ).status_code == 404
    session = await open_session(http, broker)
    assert (await http.delete(broker.url, headers=session)).status_code == 200
    assert error_of(await http.post(broker.url, json=ping, headers=session)) == (404, 5, -32600)
    assert (
        await http.get(broker.url, headers={**session, "accept": "text/event-stream"})
    ).status_code == 404
    assert (await http.delete(broker.url, headers=session)).status_code == 404
    assert (await http.get(broker.url, headers={"accept": "text/event-stream"})).status_code == 400


async def test_headers_that_are_refused(http: httpx.AsyncClient, broker: Broker) -> None:
    session = await open_session(http, broker)
    ping = {"jsonrpc": "2.0", "id": 6, "method": "ping"}
    assert error_of(
        await http.post(
            broker.url, json=ping, headers={**session, "mcp-protocol-version": "2099-01-01"}
        )
        # In a session the request is a handshake-era one whatever its version header: a
        # version other than the session's is -32600 (session-less modern requests with an
        # unknown version: tests/integration/test_modern_clients.py).
    ) == (400, 6, -32600)
    assert (
        await http.post(
            broker.url, content=json.dumps(ping), headers={**session, "content-type": "text/plain"}
        )
    ).status_code == 415
    assert (
        await http.post(broker.url, json=ping, headers={**session, "accept": "text/html"})
    ).status_code == 406
    assert (
        await http.get(broker.url, headers={**session, "accept": "application/json"})
    ).status_code == 406
    assert (await http.put(broker.url, json=ping, headers=session)).status_code == 405


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "null"]
)
async def test_a_foreign_origin_is_refused_on_every_method(
    http: httpx.AsyncClient, broker: Broker, origin: str
) -> None:
    headers = {**HEADERS, "origin": origin}
    assert (await http.post(broker.url, json=INIT, headers=headers)).status_code == 403
    assert (await http.get(broker.url, headers=headers)).status_code == 403
    assert (await http.delete(broker.url, headers=headers)).status_code == 403


@pytest.mark.parametrize(
    "origin", ["https://app.example.com", "http://localhost:6274", "http://127.0.0.1:8080"]
)
async def test_allowed_origins(http: httpx.AsyncClient, broker: Broker, origin: str) -> None:
    response = await http.post(broker.url, json=INIT, headers={**HEADERS, "origin": origin})
    assert response.status_code == 200


DISCOVER_PROBE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
DISCOVER_HEADERS = {**HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"}


async def test_server_discover_is_refused_when_not_served_so_auto_clients_take_the_handshake(
    http: httpx.AsyncClient,
) -> None:
    config = gateway_config([], serve_discover=False)
    async with running_broker(config) as broker:
        modern = await http.post(broker.url, json=DISCOVER_PROBE, headers=DISCOVER_HEADERS)
        bare = await http.post(broker.url, json=DISCOVER_PROBE, headers=HEADERS)  # no version header
    assert modern.status_code == 404  # the revision's status for -32601
    assert modern.json()["error"]["code"] == -32601 and modern.json()["id"] == 0
    assert bare.status_code == 200 and bare.json()["error"]["code"] == -32601


async def test_server_discover_is_answered_without_a_session_by_default(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    response = await http.post(broker.url, json=DISCOVER_PROBE, headers=DISCOVER_HEADERS)
    assert response.status_code == 200
    assert response.json()["result"]["supportedVersions"][0] == "2026-07-28"
    assert "mcp-session-id" not in response.headers


async def test_status_health_ready_and_metrics(http: httpx.AsyncClient, broker: Broker) -> None:
    session = await open_session(http, broker)
    await http.post(
        broker.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=session
    )
    status = (await http.get(f"{broker.admin}/status")).json()
    assert status["ready"] is True and status["tools"] == 2
    [echo] = status["upstreams"]
    assert (echo["name"], echo["state"], echo["toolCount"]) == ("echo", "ready", 2)
    assert (await http.get(f"{broker.admin}/status/echo")).json()["state"] == "ready"
    assert (await http.get(f"{broker.admin}/status/nope")).status_code == 404
    assert (await http.get(f"{broker.base}/no/such/path")).status_code == 404
    assert (await http.get(f"{broker.admin}/healthz")).status_code == 200
    assert (await http.get(f"{broker.admin}/readyz")).status_code == 200
    metrics = (await http.get(f"{broker.admin}/metrics")).text
    assert 'mcp_gateway_broker_requests_total{method="tools/list",status="200"} 1.0' in metrics
    assert 'mcp_gateway_upstream_state{server="echo",state="ready"} 1.0' in metrics
    assert "mcp_gateway_tools 2.0" in metrics
    # Client-chosen method names do not become label values (bounded series).
    await http.post(
        broker.url, json={"jsonrpc": "2.0", "id": 1, "method": "x" * 40}, headers=session
    )
    await http.post(broker.url, json=INIT, headers={**HEADERS, "origin": "https://evil.example"})
    metrics = (await http.get(f"{broker.admin}/metrics")).text
    assert "x" * 40 not in metrics
    assert 'mcp_gateway_broker_requests_total{method="other",status="200"} 1.0' in metrics
    assert 'mcp_gateway_broker_requests_total{method="refused",status="403"} 1.0' in metrics


async def test_a_client_that_accepts_only_sse_gets_its_answer_as_an_event(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    session = await open_session(http, broker)
    response = await http.post(
        broker.url,
        json={"jsonrpc": "2.0", "id": 8, "method": "ping"},
        headers={**session, "accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    assert [json.loads(d) for d in data] == [{"jsonrpc": "2.0", "id": 8, "result": {}}]
