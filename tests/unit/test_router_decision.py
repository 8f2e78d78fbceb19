"""The pure routing decision: examples first, then the invariants as hypothesis properties.

docs/invariants.md maps each invariant to the property that checks it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import parse_config
from mcp_gateway.protocol import ErrorCode
from mcp_gateway.router.decision import (
    SESSION_HEADER,
    UPSTREAM_MARK_HEADER,
    VIRTUAL_SERVER_HEADER,
    Answer,
    Cancels,
    NeedsBackend,
    Reply,
    RoutingTable,
    ToBroker,
    UpstreamRoute,
    backend_session_expired,
    forward,
    judge_answer,
    rewrite_response_headers,
    route_request,
    upstream_unavailable,
)
from mcp_gateway.router.relay import gateway_id, original_of
from mcp_gateway.sessions import SessionTokens, derive_key

CONFIG = parse_config(
    """
servers:
  - name: dynamic
    url: http://127.0.0.1:9101/mcp
    prefix: dyn_
  - name: europe
    url: http://127.0.0.1:9103/eu/mcp
    prefix: eu_
  - name: slow
    url: https://slow.example:8443/mcp
    hostname: slow.internal
    prefix: slow_
    credential: s3cret-token
  - name: retired
    url: http://127.0.0.1:9104/mcp
    prefix: off_
    state: Disabled
"""
)
TABLE = RoutingTable.from_config(CONFIG)
TOKENS = SessionTokens([derive_key("k" * 32)])
OTHER_TOKENS = SessionTokens([derive_key("x" * 32)])
TOKEN = TOKENS.issue("2025-11-25")


def call(name: object, request_id: object = 7, method: str = "tools/call") -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"name": name, "arguments": {"a": 1}}}
    ).encode()


def headers(**extra: str) -> dict[str, str]:
    base = {
        ":method": "POST",
        ":path": "/mcp",
        ":authority": "127.0.0.1:8080",
        "content-type": "application/json",
        SESSION_HEADER: TOKEN,
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def error_of(reply: Reply) -> tuple[object, int, str]:
    document = json.loads(reply.body)
    return document["id"], document["error"]["code"], document["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Examples


def test_prefixed_tool_goes_to_its_upstream_with_prefix_stripped() -> None:
    decision = route_request(headers(), call("dyn_add"), TABLE, TOKENS)
    assert isinstance(decision, NeedsBackend)
    assert decision.upstream.server == "dynamic"
    assert decision.routed_name == "add"
    assert json.loads(decision.body)["params"] == {"name": "add", "arguments": {"a": 1}}
    assert decision.request_id == 7
    assert decision.claims.protocol_version == "2025-11-25"


def test_longest_prefix_wins() -> None:
    # The config refuses overlapping prefixes; the table still prefers the longest one.
    short = UpstreamRoute("short", "dyn_", "a:1", "/mcp", None)
    long = UpstreamRoute("long", "dyn_eu_", "b:1", "/mcp", None)
    table = RoutingTable.of([short, long])
    assert table.match("dyn_eu_forecast") == (long, "forecast")
    assert table.match("dyn_add") == (short, "add")


def test_forward_sets_routing_headers_backend_session_and_content_length() -> None:
    need = route_request(headers(), call("dyn_add"), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    out = forward(need, "backend-123")
    set_headers = dict(out.set_headers)
    assert set_headers["x-mcp-servername"] == "dynamic"
    assert set_headers["x-mcp-toolname"] == "add"
    assert set_headers["x-mcp-method"] == "tools/call"
    assert set_headers[":authority"] == "127.0.0.1:9101"
    assert set_headers[":path"] == "/mcp"
    assert set_headers[SESSION_HEADER] == "backend-123"
    assert set_headers["content-length"] == str(len(out.body))
    assert "authorization" in out.remove_headers  # the client's credential is the gateway's


def test_forward_uses_hostname_and_credential_of_the_upstream() -> None:
    need = route_request(headers(authorization="Bearer client"), call("slow_sleep"), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    out = forward(need, "b")
    set_headers = dict(out.set_headers)
    assert set_headers[":authority"] == "slow.internal:8443"
    assert set_headers["authorization"] == "Bearer s3cret-token"
    assert "authorization" not in out.remove_headers
    assert "s3cret" not in repr(need.upstream)


def test_a_credential_with_its_own_scheme_is_sent_as_it_is() -> None:
    """Kuadrant's credential is the whole header value: `APIKEY k` is not turned into a Bearer."""
    config = parse_config(
        "servers:\n  - {name: keyed, url: 'http://127.0.0.1:9105/mcp', prefix: key_, credential: 'APIKEY k-1'}\n"
    )
    need = route_request(headers(), call("key_x"), RoutingTable.from_config(config), TOKENS)
    assert isinstance(need, NeedsBackend)
    assert dict(forward(need, "b").set_headers)["authorization"] == "APIKEY k-1"


