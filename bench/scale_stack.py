"""Processes for the scale bench, on loopback: Envoy + `mcp-gateway serve`, and upstreams.

    async with upstream_process(["bench/many_upstreams.py", "--endpoints", "100"], ...) as base:
    async with running_stack(servers, workdir) as stack:     # Envoy first, then the gateway
        stack.url, stack.gateway.pid, stack.spawned_at, stack.envoy_pid

Envoy binds its listener and admin on port 0 (the ports come from `--admin-address-path` and
its admin API, as in tests/support/envoy.py); the gateway's broker and router ports are picked
free just before it starts. Every child is stopped with SIGTERM, then SIGKILL after 5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "src")):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench.harness import ACCEPT, PROTOCOL, free_port  # noqa: E402
from mcp_gateway.config import parse_config  # noqa: E402
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap  # noqa: E402

BIN = Path(sys.executable).parent


def own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stop(process: trio.Process, grace: float = 5.0) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# Children get a bytecode cache (PYTHONPYCACHEPREFIX, set by `use_bytecode_cache`), as in the
# image (uv compiles every module at install): this workplace sets PYTHONDONTWRITEBYTECODE,
# and compiling the gateway's ~700 modules from source adds ~1.1 s to every start.
CHILD_ENV: dict[str, str] = {}


def use_bytecode_cache(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(directory)
    CHILD_ENV["PYTHONDONTWRITEBYTECODE"] = ""


def child_env() -> dict[str, str]:
    env = {**os.environ, **CHILD_ENV}
    if not env.get("PYTHONDONTWRITEBYTECODE"):
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


async def warm_bytecode_cache() -> None:
    """Import what the gateway and the samples import once, so the cache holds it."""
    code = ("import mcp_gateway.cli, mcp_gateway.serve, mcp_gateway.broker.service, "
            "mcp_gateway.router.service, mcp_gateway.samples.dynamic, mcp_gateway.samples, uvicorn")
    await trio.run_process([sys.executable, "-c", code], env=child_env())


@asynccontextmanager
async def child(argv: Sequence[str], log: Path) -> AsyncIterator[trio.Process]:
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=child_env()
        )
        try:
            yield process
        finally:
            with trio.CancelScope(shield=True):
                await stop(process)


async def _ready_line(log: Path, prefix: str, process: trio.Process, patience: float = 30) -> str:
    with trio.fail_after(patience):
        while process.returncode is None and process.poll() is None:
            for line in log.read_text(errors="replace").splitlines():  # noqa: ASYNC240
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            await trio.sleep(0.02)
    output = log.read_text(errors="replace")  # noqa: ASYNC240 - a small file, once
    raise RuntimeError(f"{log.name}: the process exited early:\n{output}")


@asynccontextmanager
async def upstream_process(
    argv: Sequence[str], log: Path, ready_prefix: str
) -> AsyncIterator[tuple[str, trio.Process]]:
    """A server process that prints `ready_prefix + URL` once bound; yields (URL, process)."""
    async with child(argv, log) as process:
        yield await _ready_line(log, ready_prefix, process), process


@dataclass
class Stack:
    url: str  # http://127.0.0.1:PORT/mcp, through Envoy
    base: str  # http://127.0.0.1:PORT, through Envoy
    broker: str  # http://127.0.0.1:PORT, the broker itself
    status: str  # http://127.0.0.1:PORT, the gateway's admin address (/status, /readyz)
    admin: str  # Envoy's admin API
    gateway: trio.Process
    envoy: trio.Process
    spawned_at: float  # trio.current_time() just before the gateway process was spawned
    spawned_wall: float  # time.time() then (the gateway's log timestamps are wall clock)
    workdir: Path


def gateway_config_text(
    servers: Sequence[tuple[str, str, str]], broker_port: int, router_port: int, *, page_size: int,
    admin_port: int,
) -> str:
    lines = ["servers:"]
    for name, url, prefix in servers:
        lines += [f"  - name: {name}", f"    url: {url}", f"    prefix: {prefix}"]
    if not servers:
        lines = ["servers: []"]
    lines += [
        "gateway:",
        f"  broker_listen: 127.0.0.1:{broker_port}",
        f"  router_listen: 127.0.0.1:{router_port}",
        f"  admin_listen: 127.0.0.1:{admin_port}",
        f"  page_size: {page_size}",
        "  sessions:",
        "    store: memory",
        # One process issues and verifies its own tokens: a fixed key keeps the log quiet.
        "    keys: [" + "k" * 32 + "]",
    ]
    return "\n".join(lines) + "\n"


async def _admin_address(path: Path, process: trio.Process) -> str:
    with trio.fail_after(30):
        while process.poll() is None:
            text = path.read_text().strip() if path.exists() else ""  # noqa: ASYNC240
            if text:
                return "http://" + text
            await trio.sleep(0.02)
    raise RuntimeError(f"envoy exited early with code {process.returncode}")


async def _envoy_port(admin_url: str, process: trio.Process) -> int:
    async with httpx.AsyncClient(base_url=admin_url, timeout=2, trust_env=False) as admin:
        with trio.fail_after(30):
            while process.poll() is None:
                try:
                    if (await admin.get("/ready")).status_code == 200:
                        listeners = (await admin.get("/listeners", params={"format": "json"})).json()
                        for listener in listeners.get("listener_statuses", []):
                            if listener.get("name") == "mcp":
                                return int(listener["local_address"]["socket_address"]["port_value"])
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.02)
    raise RuntimeError(f"envoy exited early with code {process.returncode}")


@asynccontextmanager
async def running_stack(
    servers: Sequence[tuple[str, str, str]],
    workdir: Path,
    *,
    page_size: int = 100,
    bootstrap_edit: Callable[[str], str] | None = None,
    wait_ready: bool = True,
) -> AsyncIterator[Stack]:
    """Envoy (started and ready first), then `mcp-gateway serve`; with `wait_ready`, yields
    once /readyz answers 200 on the gateway's admin address (else right after spawning the
    gateway)."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before anything runs
    broker_port, router_port, admin_port = free_port(), free_port(), free_port()
    text = gateway_config_text(servers, broker_port, router_port, page_size=page_size, admin_port=admin_port)
    config_path = workdir / "config.yaml"
    config_path.write_text(text)
    xds = XdsWriter(workdir / "xds")
    xds.write_initial(parse_config(text))
    bootstrap = render_bootstrap(BootstrapParams(
        listen="127.0.0.1:0", admin_port=0, broker=f"127.0.0.1:{broker_port}",
        router=f"127.0.0.1:{router_port}", xds_dir=str(workdir / "xds"), access_log_path=str(workdir / "access.log"),
    ))
    if bootstrap_edit is not None:
        bootstrap = bootstrap_edit(bootstrap)
    (workdir / "envoy.yaml").write_text(bootstrap)
    admin_path = workdir / "admin.address"
    envoy_argv = [
        str(BIN / "envoy"), "-c", str(workdir / "envoy.yaml"), "--reject-unknown-dynamic-fields",
        "--disable-hot-restart", "--log-level", "warning", "--concurrency", "1",
        "--admin-address-path", str(admin_path),
    ]
    async with child(envoy_argv, workdir / "envoy.log") as envoy:
        admin = await _admin_address(admin_path, envoy)
        port = await _envoy_port(admin, envoy)
        spawned_at, spawned_wall = trio.current_time(), time.time()
        gateway_argv = [str(BIN / "mcp-gateway"), "serve", "--config", str(config_path)]
        async with child(gateway_argv, workdir / "gateway.log") as gateway:
            stack = Stack(
                url=f"http://127.0.0.1:{port}/mcp", base=f"http://127.0.0.1:{port}",
                broker=f"http://127.0.0.1:{broker_port}", status=f"http://127.0.0.1:{admin_port}",
                admin=admin, gateway=gateway,
                envoy=envoy, spawned_at=spawned_at, spawned_wall=spawned_wall, workdir=workdir,
            )
            if wait_ready:
                await wait_until_ready(stack, patience=60)
                await wait_until_routing(stack, patience=60)
            yield stack


