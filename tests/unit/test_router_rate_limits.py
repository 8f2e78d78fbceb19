"""What the router tells Envoy's rate limits, and how it reads Envoy's refusal (decision.py;
router/rate_limits.py renders the limits, tests/unit/test_router_xds.py checks that)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import RateLimitSettings, parse_config
from mcp_gateway.router.decision import (
    NAME_HEADER,
    RATE_LIMITED_HEADER,
    REQUEST_ID_HEADER,
    SESSION_HEADER,
    SESSION_KEY_HEADER,
    UPSTREAM_MARK_HEADER,
    Answer,
    NeedsBackend,
    RoutingTable,
    ToBroker,
    forward,
    header_safe,
    judge_answer,
    route_request,
)
from mcp_gateway.router.rate_limits import retry_after_seconds
from mcp_gateway.sessions import SessionTokens, derive_key

CONFIG = parse_config(
    """
servers:
  - name: alpha
    url: http://127.0.0.1:9101/mcp
    prefix: a_
"""
)
TABLE = RoutingTable.from_config(CONFIG)
TOKENS = SessionTokens([derive_key("k" * 32)])
TOKEN = TOKENS.issue("2025-11-25")
HEADERS = {":method": "POST", ":path": "/mcp", "content-type": "application/json", SESSION_HEADER: TOKEN}


def routed(name: str, request_id: object) -> NeedsBackend:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}})
    decision = route_request(HEADERS, body.encode(), TABLE, TOKENS)
    assert isinstance(decision, NeedsBackend), decision
    return decision


@given(st.one_of(st.integers(-(2**63), 2**63), st.text(max_size=30)))
def test_a_routed_call_names_its_session_its_exposed_name_and_its_id_as_json_text(request_id: object) -> None:
    sent = dict(forward(routed("a_add", request_id), "backend-1").set_headers)
    assert sent[SESSION_KEY_HEADER] == TOKEN  # the gateway's token: mcp-session-id is the backend's
    assert sent[SESSION_HEADER] == "backend-1"
    assert sent[NAME_HEADER] == "a_add"  # as the client called it, prefix and all
    assert json.loads(sent[REQUEST_ID_HEADER]) == request_id  # its JSON type kept (429 body)
    assert sent[REQUEST_ID_HEADER].isascii()


def test_a_name_that_is_not_printable_ascii_is_named_in_its_header_form() -> None:
    # Tool names that route are ASCII (protocol.strip_prefix); the header never carries raw bytes.
    assert header_safe("a_add") == "a_add"
    assert header_safe("a_grüße").isascii() and header_safe("a_grüße") != "a_grüße"


def test_a_request_for_the_broker_carries_its_id_and_nothing_else_does() -> None:
    listing = route_request(HEADERS, b'{"jsonrpc":"2.0","id":"x","method":"tools/list"}', TABLE, TOKENS)
    assert isinstance(listing, ToBroker) and listing.request_id == "x"
    note = route_request(HEADERS, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', TABLE, TOKENS)
    assert isinstance(note, ToBroker) and note.request_id is None
    answer = route_request(HEADERS, b'{"jsonrpc":"2.0","id":3,"result":{}}', TABLE, TOKENS)
    assert isinstance(answer, ToBroker) and answer.request_id is None  # a response's id is not a request's


def test_envoys_refusal_is_passed_on_but_an_upstreams_own_header_proves_nothing() -> None:
    need = routed("a_add", 1)
    refused = {":status": "429", RATE_LIMITED_HEADER: "1"}
    assert judge_answer(refused, need, "b") is Answer.RATE_LIMITED
    # Without the header: a local reply the router must turn into its JSON-RPC error.
    assert judge_answer({":status": "429"}, need, "b") is Answer.NOT_FROM_UPSTREAM
    # An upstream's own answer stays the upstream's, whatever it says about itself.
    upstream = {**refused, UPSTREAM_MARK_HEADER: "alpha via_upstream"}
    assert judge_answer(upstream, need, "b") is Answer.FROM_UPSTREAM


def test_retry_after_is_the_longest_wait_for_one_token_of_any_limit() -> None:
    limits = RateLimitSettings.model_validate({
        "per_session": {"requests": 3, "per_seconds": 10},  # a token every 3.3 s: 4
        "per_tool": [{"tool": "a_*", "requests": 100, "per_seconds": 1}],  # 0.01 s: 1
    })
    assert retry_after_seconds(limits) == 4
