"""`mcp-gateway controller` as a real process: kubeconfig in, Secret out, clean exit on SIGTERM."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import kubernetes
import trio

from tests.k8s.harness import (
    Cluster,
    eventually,
    extension,
    install_crds,
    kubeconfig,
    registration,
    route,
)
from tests.support.kmock_emulator import EmulatorThread
from tests.support.redis import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]


async def test_controller_command_writes_the_secret_serves_probes_and_exits_cleanly_on_sigterm(
    k8s: EmulatorThread, client: Any, tmp_path: pathlib.Path
) -> None:
    install_crds(client)
    cluster = Cluster(client)
    cluster.create_extension(extension())
    cluster.create(route("r", "svc"))
    cluster.create(registration("cli", "r", "cli_"))
    command = [
        str(ROOT / ".venv" / "bin" / "mcp-gateway"),
        "controller",
        "--namespace=mcp-system",
        f"--kubeconfig={kubeconfig(k8s.url, tmp_path / 'kubeconfig')}",
        "--identity=cli-test",
    ]
    log_path = tmp_path / "controller.log"
    health = f"127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "info", "MCP_GATEWAY_CONTROLLER_HEALTH_LISTEN": health}
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            config = await eventually(cluster.config, what="config Secret from the CLI")
            assert config.server("mcp-test/cli") is not None
            # The probes the Deployment points at, served by the process itself.
            async with httpx.AsyncClient(base_url=f"http://{health}", timeout=5) as http:
                live = await _get_when_listening(http, "/healthz")
                assert (live.status_code, live.json()) == (200, {"status": "ok"})
                ready = await http.get("/readyz")
                assert (ready.status_code, ready.json()) == (200, {"status": "ready", "role": "leader"})
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    output = log_path.read_text()
    assert code == 0, output
    assert '"event":"shutting down"' in output and "SIGTERM" in output
    lease = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease("mcp-gateway-controller", "mcp-system")
    assert lease.spec.holder_identity is None  # released on the way out: a standby takes over at once


async def _get_when_listening(http: httpx.AsyncClient, path: str) -> httpx.Response:
    with trio.fail_after(10):
        while True:
            try:
                return await http.get(path)
            except httpx.TransportError:
                await trio.sleep(0.05)  # not listening yet


def test_controller_command_without_a_cluster_fails_with_exit_code_2(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    result = subprocess.run(
        [sys.executable, "-m", "mcp_gateway.cli", "controller", f"--kubeconfig={missing}"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "cannot reach the cluster" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_controller_command_whose_probe_port_is_taken_fails_with_exit_code_2(k8s: EmulatorThread, tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "mcp-gateway"),
                "controller",
                f"--kubeconfig={kubeconfig(k8s.url, tmp_path / 'kubeconfig')}",
                "--identity=busy-port",
            ],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "MCP_GATEWAY_CONTROLLER_HEALTH_LISTEN": busy},
        )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "cannot serve the health endpoints" in output and busy in output
    assert "Traceback" not in output
