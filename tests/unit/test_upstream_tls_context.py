"""Upstream HTTP clients share one TLS context (building one loads the CA bundle: ~30 ms each).

Every supervised upstream gets its own client at start, and the router opens one per backend
session; with a context per client, 100 upstreams kept the broker from listening for ~3.5 s
(bench/bench_scale.py, docs/benchmarks-scale.md).
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream.client import HttpUpstreamClient, new_http_client, tls_context

SERVERS = [
    ServerConfig(name=f"s{i}", url=f"https://s{i}.test/mcp", prefix=f"s{i}_") for i in range(5)
]


async def test_clients_for_many_upstreams_build_one_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[ssl.SSLContext] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = original(*args, **kwargs)
        built.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting)
    tls_context.cache_clear()
    clients = [new_http_client(server) for server in SERVERS for _ in range(4)]
    # HttpUpstreamClient without a client of its own (the router's backend sessions) too.
    clients += [HttpUpstreamClient(server)._http for server in SERVERS]
    try:
        assert len(built) == 1
    finally:
        for client in clients:
            await client.aclose()
        tls_context.cache_clear()


def test_the_shared_context_verifies_like_httpx_default() -> None:
    context = tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.get_ca_certs()  # certifi's bundle is loaded
