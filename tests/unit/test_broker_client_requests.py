"""Gateway ids for server→client requests: unique, routed back only from the session shown."""

from __future__ import annotations

from typing import Any

from mcp_gateway.broker.client_requests import ClientRequests


def _answer_into(log: list[dict[str, Any]]) -> Any:
    async def answer(message: dict[str, Any]) -> None:
        log.append(message)

    return answer


async def test_each_request_gets_a_new_id_and_the_answer_goes_back_under_the_upstreams() -> None:
    requests = ClientRequests()
    to_a: list[dict[str, Any]] = []
    to_b: list[dict[str, Any]] = []
    with requests.for_call() as issued:
        # Two upstreams both use id 0: the client sees two different ids.
        shown_a = requests.relay("s1", {"jsonrpc": "2.0", "id": 0, "method": "roots/list"}, _answer_into(to_a), issued)
        shown_b = requests.relay("s1", {"jsonrpc": "2.0", "id": 0, "method": "roots/list"}, _answer_into(to_b), issued)
        assert shown_a["id"] != shown_b["id"] and shown_a["method"] == "roots/list"
        assert requests.take("s2", {"id": shown_b["id"], "result": {}}) is None  # another session
        assert requests.take("s1", {"id": "mcp-gateway-nope", "result": {}}) is None
        assert requests.take("s1", {"id": 0, "result": {}}) is None  # the upstream's id is not ours
        routed = requests.take("s1", {"jsonrpc": "2.0", "id": shown_b["id"], "result": {"roots": []}})
        assert routed is not None
        answer, message = routed
        await answer(message)
        assert to_b == [{"jsonrpc": "2.0", "id": 0, "result": {"roots": []}}] and to_a == []
        assert requests.take("s1", {"id": shown_b["id"], "result": {}}) is None  # answered once
        assert len(requests) == 1
    assert len(requests) == 0  # the call ended: its ids are forgotten
    assert requests.take("s1", {"id": shown_a["id"], "result": {}}) is None


def test_two_brokers_never_issue_the_same_id() -> None:
    one, two = ClientRequests(), ClientRequests()
    with one.for_call() as a, two.for_call() as b:
        request = {"jsonrpc": "2.0", "id": 1, "method": "ping"}

        async def answer(message: dict[str, Any]) -> None: ...

        assert one.relay("s", request, answer, a)["id"] != two.relay("s", request, answer, b)["id"]
