"""broker/status_page.py and the negotiation in broker/status.py: a browser gets the HTML page,
every other client the JSON; every value on the page is escaped."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from mcp_gateway.broker import status_page
from mcp_gateway.broker.status import wants_html

HOSTILE = "<script>alert(1)</script>\"'&"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        # Chromium's and Firefox's navigation Accept.
        ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/json, text/html", False),  # both at 1: JSON stays the default
        ("application/json;q=0.5, text/html", True),
        ("text/html;q=0", False),
        ("text/html;q=oops", False),
        ("TEXT/HTML", True),
    ],
)
def test_only_a_client_preferring_html_gets_it(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


class Elements(HTMLParser):
    """The element names and text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def hostile_status() -> dict[str, Any]:
    upstream = {
        "name": HOSTILE, "url": HOSTILE, "state": HOSTILE, "reason": HOSTILE, "toolCount": HOSTILE,
        "counts": {HOSTILE: HOSTILE}, "lastRefresh": None, "protocolVersion": HOSTILE,
        "serverInfo": {"name": HOSTILE, "version": HOSTILE},
    }
    return {
        "ready": True, "tools": HOSTILE, "openStreams": HOSTILE,
        "config": {"path": HOSTILE, "loadedAt": 0, "reloads": HOSTILE, "lastError": HOSTILE},
        "backendStreams": {"heldStreams": HOSTILE}, "upstreams": [upstream],
    }


def test_every_value_is_text_never_markup() -> None:
    page = status_page.render(hostile_status(), {"open": HOSTILE, "created": HOSTILE})
    parser = Elements()
    parser.feed(page)
    assert "script" not in parser.tags
    # Each hostile value arrives whole, as text: 10 of the upstream, 8 of the gateway.
    assert "".join(parser.text).count(HOSTILE) == 18
    assert "<script>" not in page


def test_an_empty_gateway_renders() -> None:
    page = status_page.render({"upstreams": [], "config": {}}, {})
    assert "no upstream configured" in page and '<p class="muted" id="reload-error">none</p>' in page
