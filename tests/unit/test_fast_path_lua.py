"""The fast path's JSON check (envoy/fast_path.lua, `read_call`) is never laxer than the router's.

A call Envoy's Lua filter routes itself never meets the router's strict reader, so whatever the
Lua accepts, the router must accept too, and read the same method, name and id. The script runs
here in LuaJIT (the runtime Envoy embeds, through `lupa`); hypothesis feeds it valid calls,
near-valid ones, and arbitrary bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lupa import luajit21

from mcp_gateway.protocol import Limits, ProtocolError, peek

SCRIPT = Path(__file__).resolve().parents[2] / "envoy" / "fast_path.lua"
LIMITS = Limits(max_depth=16, max_string_length=64)


def _script() -> Any:
    """The script's local functions, run by LuaJIT (the chunk only defines functions and tables)."""
    # encoding=None: Lua strings stay bytes both ways, as in Envoy.
    runtime = luajit21.LuaRuntime(unpack_returned_tuples=True, encoding=None)
    return runtime, runtime.execute(
        SCRIPT.read_bytes() + b"\nreturn {read_call = read_call, lookup = lookup, remember = remember, decision_key = decision_key, expiry = expiry}\n"
    )


RUNTIME, LOCALS = _script()


def _read_call() -> Any:
    runtime, read_call = RUNTIME, LOCALS[b"read_call"]
    limits = runtime.table_from({b"max_depth": LIMITS.max_depth, b"max_string": LIMITS.max_string_length})

    def call(body: bytes) -> dict[str, Any] | None:
        found = read_call(body, limits)
        if found is None:
            return None
        return {key: found[key.encode()] for key in ("method", "name", "id", "name_first", "name_last")}

    return call


READ_CALL = _read_call()


def assert_router_agrees(body: bytes) -> None:
    """If the Lua filter would route `body` itself, the router reads it the same way."""
    found = READ_CALL(body)
    if found is None:
        return
    try:
        seen = peek(body, LIMITS, allow_batch=True)
    except ProtocolError as error:
        pytest.fail(f"the fast path accepts what the router refuses ({error}): {body!r}")
    assert seen.kind == "request" and seen.method == found["method"].decode()
    assert seen.name == found["name"].decode()
    assert seen.id == json.loads(found["id"])
    # The span the Lua filter rewrites is exactly the name's text.
    assert body[found["name_first"] - 1 : found["name_last"]].decode() == seen.name


def call_body(name: str = "a_observe", request_id: Any = 1, **extra: Any) -> bytes:
    params = {"name": name, "arguments": {"x": 1}, **extra}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


@pytest.mark.parametrize(
    "body",
    [
        call_body(),
        call_body(request_id="abc"),
        call_body(request_id=-7),
        b' {"method" : "prompts/get" , "params":{"arguments":{"a":[1,2.5,true,false,null,"s\\n"]},"name":"p_x"},"id":0,"jsonrpc":"2.0"} ',
        call_body(_meta={"progressToken": "t"}),
    ],
)
def test_a_plain_call_is_read_as_the_router_reads_it(body: bytes) -> None:
    assert READ_CALL(body) is not None
    assert_router_agrees(body)


@pytest.mark.parametrize(
    "body",
    [
        # What the router refuses: the fast path must leave it to the router.
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}',
        b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"extra":1}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}} {}',
        b'{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"2.0","id":01,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"a"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":1e999}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"s":"\\ud800"}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"s":"\x01"}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"s":"\xff"}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":' + b"[" * 20 + b"]" * 20 + b"}}",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"s":"' + b"x" * 65 + b'"}}}',
        # Not a routed method, or not a request: the broker's (through the router).
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}',
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}]',
        # Escapes in the name or the method: the router decodes those.
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\\u0062"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools\\/call","params":{"name":"a"}}',
        b'',
        b'{',
    ],
)
def test_anything_the_fast_path_cannot_vouch_for_goes_to_the_router(body: bytes) -> None:
    assert READ_CALL(body) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400)