def test_path_of_a_non_root_upstream() -> None:
    need = route_request(headers(), call("eu_x"), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    assert dict(forward(need, "b").set_headers)[":path"] == "/eu/mcp"


def test_prompts_get_is_routed_by_name_too() -> None:
    decision = route_request(headers(), call("slow_greeting", method="prompts/get"), TABLE, TOKENS)
    assert isinstance(decision, NeedsBackend)
    assert (decision.upstream.server, decision.routed_name, decision.method) == ("slow", "greeting", "prompts/get")


def answer(request_id: object, result: object = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result or {"roots": []}}).encode()


def complete(ref: object, request_id: object = 5) -> bytes:
    params = {"ref": ref, "argument": {"name": "city", "value": "Par"}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "completion/complete", "params": params}).encode()


def test_completion_goes_to_the_owner_of_its_prompt_or_resource_template() -> None:
    by_prompt = route_request(headers(), complete({"type": "ref/prompt", "name": "eu_weather"}), TABLE, TOKENS)
    assert isinstance(by_prompt, NeedsBackend)
    assert (by_prompt.upstream.server, by_prompt.routed_name, by_prompt.method) == (
        "europe", "weather", "completion/complete"
    )
    assert json.loads(by_prompt.body)["params"]["ref"] == {"type": "ref/prompt", "name": "weather"}

    template = "mcp-gateway:dyn_file:///{path}"
    by_template = route_request(headers(), complete({"type": "ref/resource", "uri": template}), TABLE, TOKENS)
    assert isinstance(by_template, NeedsBackend)
    assert (by_template.upstream.server, by_template.routed_name) == ("dynamic", "file:///{path}")
    assert json.loads(by_template.body)["params"]["ref"]["uri"] == "file:///{path}"


def test_completion_of_an_unknown_or_malformed_reference_is_invalid_params_with_the_id() -> None:
    unknown = route_request(headers(), complete({"type": "ref/prompt", "name": "zz_x"}, "q"), TABLE, TOKENS)
    assert isinstance(unknown, Reply)
    assert (unknown.status, error_of(unknown)) == (200, ("q", -32602, "Unknown prompt: zz_x"))
    foreign_uri = route_request(headers(), complete({"type": "ref/resource", "uri": "file:///x"}), TABLE, TOKENS)
    assert isinstance(foreign_uri, Reply)  # no unprefixed server here owns plain URIs
    assert error_of(foreign_uri)[1:] == (-32002, "Unknown resource: file:///x")
    malformed = route_request(headers(), complete({"type": "ref/tool", "name": "dyn_x"}, 9), TABLE, TOKENS)
    assert isinstance(malformed, Reply)
    assert error_of(malformed)[:2] == (9, -32602)
    no_session = route_request(
        {**headers(), SESSION_HEADER: ""}, complete({"type": "ref/prompt", "name": "dyn_x"}), TABLE, TOKENS
    )
    assert isinstance(no_session, Reply) and no_session.status == 400


def test_an_unprefixed_server_owns_every_plain_uri() -> None:
    table = RoutingTable.of([UpstreamRoute("plain", "", "a:1", "/mcp", None), UpstreamRoute("p", "p_", "b:1", "/mcp", None)])
    assert table.match_uri("test://template/{id}/data") == (table.server("plain"), "test://template/{id}/data")
    assert table.match_uri("mcp-gateway:p_file:///x") == (table.server("p"), "file:///x")


def test_unknown_prefix_is_the_specs_unknown_tool_error_with_the_request_id() -> None:
    decision = route_request(headers(), call("nope_add", request_id="abc"), TABLE, TOKENS)
    assert isinstance(decision, Reply)
    assert decision.status == 200
    assert error_of(decision) == ("abc", -32602, "Unknown tool: nope_add")


