"""The admin `/status` in a real browser: Debian's headless Chromium (`make chromium`) loads the
page from a running broker's admin address. Its DOM shows each upstream with its state, reason
and tool count, the session and stream figures and the last reload error, with every hostile
value as text (no element injected); its screenshot is a PNG of the window's size
(docs/status-page.png is one, taken by this test). Clients without `Accept: text/html` keep
getting the JSON."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.servers import gateway_config, running_broker, sample_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium: make chromium"),
]

WIDTH, HEIGHT = 1200, 640
HOSTILE = '<img src=x onerror="document.title=1">'


async def chromium(tmp_path: Path, *args: str) -> bytes:
    with trio.fail_after(30):
        done = await trio.run_process(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", *args],
            capture_stdout=True, capture_stderr=True, stdin=subprocess.DEVNULL,
        )
    return done.stdout


async def test_the_status_page_renders_in_chromium_with_every_value_escaped(tmp_path: Path) -> None:
    async with sample_process("echo") as echo:
        servers = [("echo", echo.url, "e_"), ("gone", "http://127.0.0.1:9/mcp?key=secret", "g_")]
        async with running_broker(gateway_config(servers)) as broker:
            broker.reload_state.refused(f"servers[0].name: {HOSTILE}")
            url = f"{broker.admin}/status"
            dom = (await chromium(tmp_path, "--dump-dom", url)).decode()
            shot = tmp_path / "status.png"
            await chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
            async with httpx.AsyncClient() as client:
                as_json = await client.get(url)
                as_curl = await client.get(url, headers={"accept": "*/*"})

    assert "<table" in dom and "mcp-gateway status" in dom
    rows = dom.split('<tbody>')[1].split("</tbody>")[0].split("<tr>")[1:]
    echo_row, gone_row = sorted(rows, key=lambda row: "gone" in row)
    assert "<b>echo</b>" in echo_row and 'class="state ready">ready<' in echo_row and ">2<" in echo_row
    assert "<b>gone</b>" in gone_row and 'class="state failed">failed<' in gone_row
    assert "ConnectError" in gone_row and "never" in gone_row  # the reason; never refreshed
    assert "secret" not in dom  # the URL's query is hidden, as in the JSON
    # The hostile reload error is text in its paragraph: the browser built no element of it.
    assert "&lt;img src=x onerror=" in dom and "<img" not in dom
    assert "<title>mcp-gateway status</title>" in dom  # the injected handler never ran
    assert 'http-equiv="refresh"' in dom

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)

    for answer in (as_json, as_curl):
        assert answer.headers["content-type"] == "application/json"
        assert {u["name"] for u in answer.json()["upstreams"]} == {"echo", "gone"}
