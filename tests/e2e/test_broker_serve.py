"""`mcp-gateway serve --role broker` as a user runs it: a real process, a real config file.

It serves the federated list, holds client streams open, and on SIGTERM (or SIGINT) exits
cleanly within 5 seconds even with a GET stream and an upstream session open.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from tests.support.redis import free_port
from tests.support.servers import initialize_body, sample_process

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("mcp-gateway"))
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = initialize_body()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_serve_answers_then_stops_within_five_seconds(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    async with sample_process("echo") as echo:
        port, admin_port = free_port(), free_port()
        path = tmp_path / "config.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "servers": [{"name": "echo", "url": echo.url, "prefix": "echo_"}],
                    "gateway": {
                        "broker_listen": f"127.0.0.1:{port}",
                        "admin_listen": f"127.0.0.1:{admin_port}",
                        "sessions": {"keys": ["k" * 32]},
                    },
                }
            )
        )
        process = await trio.lowlevel.open_process(
            [CLI, "serve", "--role", "broker", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(timeout=5) as http:
                with trio.fail_after(20):
                    while True:
                        try:
                            if (await http.get(f"http://127.0.0.1:{admin_port}/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await trio.sleep(0.1)
                response = await http.post(f"{base}/mcp", json=INIT, headers=HEADERS)
                session = {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"]}
                listed = await http.post(
                    f"{base}/mcp",
                    json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                    headers=session,
                )
                assert [t["name"] for t in listed.json()["result"]["tools"]] == [
                    "echo_echo",
                    "echo_add",
                ]
                async with http.stream(
                    "GET", f"{base}/mcp", headers={**session, "accept": "text/event-stream"}
                ) as stream:
                    assert stream.status_code == 200
                    process.send_signal(stop_signal)
                    started = trio.current_time()
                    with trio.fail_after(5):
                        code = await process.wait()
                    stopped_in = trio.current_time() - started
            assert code == 0
            assert stopped_in < 5
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()