def test_disabled_server_is_unknown() -> None:
    decision = route_request(headers(), call("off_x"), TABLE, TOKENS)
    assert isinstance(decision, Reply)
    assert error_of(decision)[1] == -32602


def test_foreign_origin_is_refused_before_routing_loopback_and_listed_ones_pass() -> None:
    table = RoutingTable.of(TABLE.routes, allowed_origins=["https://app.example"])
    refused = route_request(headers(origin="https://evil.example"), call("dyn_add", 4), table, TOKENS)
    assert isinstance(refused, Reply) and refused.status == 403
    assert error_of(refused)[:2] == (4, -32600)
    for origin in ("https://app.example", "http://localhost:6274", "http://127.0.0.1:8080"):
        assert isinstance(route_request(headers(origin=origin), call("dyn_add"), table, TOKENS), NeedsBackend)
    assert isinstance(route_request(headers(), call("dyn_add"), table, TOKENS), NeedsBackend)


def test_missing_session_is_400_and_foreign_session_is_404() -> None:
    without = headers()
    del without[SESSION_HEADER]
    missing = route_request(without, call("dyn_add"), TABLE, TOKENS)
    assert isinstance(missing, Reply) and missing.status == 400
    assert error_of(missing)[0] == 7
    foreign = route_request(headers(mcp_session_id=OTHER_TOKENS.issue("2025-11-25")), call("dyn_add"), TABLE, TOKENS)
    assert isinstance(foreign, Reply) and foreign.status == 404
    assert error_of(foreign)[:2] == (7, -32600)


def test_missing_name_is_invalid_params() -> None:
    body = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}'
    decision = route_request(headers(), body, TABLE, TOKENS)
    assert isinstance(decision, Reply)
    assert error_of(decision)[:2] == (3, -32602)


def test_broker_methods_and_non_posts_go_to_the_broker() -> None:
    for method in ("initialize", "tools/list", "ping", "prompts/list"):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).encode()
        assert isinstance(route_request(headers(), body, TABLE, TOKENS), ToBroker)
    notification = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    assert isinstance(route_request(headers(), notification, TABLE, TOKENS), ToBroker)
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'
    assert isinstance(route_request(headers(), batch, TABLE, TOKENS), ToBroker)
    assert isinstance(route_request(headers(**{":method": "GET"}), b"", TABLE, TOKENS), ToBroker)


def test_stdio_servers_prefixes_go_to_the_broker_which_relays_them() -> None:
    config = parse_config(
        """
servers:
  - name: local
    transport: stdio
    command: [my-mcp-server]
    prefix: loc_
"""
    )
    table = RoutingTable.from_config(config)
    assert isinstance(route_request(headers(), call("loc_x"), table, TOKENS), ToBroker)
    assert isinstance(route_request(headers(), call("other_x"), table, TOKENS), Reply)


def test_a_session_request_naming_a_revision_without_sessions_is_refused_before_anything_else() -> None:
    """2026-07-28 has no sessions: a request carrying one and that version header is the
    session's -32600 (as the broker answers), before its mirrored headers are even read; such
    calls are routed as modern ones only without a session (router/modern_clients.py)."""
    for lying_name in ("dyn_add", "slow_sleep"):
        modern = headers(mcp_protocol_version="2026-07-28", mcp_method="tools/call", mcp_name=lying_name)
        reply = route_request(modern, call("dyn_add", request_id=12), TABLE, TOKENS)
        assert isinstance(reply, Reply) and reply.status == 400
        assert error_of(reply)[:2] == (12, ErrorCode.INVALID_REQUEST)
    unknown = route_request(headers(mcp_protocol_version="2099-01-01"), call("dyn_add", request_id=13), TABLE, TOKENS)
    assert isinstance(unknown, Reply) and unknown.status == 400
    assert error_of(unknown)[:2] == (13, ErrorCode.INVALID_REQUEST)
    # A handshake revision, or none (2025-03-26 clients send none), is routed; nothing mirrored.
    for version in ({}, {"mcp_protocol_version": "2025-11-25"}):
        plain = route_request(headers(**version), call("dyn_add"), TABLE, TOKENS)
        assert isinstance(plain, NeedsBackend)
        assert "mcp-name" not in dict(forward(plain, "b").set_headers)


