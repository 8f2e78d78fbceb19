import pytest

from mcp_gateway.protocol import origin_allowed


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "http://localhost:6274",
        "http://127.0.0.1:8080",
        "https://localhost",
        "http://[::1]:3000",
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM/",
    ],
)
def test_allowed(origin: str | None) -> None:
    assert origin_allowed(origin, ["https://app.example.com"])


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost.evil.example",
        "null",
        "http://127.0.0.1:99999",
        "file://localhost",
        "http://app.example.com",
    ],
)
def test_refused(origin: str) -> None:
    assert not origin_allowed(origin, ["https://app.example.com"])


def test_a_star_allows_every_origin() -> None:
    assert origin_allowed("https://evil.example", ["*"])