@given(
    name=st.text(max_size=20),
    request_id=st.one_of(st.integers(-(10**18), 10**18), st.text(max_size=10), st.none(), st.floats(allow_nan=False)),
    arguments=json_values,
    method=st.sampled_from(["tools/call", "prompts/get", "tools/list", "resources/read"]),
    members=st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "x"]), json_values, max_size=2),
)
def test_generated_messages_the_fast_path_accepts_the_router_accepts_alike(
    name: str, request_id: Any, arguments: Any, method: str, members: dict[str, Any]
) -> None:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method,
               "params": {"name": name, "arguments": arguments}, **members}
    for ensure_ascii in (True, False):
        assert_router_agrees(json.dumps(message, ensure_ascii=ensure_ascii).encode())


@settings(max_examples=400)
@given(
    position=st.integers(0, 200),
    replacement=st.binary(max_size=4),
    cut=st.integers(0, 4),
)
def test_bytes_changed_anywhere_in_a_call_never_slip_past_the_router(position: int, replacement: bytes, cut: int) -> None:
    body = call_body(arguments={"a": [1, "two", {"three": 3.5}], "b": None}) if position % 2 else call_body()
    where = position % (len(body) + 1)
    assert_router_agrees(body[:where] + replacement + body[where + cut :])


def test_a_decision_is_renewed_by_one_call_in_its_last_fifth_and_never_used_past_its_end() -> None:
    lookup, remember = LOCALS[b"lookup"], LOCALS[b"remember"]
    decision = RUNTIME.table_from({b"server": b"alpha", b"expires": 1000, b"renew_at": 800})
    remember(b"token", b"key", decision, 10)
    assert lookup(b"token", b"key", 100)[b"server"] == b"alpha"
    assert lookup(b"other", b"key", 100) is None and lookup(b"token", b"other", 100) is None
    # In its last fifth: the first call goes to the router (and teaches Envoy a new one)...
    assert lookup(b"token", b"key", 850) is None
    # ...the others keep using it meanwhile...
    assert lookup(b"token", b"key", 900)[b"server"] == b"alpha"
    # ...but never past its end.
    assert lookup(b"token", b"key", 1000) is None
    assert lookup(b"token", b"key", 100) is None  # gone for good


def test_a_decision_is_kept_per_bearer_token_and_never_past_its_expiry() -> None:
    """Inbound OAuth: the router decided for one bearer token; another, or none, is another key
    (the router sees that call and refuses what the token may not do), and a decision never
    outlives the token's `exp` (docs/auth.md)."""
    key, expiry = LOCALS[b"decision_key"], LOCALS[b"expiry"]
    lookup, remember = LOCALS[b"lookup"], LOCALS[b"remember"]
    good = key(b"tools/call", b"a_x", None, None, b"Bearer good")
    others = {
        key(b"tools/call", b"a_x", None, None, b"Bearer other"),
        key(b"tools/call", b"a_x", None, None, None),
        key(b"tools/call", b"a_x", None, None, b"bearer good"),
        key(b"tools/call", b"a_x", None, None, b"Bearer good "),
    }
    assert good not in others and len(others) == 4
    remember(b"session", good, RUNTIME.table_from({b"server": b"alpha", b"expires": 1000, b"renew_at": 800}), 10)
    assert lookup(b"session", good, 100)[b"server"] == b"alpha"
    assert all(lookup(b"session", other, 100) is None for other in others)
    # The lifetime, cut by the token's expiry (epoch ms) when that comes first; 0: no token.
    assert expiry(1_000, 1_000, 0) == 2_000
    assert expiry(1_000, 1_000, 1_500) == 1_500
    assert expiry(1_000, 1_000, 5_000) == 2_000
    assert expiry(1_000, 1_000, None) == 2_000
