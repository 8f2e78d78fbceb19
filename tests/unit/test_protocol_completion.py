"""completion/complete: the reference the router routes by, and its byte-exact rewrite."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.protocol import CompletionRef, completion_ref, replace_completion_ref


def body(ref: object) -> bytes:
    params: dict[str, object] = {"argument": {"name": "department", "value": "Sa"}}
    if ref is not None:
        params["ref"] = ref
    return json.dumps({"jsonrpc": "2.0", "id": 3, "method": "completion/complete", "params": params}).encode()


def test_prompt_reference_by_name_and_resource_reference_by_uri() -> None:
    assert completion_ref(body({"type": "ref/prompt", "name": "w_greet"})) == CompletionRef("ref/prompt", "w_greet")
    assert completion_ref(body({"uri": "mcp-gateway:w_file:///{p}", "type": "ref/resource"})) == CompletionRef(
        "ref/resource", "mcp-gateway:w_file:///{p}"
    )


@pytest.mark.parametrize(
    "ref",
    [None, "w_greet", [], {"name": "w_greet"}, {"type": "ref/tool", "name": "x"}, {"type": "ref/prompt", "name": 3},
     {"type": "ref/resource", "name": "x"}],
)
def test_a_reference_that_names_nothing_is_refused(ref: object) -> None:
    with pytest.raises(ValueError):
        completion_ref(body(ref))


def test_only_the_name_changes_byte_for_byte() -> None:
    data = b'{"jsonrpc":"2.0","id":"c\\"1","method":"completion/complete","params":{"argument":{"name":"n","value":"v \\"name\\""},"ref":{ "name" : "w_greet","type":"ref/prompt","x":{"name":"w_greet"}},"name":"w_greet"}}'
    ref = completion_ref(data)
    rewritten = replace_completion_ref(data, ref, "greet")
    assert rewritten == data.replace(b'"name" : "w_greet"', b'"name" : "greet"')
    with pytest.raises(ValueError):
        replace_completion_ref(data, CompletionRef("ref/prompt", "other"), "greet")


@given(
    prefix=st.text(min_size=0, max_size=5),
    name=st.text(min_size=1, max_size=20),
    resource=st.booleans(),
    escape=st.booleans(),
)
def test_property_rewrite_changes_the_reference_and_nothing_else(
    prefix: str, name: str, resource: bool, escape: bool
) -> None:
    member, kind = ("uri", "ref/resource") if resource else ("name", "ref/prompt")
    data = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "completion/complete",
         "params": {"ref": {"type": kind, member: prefix + name}, "argument": {"name": "a", "value": name}}},
        ensure_ascii=escape,
    ).encode()
    rewritten = replace_completion_ref(data, completion_ref(data), name)
    before, after = json.loads(data), json.loads(rewritten)
    assert after["params"]["ref"][member] == name
    before["params"]["ref"][member] = name
    assert after == before


def test_cancelled_request_id_is_read_from_params() -> None:
    from mcp_gateway.protocol import cancelled_request_id

    def note(params: object) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}).encode()

    assert cancelled_request_id(note({"requestId": 7, "reason": "x"})) == 7
    assert cancelled_request_id(note({"requestId": "a"})) == "a"
    for params in ({}, {"requestId": 1.5}, {"requestId": [1]}, {"requestId": True}, None):
        assert cancelled_request_id(note(params)) is None
