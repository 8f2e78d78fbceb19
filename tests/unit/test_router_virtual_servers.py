"""Virtual servers (Kuadrant's `X-Mcp-Virtualserver: namespace/name`) on routed calls: the router
answers a name the selection does not offer, and an unknown selection, as the broker would."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import parse_config
from mcp_gateway.router.decision import (
    SESSION_HEADER,
    VIRTUAL_SERVER_HEADER,
    NeedsBackend,
    Reply,
    RoutingTable,
    ToBroker,
    forward,
    route_request,
)
from mcp_gateway.sessions import SessionTokens, derive_key

CONFIG = parse_config(
    """
servers:
  - name: dynamic
    url: http://127.0.0.1:9101/mcp
    prefix: dyn_
  - name: europe
    url: http://127.0.0.1:9103/mcp
    prefix: eu_
virtualServers:
  - name: team/narrow
    tools: [dyn_add]
    prompts: [eu_weather]
    resources: ["mcp-gateway:dyn_file:///{path}"]
"""
)
TABLE = RoutingTable.from_config(CONFIG)
TOKENS = SessionTokens([derive_key("v" * 32)])
TOKEN = TOKENS.issue("2025-11-25")


def headers(virtual: str | None = "team/narrow") -> dict[str, str]:
    base = {":method": "POST", ":path": "/mcp", "content-type": "application/json", SESSION_HEADER: TOKEN}
    if virtual is not None:
        base[VIRTUAL_SERVER_HEADER] = virtual
    return base


def call(name: str, request_id: object = 7, method: str = "tools/call") -> bytes:
    params = {"name": name, "arguments": {}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


def complete(ref: dict[str, str], request_id: object = 5) -> bytes:
    params = {"ref": ref, "argument": {"name": "city", "value": "Par"}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "completion/complete", "params": params}).encode()


def error_of(decision: object) -> tuple[int, object, int, str]:
    assert isinstance(decision, Reply), decision
    document = json.loads(decision.body)
    return decision.status, document["id"], document["error"]["code"], document["error"]["message"]


def test_the_config_key_is_read() -> None:
    assert [v.name for v in TABLE.virtual_servers] == ["team/narrow"]


def test_names_inside_the_virtual_server_are_routed_and_the_upstream_never_sees_the_selection() -> None:
    for body in (
        call("dyn_add"),
        call("eu_weather", method="prompts/get"),
        complete({"type": "ref/prompt", "name": "eu_weather"}),
        complete({"type": "ref/resource", "uri": "mcp-gateway:dyn_file:///{path}"}),
    ):
        decision = route_request(headers(), body, TABLE, TOKENS)
        assert isinstance(decision, NeedsBackend), body
        assert VIRTUAL_SERVER_HEADER not in decision.remove_headers  # not a routing header...
        assert VIRTUAL_SERVER_HEADER in forward(decision, "b").remove_headers  # ...and not the upstream's


def test_names_outside_the_virtual_server_are_unknown_with_the_id() -> None:
    assert error_of(route_request(headers(), call("dyn_echo", "a"), TABLE, TOKENS)) == (
        200, "a", -32602, "Unknown tool: dyn_echo"
    )
    assert error_of(route_request(headers(), call("dyn_add", 3, "prompts/get"), TABLE, TOKENS)) == (
        200, 3, -32602, "Unknown prompt: dyn_add"
    )
    assert error_of(route_request(headers(), complete({"type": "ref/prompt", "name": "eu_other"}, "c"), TABLE, TOKENS)) == (
        200, "c", -32602, "Unknown prompt: eu_other"
    )
    uri = "mcp-gateway:eu_file:///{x}"
    assert error_of(route_request(headers(), complete({"type": "ref/resource", "uri": uri}, 4), TABLE, TOKENS)) == (
        200, 4, -32002, f"Unknown resource: {uri}"
    )


def test_an_unknown_virtual_server_is_a_400_with_the_id() -> None:
    for body, request_id in ((call("dyn_add", 11), 11), (complete({"type": "ref/prompt", "name": "eu_weather"}, "z"), "z")):
        assert error_of(route_request(headers("team/nope"), body, TABLE, TOKENS)) == (
            400, request_id, -32600, "Bad Request: unknown virtual server 'team/nope'"
        )


def test_without_a_selection_everything_routes_and_the_broker_keeps_the_header() -> None:
    assert isinstance(route_request(headers(None), call("dyn_echo"), TABLE, TOKENS), NeedsBackend)
    listing = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    to_broker = route_request(headers(), listing, TABLE, TOKENS)
    assert isinstance(to_broker, ToBroker) and VIRTUAL_SERVER_HEADER not in to_broker.remove_headers


tool_names = st.one_of(st.sampled_from(["dyn_add", "dyn_echo", "eu_weather", "eu_add"]), st.text(min_size=1, max_size=20))
selections = st.one_of(st.none(), st.just("team/narrow"), st.text(min_size=1, max_size=20))
request_ids = st.one_of(st.integers(min_value=-(2**53), max_value=2**53), st.text(max_size=10))


@given(tool_names, selections, request_ids)
def test_property_a_selection_only_narrows(name: str, selection: str | None, request_id: object) -> None:
    """With a selection, a call is routed exactly as without one, or refused with its id: as
    unknown when the name is not offered, with a 400 when the selection is not defined."""
    plain = route_request(headers(None), call(name, request_id), TABLE, TOKENS)
    selected = route_request(headers(selection), call(name, request_id), TABLE, TOKENS)
    if not selection or (selection == "team/narrow" and name == "dyn_add"):
        assert type(selected) is type(plain)
        if isinstance(plain, NeedsBackend):
            assert isinstance(selected, NeedsBackend)
            assert (selected.upstream, selected.body) == (plain.upstream, plain.body)
        return
    status, answered_id, code, message = error_of(selected)
    assert answered_id == request_id
    if selection == "team/narrow":
        assert (status, code, message) == (200, -32602, f"Unknown tool: {name}")
    else:
        assert (status, code) == (400, -32600) and "unknown virtual server" in message
