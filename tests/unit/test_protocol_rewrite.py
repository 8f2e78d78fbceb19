"""replace_routing_name: only the routing value's bytes change."""

import pytest

from mcp_gateway.protocol import Peek, parse_message, peek, replace_routing_name


def test_prefix_stripped_in_place_with_odd_spacing_and_escapes() -> None:
    body = (
        b'{ "params" : { "arguments" : { "name" : "srv_tool", "s": "\\"}" },\n'
        b'"name" : "srv_\\u0074ool" , "_meta" : {} } ,"id":"a\\\\", "jsonrpc":"2.0",'
        b' "method":"tools/call"}'
    )
    seen = peek(body)
    assert seen.name == "srv_tool"
    rewritten = replace_routing_name(body, seen, "tool")
    assert rewritten == body.replace(b'"srv_\\u0074ool"', b'"tool"')
    assert peek(rewritten).name == "tool"


def test_resources_read_uri_and_non_ascii_names() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"gw+file:///x"}}'
    rewritten = replace_routing_name(body, peek(body), "file:///\u00e9")
    assert parse_message(rewritten).params == {"uri": "file:///\u00e9"}  # type: ignore[union-attr]
    assert (
        rewritten
        == b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///\xc3\xa9"}}'
    )


def test_refuses_unrouted_or_mismatched_peeks() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}'
    with pytest.raises(ValueError):
        replace_routing_name(body, Peek("request", "tools/list", 1, None), "b")
    with pytest.raises(ValueError):
        replace_routing_name(body, Peek("request", "tools/call", 1, "other"), "b")


def test_replace_id_changes_only_the_id_wherever_it_stands() -> None:
    from mcp_gateway.protocol import replace_id

    response = b'{"result": {"id": 1, "content": [{"text": "\\"id\\": 1"}]}, "jsonrpc":"2.0", "id" : 1}'
    assert replace_id(response, "mcpgw:s:1") == response[:-2] + b'"mcpgw:s:1"}'
    request = b'{"jsonrpc":"2.0","id":"mcpgw:a:\\"x\\"","method":"roots/list"}'
    assert replace_id(request, 7) == b'{"jsonrpc":"2.0","id":7,"method":"roots/list"}'
    with pytest.raises(ValueError):
        replace_id(b'{"jsonrpc":"2.0","method":"notifications/progress"}', 1)
