"""The pure parts of multi-round-trip results (broker/input_required.py,
broker/stateless_upstreams.py): sealing an upstream's answer, retry keys, the capability an
input request needs, and one held call's rounds (ask, answer, final result) without I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from mcp_gateway.broker.input_required import HeldCall, seal_answer, without_retry_keys
from mcp_gateway.broker.stateless_upstreams import input_required, missing_capability
from mcp_gateway.protocol import ProtocolError, Request

ELICIT = {"method": "elicitation/create", "params": {"message": "name?", "requestedSchema": {"type": "object"}}}


def answer_of(result: dict[str, Any], rid: Any = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()


def test_seal_answer_replaces_only_an_input_required_state() -> None:
    asked = answer_of({"resultType": "input_required", "inputRequests": {"a": ELICIT}, "requestState": "upstream"})
    sealed = json.loads(seal_answer(asked, lambda state: f"sealed({state})"))
    assert sealed["result"]["requestState"] == "sealed(upstream)"
    assert sealed["result"]["inputRequests"] == {"a": ELICIT}
    complete = answer_of({"resultType": "complete", "requestState": "not a round", "content": []})
    assert seal_answer(complete, lambda state: "never") == complete
    stateless = answer_of({"resultType": "input_required", "inputRequests": {"a": ELICIT}})
    assert seal_answer(stateless, lambda state: "never") == stateless


def test_seal_answer_refuses_a_state_it_cannot_seal() -> None:
    def too_long(state: str) -> str:
        raise ValueError("requestState longer than 65536 bytes")

    asked = answer_of({"resultType": "input_required", "requestState": "x"}, rid=9)
    refused = json.loads(seal_answer(asked, too_long))
    assert refused["id"] == 9 and refused["error"]["code"] == -32603
    not_text = json.loads(seal_answer(answer_of({"resultType": "input_required", "requestState": 5}), too_long))
    assert not_text["error"]["code"] == -32603


def test_retry_keys_are_not_for_a_legacy_upstream() -> None:
    params = {"name": "t", "arguments": {}, "inputResponses": {}, "requestState": "s"}
    assert without_retry_keys(params) == {"name": "t", "arguments": {}}
    plain = {"name": "t"}
    assert without_retry_keys(plain) is plain
    assert without_retry_keys(None) is None


def test_the_capability_each_input_request_needs() -> None:
    requests = {"a": ELICIT, "b": {"method": "roots/list"}}
    assert missing_capability(requests, {"elicitation": {}, "roots": {}}) is None
    assert missing_capability(requests, {"elicitation": {}}) == "roots"
    assert missing_capability({"s": {"method": "sampling/createMessage"}}, None) == "sampling"
    assert input_required({"result": {"resultType": "input_required"}}) == {"resultType": "input_required"}
    assert input_required({"result": {"content": []}}) is None
    assert input_required({"error": {"code": 1}}) is None


async def test_a_held_call_asks_takes_the_answer_and_delivers_the_result() -> None:
    tokens = iter(["sealed-token-1", "sealed-token-2"])
    held = HeldCall("key", lambda: next(tokens), first_progress_token=None)
    delivered: list[dict[str, Any]] = []

    async def upstream_answer(message: dict[str, Any]) -> None:
        delivered.append(message)

    first = Request(1, "tools/call", {"name": "l_greet"})
    async with trio.open_nursery() as nursery:

        async def upstream() -> None:
            await held.ask({"jsonrpc": "2.0", "id": 42, **ELICIT}, upstream_answer)

        nursery.start_soon(upstream)
        round_one = json.loads(await held.outcome(None, first))
    assert round_one["id"] == 1
    result = round_one["result"]
    assert result["resultType"] == "input_required" and result["requestState"] == "sealed-token-1"
    (key, request), = result["inputRequests"].items()
    assert request == ELICIT

    retry = Request(2, "tools/call", {"name": "l_greet"})
    async with trio.open_nursery() as nursery:
        outcome: list[bytes] = []

        async def client() -> None:
            outcome.append(await held.resume({key: {"action": "accept", "content": {"name": "Ada"}}}, None, retry))

        nursery.start_soon(client)
        await trio.testing.wait_all_tasks_blocked()
        # The upstream got the client's answer under its own id; the call then ends.
        assert delivered == [{"jsonrpc": "2.0", "id": 42, "result": {"action": "accept", "content": {"name": "Ada"}}}]
        held.finish(answer_of({"content": [{"type": "text", "text": "hi Ada"}]}, rid=1))
    final = json.loads(outcome[0])
    assert final["id"] == 2 and final["result"]["content"][0]["text"] == "hi Ada"
    assert held.delivered.is_set()


async def test_a_held_call_that_ended_unanswered_is_expired_and_ping_is_answered() -> None:
    tokens = iter(["sealed-token-1", "sealed-token-2"])
    held = HeldCall("key", lambda: next(tokens), first_progress_token=None)
    answers: list[dict[str, Any]] = []

    async def upstream_answer(message: dict[str, Any]) -> None:
        answers.append(message)

    await held.ask({"jsonrpc": "2.0", "id": 7, "method": "ping"}, upstream_answer)
    await held.ask({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, upstream_answer)
    assert answers[0] == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert answers[1]["error"]["code"] == -32601
    held.finish(None)
    with pytest.raises(ProtocolError) as refused:
        await held.outcome(None, Request(3, "tools/call", {"name": "l_greet"}))
    assert refused.value.code == -32602 and refused.value.id == 3 and refused.value.http_status == 400


async def test_each_round_of_a_held_call_gets_a_state_of_its_own() -> None:
    """A legacy upstream that asks twice: the client's second round carries a new requestState
    (a fresh seal, as a server gives a new state per round), naming the same held call."""
    tokens = iter(["sealed-token-1", "sealed-token-2"])
    held = HeldCall("key", lambda: next(tokens), first_progress_token=None)

    async def upstream_answer(message: dict[str, Any]) -> None:
        await held.ask({"jsonrpc": "2.0", "id": 43, **ELICIT}, ignore)

    async def ignore(message: dict[str, Any]) -> None:
        del message

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held.ask, {"jsonrpc": "2.0", "id": 42, **ELICIT}, upstream_answer)
        first = json.loads(await held.outcome(None, Request(1, "tools/call", {"name": "l_greet"})))["result"]
        (key,) = first["inputRequests"]
        second = json.loads(await held.resume({key: {"action": "accept"}}, None, Request(2, "tools/call", {})))
        nursery.cancel_scope.cancel()
    assert first["requestState"] == "sealed-token-1"
    assert second["result"]["resultType"] == "input_required"
    assert second["result"]["requestState"] == "sealed-token-2"
