"""Envoy's Lua filter keeps its own copy of the handshake revisions (a session's request with any
other version header is left to the router, which refuses it): the copy must stay equal."""

from __future__ import annotations

import re
from pathlib import Path

from mcp_gateway.protocol._modern import HANDSHAKE_VERSIONS

LUA = Path(__file__).resolve().parents[2] / "envoy" / "fast_path.lua"


def test_the_lua_filter_knows_exactly_the_handshake_revisions() -> None:
    table = re.search(r"local HANDSHAKE_VERSIONS = \{(.*?)\n\}", LUA.read_text(), re.S)
    assert table is not None
    assert set(re.findall(r'\["([0-9-]+)"\] = true', table.group(1))) == set(HANDSHAKE_VERSIONS)
