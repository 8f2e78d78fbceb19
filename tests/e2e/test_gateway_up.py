"""`mcp-gateway up` end to end: everything starts, the printed Inspector command lists the tools
of both sample servers through Envoy, and Ctrl-C stops every process within 5 s."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from tests.support.redis import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("mcp-gateway"))


def example_config_on_free_ports(tmp_path: Path) -> Path:
    """examples/config.yaml with every port moved to a free one (tests never use fixed ports)."""
    document = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    for server in document["servers"]:
        server["url"] = re.sub(r":\d+/", f":{free_port()}/", server["url"])
    gateway = document.setdefault("gateway", {})
    envoy_port = free_port()
    gateway["broker_listen"] = f"127.0.0.1:{free_port()}"
    gateway["router_listen"] = f"127.0.0.1:{free_port()}"
    gateway["admin_listen"] = f"127.0.0.1:{free_port()}"
    gateway["public_url"] = f"http://127.0.0.1:{envoy_port}/mcp"
    gateway.setdefault("envoy", {}).update({"listen": f"127.0.0.1:{envoy_port}", "admin_port": free_port()})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its (already gone) parent's init.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_up_prints_a_working_inspector_command_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    config = example_config_on_free_ports(tmp_path)
    process = await trio.lowlevel.open_process(
        [CLI, "up", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(60):
            while b"Ctrl-C stops everything" not in output:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"`up` exited early: {output.decode()}"
                output += chunk
        text = output.decode()
        command = next(
            line.strip() for line in text.splitlines() if "--cli" in line and "tools/list" in line
        )
        children = descendants(process.pid)
        assert len(children) >= 4, text  # two samples, the gateway, Envoy

        home = tmp_path / "home"  # the Inspector writes its settings under $HOME
        home.mkdir()
        with trio.fail_after(60):
            listed = await trio.run_process(
                shlex.split(command), capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "HOME": str(home)},
            )
        assert listed.returncode == 0, (listed.stderr.decode()[-2000:], text)
        names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
        assert {"dyn_hello", "dyn_add_tool", "slow_count", "slow_sleep"} <= names

        # Editing the config updates Envoy without a restart: slow's cluster goes away.
        document = yaml.safe_load(config.read_text())
        document["servers"] = [s for s in document["servers"] if s["name"] != "slow"]
        config.write_text(yaml.safe_dump(document))
        admin = f"http://127.0.0.1:{document['gateway']['envoy']['admin_port']}"
        async with httpx.AsyncClient(base_url=admin, timeout=2) as client:
            with trio.fail_after(20):
                while "mcp_upstream_slow" in (await client.get("/clusters")).text:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            assert "mcp_upstream_dynamic" in (await client.get("/clusters")).text
        assert process.poll() is None

        process.send_signal(signal.SIGINT)
        started = trio.current_time()
        with trio.fail_after(5):
            await process.wait()
            rest = await process.stdout.receive_some(65536)
        text += rest.decode(errors="replace")
        assert trio.current_time() - started < 5
        assert process.returncode == 0, text
        with trio.fail_after(1):
            while leftovers := [pid for pid in children if alive(pid)]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert not leftovers
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                for pid in descendants(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.kill()
                await process.wait()
            await process.stdout.aclose()