async def wait_until_ready(stack: Stack, *, patience: float, interval: float = 0.01) -> float:
    """Poll GET /readyz (the admin address) until 200; the time since the gateway was spawned."""
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        with trio.fail_after(patience):
            while True:
                if stack.gateway.poll() is not None:
                    log = (stack.workdir / "gateway.log").read_text(errors="replace")
                    raise RuntimeError(f"the gateway exited:\n{log[-3000:]}")
                try:
                    if (await http.get(f"{stack.status}/readyz")).status_code == 200:
                        return trio.current_time() - stack.spawned_at
                except httpx.HTTPError:
                    pass
                await trio.sleep(interval)


def log_event_time(stack: Stack, event: str) -> float | None:
    """Seconds from spawning the gateway to its first log line with this `event`."""
    from datetime import datetime

    for line in (stack.workdir / "gateway.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"event":"{event}"' in line:
            stamp = json.loads(line).get("timestamp", "")
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - stack.spawned_wall
    return None


async def wait_until_routing(stack: Stack, *, patience: float) -> float:
    """Poll POST initialize through Envoy until 200: /readyz is the broker's, and in one
    `serve` process the router (the ext_proc every POST goes through) starts listening after
    the broker does, so /readyz can say 200 while POSTs still get Envoy's 503."""
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "bench-probe", "version": "1"}}}
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
        with trio.fail_after(patience):
            while True:
                try:
                    answer = await http.post(stack.url, json=body, headers=headers)
                    if answer.status_code == 200:
                        await http.delete(stack.url, headers={
                            "mcp-session-id": answer.headers["mcp-session-id"]})
                        return trio.current_time() - stack.spawned_at
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.01)


def raise_nofile(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (up to the hard limit); children inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
