"""Server→client requests of a routed call: gateway ids on the way out, originals on the way back."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.router.relay import SseIdTagger, can_be_asked, gateway_id, original_of

SAMPLING = b'{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{"maxTokens":5}}'
PROGRESS = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}'
RESULT = b'{"jsonrpc":"2.0","id":0,"result":{"content":[]}}'


def events(*payloads: bytes, newline: bytes = b"\r\n") -> bytes:
    return b"".join(b"event: message" + newline + b"data: " + p + newline + newline for p in payloads)


def data_of(stream: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in stream.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data: ")]


def test_only_requests_get_a_gateway_id_naming_the_server() -> None:
    out = SseIdTagger("everything").feed(events(PROGRESS, SAMPLING, RESULT), end_of_stream=True)
    progress, sampling, result = data_of(out)
    assert progress == json.loads(PROGRESS)
    assert result == json.loads(RESULT)  # the call's own answer keeps the client's id
    assert sampling["id"] == 'mcpgw:["everything",0]'
    assert original_of(str(sampling["id"])) == ("everything", 0)
    assert out.count(b"\r\n\r\n") == 3


def test_two_upstreams_using_the_same_id_never_collide() -> None:
    a, b = gateway_id("a", 0), gateway_id("b", 0)
    assert a != b
    assert (original_of(a), original_of(b)) == (("a", 0), ("b", 0))
    assert original_of(gateway_id("ns/a:b", "x:1")) == ("ns/a:b", "x:1")


def test_ids_that_are_not_ours_are_left_alone() -> None:
    for foreign in (0, "0", "mcpgw:", "mcpgw:s", 'mcpgw:["s",1.5]', 'mcpgw:["",1]', 'mcpgw:["s",1,2]', "mcpgw:{}", None):
        assert original_of(foreign) is None  # type: ignore[arg-type]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=10), st.sampled_from([b"\n", b"\r\n"]))
def test_property_any_chunking_gives_the_same_stream(cuts: list[int], newline: bytes) -> None:
    stream = events(PROGRESS, SAMPLING, PROGRESS, RESULT, newline=newline)
    whole = SseIdTagger("s").feed(stream, end_of_stream=True)
    tagger, out, position = SseIdTagger("s"), [], 0
    for cut in cuts:
        out.append(tagger.feed(stream[position : position + cut]))
        position += cut
    out.append(tagger.feed(stream[position:], end_of_stream=True))
    assert b"".join(out) == whole
    assert [m.get("id") for m in data_of(whole)] == [None, gateway_id("s", 0), None, 0]


def test_a_multi_line_data_field_is_read_whole_and_an_endless_event_is_bounded() -> None:
    spread = b'event: message\ndata: {"jsonrpc":"2.0","id":"r1",\ndata: "method":"roots/list"}\n\n'
    out = SseIdTagger("s").feed(spread, end_of_stream=True)
    assert json.loads(b"".join(line[6:] for line in out.split(b"\n") if line.startswith(b"data: "))) == {
        "jsonrpc": "2.0", "id": gateway_id("s", "r1"), "method": "roots/list"
    }
    tagger = SseIdTagger("s", max_pending=10)
    assert tagger.feed(b"data: " + b"x" * 20) == b"data: " + b"x" * 20


def test_only_clients_that_can_be_asked_get_the_rewrite() -> None:
    assert can_be_asked({"capabilities": {"sampling": {}}})
    assert can_be_asked({"capabilities": {"roots": {"listChanged": True}}})
    assert not can_be_asked({"capabilities": {"experimental": {}}})
    assert not can_be_asked({})
    assert not can_be_asked(None)