def test_malformed_bodies_get_precise_errors_never_5xx() -> None:
    parse = route_request(headers(), b"{not json", TABLE, TOKENS)
    assert isinstance(parse, Reply) and parse.status == 400
    assert error_of(parse)[:2] == (None, -32700)
    invalid = route_request(headers(), b'{"jsonrpc":"1.0","id":5,"method":"tools/call"}', TABLE, TOKENS)
    assert isinstance(invalid, Reply) and invalid.status == 400
    assert error_of(invalid)[1] == -32600
    big = route_request(headers(), b'{"a":"' + b"x" * 2_000_000 + b'"}', TABLE, TOKENS)
    assert isinstance(big, Reply) and big.status == 413


def test_response_headers_carry_the_gateway_session_only() -> None:
    upstream = {":status": "200", SESSION_HEADER: "backend-123", "x-mcp-servername": "dynamic", "content-type": "text/event-stream"}
    mutation = rewrite_response_headers(upstream, TOKEN)
    assert dict(mutation.set_headers) == {SESSION_HEADER: TOKEN}
    assert "x-mcp-servername" in mutation.remove_headers


def test_only_a_404_of_a_mapped_session_counts_as_expired() -> None:
    assert backend_session_expired(404, "b")
    assert not backend_session_expired(404, None)
    assert not backend_session_expired(200, "b")
    assert not backend_session_expired(500, "b")


