"""The Lua fast path's pieces for 2026-07-28 ("modern") clients (envoy/fast_path.lua), run in
LuaJIT (the runtime Envoy embeds, through `lupa`) against the router's own Python for the same
job (router/modern_clients.py): the envelope read from `_meta`, the decision key, the body a
legacy upstream gets, and the answer the client gets back. And the binding the router hands the
Lua filter to have an answer sealed (router/fast_path.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lupa import luajit21

from mcp_gateway.router.fast_path import open_binding, seal_binding
from mcp_gateway.router.modern_clients import for_legacy_upstream, legacy_answer
from mcp_gateway.sessions.request_state import RequestBinding

SCRIPT = Path(__file__).resolve().parents[2] / "envoy" / "fast_path.lua"
NAMES = (
    "read_call", "splice", "meta_without_envelope", "modern_key", "decision_key", "restore_id",
    "restore_in_events", "events_end", "json_complete",
)
RUNTIME = luajit21.LuaRuntime(unpack_returned_tuples=True, encoding=None)
LUA = RUNTIME.execute(
    SCRIPT.read_bytes() + b"\nreturn {" + b", ".join(f"{n} = {n}".encode() for n in NAMES) + b"}\n"
)
LIMITS = RUNTIME.table_from({b"max_depth": 16, b"max_string": 4096})
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
}


def body(request_id: Any = 7, name: str = "p_add", envelope: dict[str, Any] | None = None, **meta: Any) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"a": 1}, "_meta": {**ENVELOPE, **(envelope or {}), **meta}},
    }
    return json.dumps(message).encode()


def lua_fn(name: str) -> Any:
    return LUA[name.encode()]


def read(raw: bytes) -> Any:
    return lua_fn("read_call")(raw, LIMITS)


def to_legacy_upstream(raw: bytes, routed: str, gateway_id: str) -> bytes:
    """What apply_modern sends a legacy upstream: the routed name, the gateway's id, _meta
    without the envelope."""
    call = read(raw)
    edits = [
        [call[b"name_first"], call[b"name_last"], routed.encode()],
        [call[b"id_first"], call[b"id_last"], json.dumps(gateway_id).encode()],
    ]
    if call[b"meta_first"] is not None:
        edits.append([call[b"meta_first"], call[b"meta_last"], lua_fn("meta_without_envelope")(raw, call)])
    table = RUNTIME.table_from([RUNTIME.table_from(edit) for edit in edits])
    result: bytes = lua_fn("splice")(raw, table)
    return result


def test_the_envelope_is_read_as_raw_json_text_and_anything_else_in_meta_is_noticed() -> None:
    call = read(body())
    assert call[b"meta_version"] == b'"2026-07-28"'
    assert call[b"meta_caps"] == b"{}"
    assert call[b"meta_info"] == b'{"name": "t", "version": "1"}'
    assert call[b"meta_extra"] is None
    assert read(body(progressToken="p"))[b"meta_extra"] is True
    assert read(body(envelope={"io.modelcontextprotocol/logLevel": "info"}))[b"meta_extra"] is True


@pytest.mark.parametrize("retry", [{"requestState": "mgw1.x"}, {"inputResponses": {}}])
def test_a_retry_is_never_read_as_a_call_the_filter_may_route(retry: dict[str, Any]) -> None:
    message = json.loads(body())
    message["params"].update(retry)
    assert read(json.dumps(message).encode()) is None


@pytest.mark.parametrize(
    "raw",
    [
        body(),
        body("a-string", progressToken="p7"),
        body(-3, progressToken=5, other={"x": [1, {"y": None}]}),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "p_add"}}).encode(),
        b'{ "params" : { "_meta" : { "io.modelcontextprotocol/clientInfo" : {} } , "name" : "p_add" } , "id" : 2 , "method" : "tools/call" , "jsonrpc" : "2.0" }',
    ],
)
def test_a_legacy_upstream_gets_what_the_routers_call_gives_it(raw: bytes) -> None:
    gateway_id = "mcpgw-fast:00ff:12"
    lua = json.loads(to_legacy_upstream(raw, "add", gateway_id))
    message = json.loads(raw)
    message["params"]["name"] = "add"
    python = json.loads(for_legacy_upstream(json.dumps(message).encode(), gateway_id))
    # The one difference: an emptied _meta stays {} here (the router drops it); both mean none.
    if lua["params"].get("_meta") == {} and "_meta" not in python["params"]:
        del lua["params"]["_meta"]
    assert lua == python


def key(headers: dict[str, str], raw: bytes) -> bytes:
    lua_headers = RUNTIME.eval("function(t) return { get = function(self, name) return t[name] end } end")(
        RUNTIME.table_from({k.encode(): v.encode() for k, v in headers.items()})
    )
    base = lua_fn("decision_key")(b"tools/call", b"p_add", None, None, None)
    result: bytes = lua_fn("modern_key")(base, lua_headers, read(raw))
    return result


def test_the_key_holds_every_input_the_routers_ladder_read() -> None:
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "p_add"}
    learnt = key(headers, body())
    assert key(headers, body(99, progressToken="p")) == learnt  # the id and other _meta: not read
    different = [
        key({**headers, "mcp-name": "=?base64?cF9hZGQ=?="}, body()),
        key({**headers, "mcp-name": ""}, body()),
        key({k: v for k, v in headers.items() if k != "mcp-name"}, body()),
        key({**headers, "mcp-method": "prompts/get"}, body()),
        key({**headers, "mcp-protocol-version": "2099-01-01"}, body()),
        key(headers, body(envelope={"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})),
        key(headers, body(envelope={"io.modelcontextprotocol/clientInfo": {"name": "u", "version": "1"}})),
        key(headers, body(envelope={"io.modelcontextprotocol/protocolVersion": "2099-01-01"})),
    ]
    message = json.loads(body())
    del message["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]
    different.append(key(headers, json.dumps(message).encode()))
    assert learnt not in different and len(set(different)) == len(different)


def restore(payload: str, client_id: Any = 7) -> str | None:
    result = lua_fn("restore_id")(payload.encode(), b'"gw"', json.dumps(client_id).encode())
    return None if result is None else result.decode()


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": "gw", "result": {"content": [{"type": "text", "text": "resultType"}]}},
        {"jsonrpc": "2.0", "id": "gw", "result": {}},
        {"jsonrpc": "2.0", "result": {"resultType": "complete", "x": 1}, "id": "gw"},
        {"jsonrpc": "2.0", "id": "gw", "error": {"code": -32602, "message": "Unknown tool: \"x\" é"}},
        {"jsonrpc": "2.0", "id": "other", "result": {}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "gw"}},
    ],
)
def test_the_answer_reads_as_the_routers_rewrite_makes_it(message: dict[str, Any]) -> None:
    for client_id in (7, "seven"):
        payload = json.dumps(message, ensure_ascii=False)
        expected = legacy_answer("gw", client_id)(json.loads(payload))
        restored = restore(payload, client_id)
        if expected is None:
            assert restored is None
        else:
            assert restored is not None and json.loads(restored) == expected


def test_events_are_restored_one_by_one_whatever_their_line_ends() -> None:
    call = RUNTIME.table_from({b"gateway_id": b'"gw"', b"id": b"9"})
    stream = (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\r\n\r\n'
        b'event: message\ndata: {"jsonrpc":"2.0","id":"gw",\ndata: "result":{"a":1}}\n\n'
    )
    restored = lua_fn("restore_in_events")(stream, call)
    first, second = restored.split(b"\r\n\r\n", 1)
    assert first + b"\r\n\r\n" == stream.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert second.startswith(b"event: message\ndata: ") and second.endswith(b"\n\n")
    data = second[len(b"event: message\ndata: "):-2]
    assert b"\n" not in data  # one line now
    assert json.loads(data) == {"jsonrpc": "2.0", "id": 9, "result": {"resultType": "complete", "a": 1}}


def test_units_end_where_an_event_or_the_json_value_does() -> None:
    events_end, json_complete = lua_fn("events_end"), lua_fn("json_complete")
    assert events_end(b"data: 1\n\ndata: 2\r\n\r\ndata: 3") == len(b"data: 1\n\ndata: 2\r\n\r\n")
    assert events_end(b"data: 1\n") == 0
    assert json_complete(b'{"a":"}","b":[1,{}]}\n') is True
    assert json_complete(b'{"a":"}"') is False
    assert json_complete(b'{"a":"\\"}"}') is True
    assert json_complete(b'{"a":"\\"}') is False


def test_only_a_binding_the_router_sealed_opens() -> None:
    binding = RequestBinding("modern", "tools/call", "new_ask", "user-1")
    sealed = seal_binding(b"k" * 32, binding)
    assert sealed.isascii() and "\n" not in sealed
    assert open_binding(b"k" * 32, sealed) == binding
    assert open_binding(b"j" * 32, sealed) is None
    mac, payload = sealed.split(".", 1)
    assert open_binding(b"k" * 32, f"{mac}.{payload.replace('new_ask', 'new_add')}") is None
    assert open_binding(b"k" * 32, "garbage") is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_add","arguments":{"s":"é"}}}'.encode(),
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_ädd"}}'.encode(),
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_add"}}\u00a0'.encode(),
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_add"},\u00a0"x":1}'.encode(),
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_add","\xff":1}}',
    ],
)
def test_a_non_ascii_byte_anywhere_leaves_the_call_to_the_router(raw: bytes) -> None:
    # The same body in ASCII is one the filter routes; any non-ASCII byte, in a string or out.
    assert read(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p_add","arguments":{"s":"e"}}}')
    assert read(raw) is None
