"""Who may ask the broker's internal endpoint: loopback peers only, in every spelling."""

from __future__ import annotations

import pytest

from mcp_gateway.broker.internal import is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1"])
def test_loopback_peers(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["192.0.2.2", "10.0.0.1", "::ffff:10.0.0.1", "fd00::2", "0.0.0.0", "", None, "localhost", "unix"]
)
def test_anything_else(host: str | None) -> None:
    assert not is_loopback(host)
