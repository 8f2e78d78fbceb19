"""A WebSocket client of `mcp-gateway serve --role broker` as a user runs it: a real process and
config file, an HTTP upstream (a sample process) and a stdio upstream (the conformance fixture,
spawned by the gateway). Over one socket: initialize, the federated list, a call to each, a
call's progress before its answer; then SIGTERM with the socket open stops the gateway in < 5 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from trio_websocket import wrap_client_stream

from tests.support.redis import free_port
from tests.support.servers import initialize_body, sample_process

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("mcp-gateway"))
FIXTURE_STDIO = [sys.executable, "-m", "mcp_gateway.samples.conformance_fixture", "--transport", "stdio"]


async def test_a_websocket_client_lists_calls_and_sees_progress_through_serve(tmp_path: Path) -> None:
    async with sample_process("echo") as echo:
        port, admin_port = free_port(), free_port()
        path = tmp_path / "config.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "servers": [
                        {"name": "echo", "url": echo.url, "prefix": "echo_"},
                        {"name": "fx", "transport": "stdio", "command": FIXTURE_STDIO, "prefix": "fx_"},
                    ],
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
            await _wait_ready(f"http://127.0.0.1:{admin_port}")
            # Our own TCP stream, closed by us: the gateway stops with the socket open, and
            # trio-websocket 0.12.2 leaves a socket open when its peer goes away.
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream, trio.open_nursery() as nursery:
                socket = await wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{port}", "/mcp/ws", subprotocols=["mcp"]
                )
                assert socket.subprotocol == "mcp"
                frames: list[dict[str, Any]] = []

                async def ask(message: dict[str, Any]) -> dict[str, Any]:
                    await socket.send_message(json.dumps(message))
                    with trio.fail_after(15):
                        while True:
                            frame = json.loads(await socket.get_message())
                            if frame.get("id") == message["id"] and "method" not in frame:
                                return frame
                            frames.append(frame)

                init = await ask(initialize_body())
                assert init["result"]["serverInfo"]["name"] == "mcp-gateway"
                await socket.send_message(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                listed = await ask({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
                names = {tool["name"] for tool in listed["result"]["tools"]}
                assert {"echo_echo", "fx_test_simple_text", "fx_test_tool_with_progress"} <= names
                echoed = await ask(
                    {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                     "params": {"name": "echo_echo", "arguments": {"text": "e2e"}}}
                )
                assert echoed["result"]["content"][0]["text"] == "e2e"
                progressed = await ask(
                    {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                     "params": {"name": "fx_test_tool_with_progress", "arguments": {},
                                "_meta": {"progressToken": "p-4"}}}
                )
                assert progressed["result"]["content"][0]["text"] == "Tool with progress executed successfully"
                progress = [f["params"] for f in frames if f.get("method") == "notifications/progress"]
                assert [(p["progressToken"], p["progress"]) for p in progress] == [
                    ("p-4", 0.0), ("p-4", 50.0), ("p-4", 100.0)
                ]
                process.send_signal(signal.SIGTERM)
                started = trio.current_time()
                with trio.fail_after(5):
                    code = await process.wait()
                assert code == 0 and trio.current_time() - started < 5
                nursery.cancel_scope.cancel()
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()


async def _wait_ready(base: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        with trio.fail_after(20):
            while True:
                try:
                    if (await http.get(f"{base}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)