def test_an_answer_counts_as_the_upstreams_only_with_envoys_mark_for_that_upstream() -> None:
    need = route_request(headers(), call("dyn_add"), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    marked = {UPSTREAM_MARK_HEADER: "dynamic via_upstream"}
    assert judge_answer({":status": "200", **marked}, need, "b") is Answer.FROM_UPSTREAM
    assert judge_answer({":status": "404", **marked}, need, "b") is Answer.BACKEND_SESSION_EXPIRED
    # A 404 from anywhere else (the broker on a stale route, an Envoy local reply) is not a
    # backend session expiry, and nothing unmarked passes as the upstream's answer.
    assert judge_answer({":status": "404"}, need, "b") is Answer.NOT_FROM_UPSTREAM
    assert judge_answer({":status": "503"}, need, "b") is Answer.NOT_FROM_UPSTREAM
    assert judge_answer({":status": "200", UPSTREAM_MARK_HEADER: "slow via_upstream"}, need, "b") is Answer.NOT_FROM_UPSTREAM
    local_reply = {":status": "503", UPSTREAM_MARK_HEADER: "dynamic upstream_reset_before_response_started{remote_connection_failure}"}
    assert judge_answer(local_reply, need, "b") is Answer.NOT_FROM_UPSTREAM
    # The mark itself never reaches the client.
    assert UPSTREAM_MARK_HEADER in rewrite_response_headers(marked, TOKEN).remove_headers


def test_upstream_unavailable_is_a_json_rpc_error_with_the_id() -> None:
    need = route_request(headers(), call("dyn_add", request_id=99), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    reply = upstream_unavailable(need)
    assert reply.status == 200
    assert error_of(reply)[:2] == (99, -32603)


# ---------------------------------------------------------------------------------------------
# Properties (the invariants of docs/invariants.md)

request_ids = st.one_of(st.integers(min_value=-(2**53), max_value=2**53), st.text(max_size=20))
known_tools = st.sampled_from(["dyn_add", "eu_forecast", "slow_sleep", "dyn_"])
any_tool = st.one_of(known_tools, st.text(min_size=1, max_size=30))
x_mcp_names = st.builds(
    lambda suffix, upper: ("X-MCP-" if upper else "x-mcp-") + suffix,
    st.sampled_from(["servername", "toolname", "method", "virtualserver", "anything", "session"]),
    st.booleans(),
)
client_headers = st.dictionaries(
    st.one_of(x_mcp_names, st.sampled_from(["authorization", "accept", "user-agent"])),
    st.text(min_size=1, max_size=20),
    max_size=6,
)
bodies = st.one_of(
    st.builds(call, any_tool, request_ids),
    st.builds(lambda ref, i: complete(ref, i), st.one_of(
        st.builds(lambda n: {"type": "ref/prompt", "name": n}, any_tool),
        st.builds(lambda u: {"type": "ref/resource", "uri": u}, st.sampled_from(
            ["mcp-gateway:dyn_file:///{x}", "mcp-gateway:nope_x", "file:///x"])),
        st.just({"type": "ref/prompt"}),
    ), request_ids),
    st.builds(lambda n, i: call(n, i, "prompts/get"), any_tool, request_ids),
    # The client's answers to server→client requests (gateway ids or not) and cancellations.
    st.builds(lambda server, i: answer(gateway_id(server, i)), st.sampled_from(["europe", "dynamic", "nowhere"]), request_ids),
    st.builds(answer, st.one_of(request_ids, st.just("mcpgw:x"))),
    st.builds(lambda i: json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": i}}).encode(), request_ids),
    st.binary(max_size=200),
    st.sampled_from([b"", b"[]", b"{}", b"null", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}']),
)


def effective_request_headers(client: Mapping[str, str], decision: object) -> dict[str, str] | None:
    """What the request carries after Envoy applies the decision (None: it goes nowhere)."""
    if isinstance(decision, Reply):
        return None
    if isinstance(decision, Cancels):  # to its upstream (a follow-up) or to the broker
        decision = decision.follow_up(TABLE.routes[0])
    # Envoy's header names are case-insensitive: a removal of `x-a` removes `X-A`.
    if isinstance(decision, ToBroker):
        removed = {name.lower() for name in decision.remove_headers}
        return {k: v for k, v in client.items() if k.lower() not in removed}
    assert isinstance(decision, NeedsBackend)
    out = forward(decision, "backend-id")
    removed = {name.lower() for name in (*decision.remove_headers, *out.remove_headers)}
    result = {k: v for k, v in client.items() if k.lower() not in removed}
    result.update(dict(out.set_headers))
    return result


@given(client_headers, bodies)
def test_property_client_x_mcp_headers_never_survive(extra: dict[str, str], body: bytes) -> None:
    client = {**headers(), **extra}
    decision = route_request(client, body, TABLE, TOKENS)
    effective = effective_request_headers(client, decision)
    if effective is None:
        return
    if isinstance(decision, Cancels):
        decision = decision.follow_up(TABLE.routes[0])
    set_by_gateway = dict(forward(decision, "backend-id").set_headers) if isinstance(decision, NeedsBackend) else {}
    for name, value in effective.items():
        if name.lower() == VIRTUAL_SERVER_HEADER:
            # The one named exception: a selection, for the broker only (never an upstream).
            assert isinstance(decision, ToBroker), f"{name} reached an upstream"
        elif name.lower().startswith("x-mcp-"):
            assert set_by_gateway.get(name) == value, f"client header {name} survived"


@given(
    st.dictionaries(st.sampled_from([SESSION_HEADER, "x-mcp-servername", "x-mcp-session", "content-type"]), st.just("BACKEND-SECRET")),
)
def test_property_no_backend_session_id_in_response_mutations(upstream: dict[str, str]) -> None:
    mutation = rewrite_response_headers({":status": "200", **upstream}, TOKEN)
    result = {k: v for k, v in upstream.items() if k not in mutation.remove_headers}
    result.update(dict(mutation.set_headers))
    assert result[SESSION_HEADER] == TOKEN
    assert all(v != "BACKEND-SECRET" for k, v in result.items() if k == SESSION_HEADER or k.startswith("x-mcp-"))


@given(st.text(min_size=1, max_size=40).filter(lambda n: TABLE.match(n) is None), request_ids)
def test_property_unknown_tool_is_invalid_params_with_the_request_id(name: str, request_id: object) -> None:
    decision = route_request(headers(), call(name, request_id), TABLE, TOKENS)
    assert isinstance(decision, Reply)
    assert decision.status == 200
    assert error_of(decision)[:2] == (request_id, -32602)


@given(client_headers, bodies, st.sampled_from([TOKEN, "", "garbage", OTHER_TOKENS.issue("2025-11-25")]))
def test_property_fail_closed(extra: dict[str, str], body: bytes, token: str) -> None:
    """Never raises; only a well-formed routed call with a valid session reaches an upstream,
    and always one whose prefix is configured; every Reply is a JSON-RPC error, never a 5xx."""
    client = {**headers(), **extra, SESSION_HEADER: token}
    decision = route_request(client, body, TABLE, TOKENS)
    if isinstance(decision, NeedsBackend):
        assert token == TOKEN
        document = json.loads(body)
        if decision.follow_up:  # an answer: to the server its gateway id names, original id back
            origin = original_of(document["id"])
            assert origin is not None and origin[0] == decision.upstream.server
            assert json.loads(decision.body)["id"] == origin[1]
            return
        assert document["method"] in ("tools/call", "prompts/get", "completion/complete")
        if document["method"] == "completion/complete":
            ref = document["params"]["ref"]
            matched = TABLE.match(ref["name"]) if "name" in ref else TABLE.match_uri(ref["uri"])
        else:
            matched = TABLE.match(document["params"]["name"])
        assert matched is not None and matched[0] == decision.upstream
    elif isinstance(decision, Cancels):
        assert token == TOKEN and decision.claims.session_id == TOKENS.verify(TOKEN).session_id  # type: ignore[union-attr]
    elif isinstance(decision, Reply):
        assert 400 <= decision.status < 500 or decision.status == 200
        assert "error" in json.loads(decision.body)


@given(st.sampled_from(["dyn_", "eu_", "slow_"]), st.text(min_size=1, max_size=30), request_ids, st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
def test_property_prefix_stripped_and_nothing_else_changed(prefix: str, rest: str, request_id: object, arguments: dict[str, int]) -> None:
    name = prefix + rest
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}).encode()
    decision = route_request(headers(), body, TABLE, TOKENS)
    if isinstance(decision, Reply):  # a name the protocol refuses (e.g. control characters)
        assert error_of(decision)[1] in (-32602, -32600)
        return
    assert isinstance(decision, NeedsBackend)
    assert decision.upstream.prefix == prefix
    forwarded = json.loads(forward(decision, "b").body)
    assert forwarded == {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": rest, "arguments": arguments}}
    assert dict(forward(decision, "b").set_headers)["content-length"] == str(len(decision.body))


@given(st.text(min_size=1, max_size=40), st.text(min_size=16, max_size=40))
def test_property_credentials_and_tokens_never_in_reprs(server: str, credential: str) -> None:
    route = UpstreamRoute(server, "p_", "h:1", "/mcp", credential)
    need = route_request(headers(), call("slow_x"), TABLE, TOKENS)
    assert isinstance(need, NeedsBackend)
    assert credential not in repr(route) or credential in repr(server)
    assert TOKEN not in repr(need)
    assert "s3cret-token" not in repr(need)


# ---------------------------------------------------------------------------------------------
# Answers to server→client requests (router/relay.py)


def test_an_answer_with_a_gateway_id_goes_back_to_the_server_that_asked_with_its_own_id() -> None:
    from mcp_gateway.router.relay import gateway_id

    decision = route_request(headers(), answer(gateway_id("europe", 0)), TABLE, TOKENS)
    assert isinstance(decision, NeedsBackend)
    assert (decision.upstream.server, decision.follow_up) == ("europe", True)
    assert json.loads(decision.body) == {"jsonrpc": "2.0", "id": 0, "result": {"roots": []}}
    sent = dict(forward(decision, "backend-eu").set_headers)
    assert (sent["x-mcp-servername"], sent[SESSION_HEADER], sent[":path"]) == ("europe", "backend-eu", "/eu/mcp")
    assert "x-mcp-method" not in sent


def test_an_answer_nobody_here_asked_for_is_refused_at_once_never_left_hanging() -> None:
    from mcp_gateway.router.relay import gateway_id

    for request_id in (gateway_id("nowhere", 1), "mcpgw:garbage"):
        decision = route_request(headers(), answer(request_id), TABLE, TOKENS)
        assert isinstance(decision, Reply)
        assert decision.status == 400
        assert error_of(decision)[:2] == (request_id, -32600)
    # Ordinary answers (to the broker's own requests) stay the broker's.
    assert isinstance(route_request(headers(), answer(3), TABLE, TOKENS), ToBroker)
    no_session = route_request({**headers(), SESSION_HEADER: "forged"}, answer(gateway_id("europe", 0)), TABLE, TOKENS)
    assert isinstance(no_session, Reply) and no_session.status == 404
