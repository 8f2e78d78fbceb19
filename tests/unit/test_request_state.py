"""The sealed requestState: a client can neither read, forge, replay nor redirect it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.protocol import ErrorCode, ProtocolError
from mcp_gateway.sessions.request_state import MAX_STATE_BYTES, RequestBinding, RequestStateSeal

KEY, OTHER_KEY = b"k" * 32, b"o" * 32
BINDING = RequestBinding("weather", "tools/call", "weather_forecast")


def refusal(seal: RequestStateSeal, token: object, binding: RequestBinding = BINDING, **kw: float) -> str:
    with pytest.raises(ProtocolError) as caught:
        seal.open(token, binding, request_id=7, **kw)
    assert (caught.value.code, caught.value.id, caught.value.http_status) == (ErrorCode.INVALID_PARAMS, 7, 400)
    return str(caught.value.data["reason"])


@given(st.text(max_size=200))
def test_a_sealed_state_opens_for_its_own_request_and_hides_its_content(state: str) -> None:
    seal = RequestStateSeal([KEY])
    token = seal.seal(BINDING, state)
    assert seal.open(token, BINDING).state == state
    assert seal.open(token, BINDING).kind == "upstream"
    if len(state) >= 4:
        assert state not in token


def test_another_upstream_another_tool_another_principal_are_refused() -> None:
    seal = RequestStateSeal([KEY])
    token = seal.seal(BINDING, "s1")
    assert refusal(seal, token, RequestBinding("calendar", "tools/call", "weather_forecast")) == (
        "minted by another upstream"
    )
    assert refusal(seal, token, RequestBinding("weather", "tools/call", "weather_alerts")) == (
        "minted for another request"
    )
    assert refusal(seal, token, RequestBinding("weather", "prompts/get", "weather_forecast")) == (
        "minted for another request"
    )
    assert refusal(seal, token, RequestBinding("weather", "tools/call", "weather_forecast", "alice")) == (
        "minted for another principal"
    )


def test_expired_states_are_refused() -> None:
    seal = RequestStateSeal([KEY], ttl_seconds=60)
    token = seal.seal(BINDING, "s", now=1000.0)
    assert seal.open(token, BINDING, now=1060.0).state == "s"
    assert refusal(seal, token, now=1061.0) == "expired"


@given(st.integers(min_value=5, max_value=200))
def test_any_edited_character_is_refused(position: int) -> None:
    seal = RequestStateSeal([KEY])
    token = seal.seal(BINDING, "the upstream's memory")
    index = min(position, len(token) - 1)
    # "A" and "Q" leave the low four bits zero, as the encoder does for a final character's
    # padding bits: a different character here always changes a data bit.
    replacement = "A" if token[index] != "A" else "Q"
    edited = token[:index] + replacement + token[index + 1 :]
    assert refusal(seal, edited) in {"not sealed by this gateway"}


@pytest.mark.parametrize("token", [None, 3, "", "plain upstream state", "mgw1.", "mgw1.!!!", "mgw1." + "A" * 10**6])
def test_anything_not_sealed_by_us_is_refused(token: object) -> None:
    assert refusal(RequestStateSeal([KEY]), token) == "not sealed by this gateway"


def test_keys_rotate_like_session_tokens() -> None:
    old = RequestStateSeal([OTHER_KEY])
    rotated = RequestStateSeal([KEY, OTHER_KEY])
    assert rotated.open(old.seal(BINDING, "x"), BINDING).state == "x"
    assert refusal(RequestStateSeal([KEY]), old.seal(BINDING, "x")) == "not sealed by this gateway"


def test_a_continuation_keeps_its_kind_and_the_server_is_readable_for_routing() -> None:
    seal = RequestStateSeal([KEY])
    token = seal.seal(BINDING, "c-123", kind="continuation")
    assert seal.open(token, BINDING).kind == "continuation"
    assert seal.server_of(token) == "weather"
    assert seal.server_of("mgw1.forged") is None


def test_oversized_upstream_states_are_not_sealed() -> None:
    with pytest.raises(ValueError):
        RequestStateSeal([KEY]).seal(BINDING, "x" * (MAX_STATE_BYTES + 1))
