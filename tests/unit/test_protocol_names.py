"""Tool names, prefixes, revisions and limits."""

import pytest

from mcp_gateway.protocol import (
    LATEST_STABLE,
    SUPPORTED_VERSIONS,
    Limits,
    apply_prefix,
    is_valid_prefix,
    is_valid_tool_name,
    negotiate_version,
    strip_prefix,
    supports_batch,
)


@pytest.mark.parametrize("name", ["a", "get_weather", "A.b-c_1", "x" * 128])
def test_valid_tool_names(name: str) -> None:
    assert is_valid_tool_name(name)


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "get weather", "tool/x", "caf\u00e9", "a\n", 5, None]
)
def test_invalid_tool_names(name: object) -> None:
    assert not is_valid_tool_name(name)


def test_prefixes() -> None:
    assert is_valid_prefix("") and is_valid_prefix("weather_") and is_valid_prefix("x" * 127)
    assert (
        not is_valid_prefix("x" * 128) and not is_valid_prefix("a b") and not is_valid_prefix(None)
    )


def test_apply_and_strip() -> None:
    assert apply_prefix("weather_", "get") == "weather_get"
    assert apply_prefix("", "get") == "get"
    assert strip_prefix("weather_", "weather_get") == "get"
    assert strip_prefix("weather_", "weather_") is None  # nothing left of the tool's own name
    assert strip_prefix("weather_", "news_get") is None
    assert strip_prefix("weather_", "weather_get now") is None
    assert strip_prefix("", "get") == "get"


@pytest.mark.parametrize(
    ("prefix", "name"), [("a b", "x"), ("p_", ""), ("p_", "x y"), ("p" * 100, "x" * 29)]
)
def test_apply_refuses_what_would_not_be_a_valid_name(prefix: str, name: str) -> None:
    with pytest.raises(ValueError):
        apply_prefix(prefix, name)


def test_versions() -> None:
    assert SUPPORTED_VERSIONS == (
        "2024-11-05",
        "2025-03-26",
        "2025-06-18",
        "2025-11-25",
        "2026-07-28",
    )
    assert LATEST_STABLE == "2025-11-25"
    assert negotiate_version("2025-03-26") == "2025-03-26"
    assert negotiate_version("2026-07-28") == "2026-07-28"
    assert negotiate_version("1999-01-01") == LATEST_STABLE
    assert [v for v in SUPPORTED_VERSIONS if supports_batch(v)] == ["2025-03-26"]
    assert not supports_batch("nonsense")


def test_limits_must_be_positive_and_depth_bounded() -> None:
    assert Limits() == Limits(1_048_576, 64, 100, 1_048_576)
    with pytest.raises(ValueError):
        Limits(max_body_bytes=0)
    with pytest.raises(ValueError):
        Limits(max_depth=10_000)
