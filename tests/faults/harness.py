"""The fault suite's stack: real upstream processes, `mcp-gateway serve` as its own process (so a
test can kill, restart and reconfigure it), and a real Envoy in front, all on loopback.

    async with fault_stack(["alpha", "beta"], tmp_path) as stack:   # echo samples, a_ and b_
        stack.url                                  # Envoy's /mcp
        await stack.upstreams["alpha"].kill()      # SIGKILL one upstream
        await stack.restart_gateway()              # SIGTERM the gateway, start it again
        await stack.write_config(servers=[...])    # an edit the running gateway picks up

Readiness is judged on the MCP surface itself (an `initialize` and a `tools/list` on the broker
that lists every configured upstream's tools), not on an admin endpoint: there is nothing else to
wait on, and that is what a client needs. Figures (`figure(...)`) are printed as
`FIGURE <name>: <text>` (visible with `pytest -s`) and collected for the run's summary.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import trio
import yaml

from mcp_gateway.config import load_config
from mcp_gateway.sessions import SessionClaims, SessionTokens
from mcp_gateway.sessions.tokens import derive_key
from tests.support.envoy import RunningEnvoy, running_envoy
from tests.support.processes import stop_process
from tests.support.redis import free_port
from tests.support.routing import call_body, initialize_raw, session_headers, sse_result
from tests.support.servers import CLI, SampleProcess, sample_process

T = TypeVar("T")

# Tokens must open after a gateway restart: the keys are in the config, not per process.
SESSION_SECRET = "fault-suite-session-secret-0123456789"

# What each test measured, in the order measured: the terminal summary lists them
# (tests/faults/conftest.py), so a run without -s still shows every figure.
FIGURES: list[tuple[str, str]] = []


def figure(name: str, text: str) -> None:
    FIGURES.append((name, text))
    print(f"FIGURE {name}: {text}")


def prefix_of(name: str) -> str:
    return f"{name[0]}_"


def tokens() -> SessionTokens:
    return SessionTokens([derive_key(SESSION_SECRET)])


def claims_of(session: str) -> SessionClaims:
    claims = tokens().verify(session)
    assert claims is not None, "a session id the gateway issued does not open with its key"
    return claims


@dataclass
class GatewayProcess:
    """`mcp-gateway serve --config FILE` on fixed loopback ports (a restart keeps them)."""

    config_path: Path
    log_path: Path
    broker_port: int
    router_port: int
    process: trio.Process | None = None
    starts: int = 0

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_port}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    async def start(self, expected_tools: Sequence[str]) -> None:
        await self.spawn()
        await self.wait_ready(expected_tools)

    async def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                [CLI, "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1

    async def stop(self) -> None:
        if self.process is not None:
            with trio.CancelScope(shield=True):
                await stop_process(self.process)
            self.process = None

    async def wait_ready(self, expected_tools: Sequence[str]) -> None:
        process = self.process
        assert process is not None
        async with httpx.AsyncClient(timeout=2) as client:
            with trio.move_on_after(30):
                while process.poll() is None:
                    if await _lists(client, self.broker_url, expected_tools) and await _accepts(self.router_port):
                        return
                    await trio.sleep(0.05)
        raise RuntimeError(
            f"mcp-gateway serve not ready (exit code {process.poll()}):\n{self.log()[-4000:]}"
        )


async def _lists(client: httpx.AsyncClient, url: str, expected: Sequence[str]) -> bool:
    """The broker answers initialize and lists every expected tool."""
    try:
        session = await initialize_raw(client, url)
        listed = await client.post(
            url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session_headers(session)
        )
        names = {tool["name"] for tool in sse_result(listed)["result"]["tools"]}
        await client.delete(url, headers=session_headers(session))
    except (httpx.HTTPError, AssertionError, KeyError, ValueError):
        return False
    return set(expected) <= names


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


@dataclass
class FaultStack:
    url: str  # Envoy's /mcp: what clients use
    envoy: RunningEnvoy
    gateway: GatewayProcess
    upstreams: dict[str, SampleProcess]
    workdir: Path
    gateway_settings: dict[str, Any]
    servers: list[dict[str, Any]] = field(default_factory=list)

    def expected_tools(self) -> list[str]:
        return [f"{server['prefix']}add" for server in self.servers]

    async def restart_gateway(self) -> float:
        """SIGTERM the gateway, start it again on the same ports; seconds until it served."""
        started = time.monotonic()
        await self.gateway.stop()
        await self.gateway.start(self.expected_tools())
        return time.monotonic() - started

    async def write_config(self, servers: Sequence[Mapping[str, Any]]) -> None:
        """Replace the config file the gateway watches (atomically, as an editor or a Secret
        volume would); the gateway polls its mtime."""
        self.servers = [dict(server) for server in servers]
        await trio.to_thread.run_sync(
            _write_config, self.gateway.config_path, self.servers, self.gateway_settings
        )


def server_entry(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "url": url, "prefix": prefix_of(name), "timeoutSeconds": 5.0}


def _write_config(path: Path, servers: Sequence[Mapping[str, Any]], gateway: Mapping[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump({"servers": [dict(s) for s in servers], "gateway": dict(gateway)}))
    # The watcher compares mtimes; make sure a quick second edit never shares the first's.
    stamp = time.time_ns()
    if path.exists():
        stamp = max(stamp, path.stat().st_mtime_ns + 1_000_000)
    os.utime(temporary, ns=(stamp, stamp))
    os.replace(temporary, path)


@asynccontextmanager
async def fault_stack(
    names: Sequence[str], workdir: Path, *, redis_url: str | None = None, **gateway: Any
) -> AsyncIterator[FaultStack]:
    """An `echo` sample process per name (tools `<n>_echo`, `<n>_add`), the gateway process
    (session keys in its config; Redis sessions when `redis_url` is given; Envoy's clusters and
    routes written by its router, so reloads reach Envoy) and Envoy. Keyword arguments go to
    the config's `gateway:` section."""
    async with AsyncExitStack() as stack:
        upstreams: dict[str, SampleProcess] = {}

        async def start_upstream(name: str) -> None:
            upstreams[name] = await stack.enter_async_context(sample_process("echo"))

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(start_upstream, name)
        servers = [server_entry(name, upstreams[name].url) for name in names]
        broker_port, router_port = free_port(), free_port()
        sessions: dict[str, Any] = {"keys": [SESSION_SECRET]}
        if redis_url is not None:
            sessions.update(store="redis", redis_url=redis_url)
        settings: dict[str, Any] = {
            "broker_listen": f"127.0.0.1:{broker_port}",
            "router_listen": f"127.0.0.1:{router_port}",
            "sessions": sessions,
            "envoy": {"xds_dir": str(workdir / "xds"), "admin_port": 0},
            **gateway,
        }
        # The admin listener (/status, /metrics, /healthz, /readyz): its default port would
        # collide between stacks.
        settings["admin_listen"] = f"127.0.0.1:{free_port()}"
        config_path = workdir / "gateway.yaml"
        _write_config(config_path, servers, settings)
        gateway_process = GatewayProcess(config_path, workdir / "gateway.log", broker_port, router_port)
        stack.push_async_callback(gateway_process.stop)
        # Envoy starts while the gateway does (it needs only the ports and the config).
        await gateway_process.spawn()
        envoy = await stack.enter_async_context(
            running_envoy(load_config(str(config_path)), broker_port=broker_port,
                          router_port=router_port, workdir=workdir)
        )
        await gateway_process.wait_ready([entry["prefix"] + "add" for entry in servers])
        yield FaultStack(envoy.url, envoy, gateway_process, upstreams, workdir, settings, servers)


# ---------------------------------------------------------------------------------------------
# Clients


async def open_client_session(client: httpx.AsyncClient, url: str) -> str:
    return await initialize_raw(client, url)


async def routed_call(
    client: httpx.AsyncClient, url: str, session: str, tool: str, request_id: int, **arguments: Any
) -> tuple[int, dict[str, Any] | None]:
    """POST a tools/call; (HTTP status, the JSON-RPC answer or None when there was none)."""
    response = await client.post(url, json=call_body(tool, arguments, request_id), headers=session_headers(session))
    try:
        return response.status_code, sse_result(response)
    except (AssertionError, ValueError):
        return response.status_code, None


@dataclass
class Outcome:
    server: str
    started: float
    ended: float
    ok: bool
    status: int  # HTTP status; 0: no answer (a transport error or the 10 s bound)
    code: int | None  # the JSON-RPC error code, when the answer was an error
    id_ok: bool  # the answer carried the request's id
    detail: str


@dataclass
class Load:
    """Clients calling `<prefix>add` on their servers in a loop until `stop` is set: each
    worker has its own session; every call is recorded with what it got."""

    url: str
    outcomes: list[Outcome] = field(default_factory=list)
    stop: trio.Event = field(default_factory=trio.Event)

    def of(self, server: str, since: float = 0.0) -> list[Outcome]:
        return [o for o in self.outcomes if o.server == server and o.started >= since]

    def failures(self, *servers: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.server in servers and not o.ok]

    async def worker(self, client: httpx.AsyncClient, server: str, prefix: str, pause: float = 0.0) -> None:
        session = await open_client_session(client, self.url)
        request_id = 0
        while not self.stop.is_set():
            request_id += 1
            started = trio.current_time()
            status, answer, detail = 0, None, ""
            try:
                # Each call is bounded: a hang is a failure, not a stuck test.
                with trio.fail_after(10):
                    status, answer = await routed_call(
                        client, self.url, session, f"{prefix}add", request_id, a=request_id, b=1
                    )
                detail = f"HTTP {status} {json.dumps(answer)[:200]}"
            except (httpx.HTTPError, trio.TooSlowError) as failure:
                detail = f"{type(failure).__name__}: {failure}"
            result = (answer or {}).get("result") or {}
            ok = (
                status == 200 and answer is not None and answer.get("id") == request_id
                and not result.get("isError") and result.get("content", [{}])[0].get("text") == str(request_id + 1)
            )
            error = (answer or {}).get("error")
            code = error.get("code") if isinstance(error, dict) else None
            id_ok = answer is not None and answer.get("id") == request_id
            self.outcomes.append(Outcome(server, started, trio.current_time(), ok, status, code, id_ok, detail))
            if pause:
                await trio.sleep(pause)  # pacing, not synchronisation: keeps 2 cores breathing


@asynccontextmanager
async def load_on(url: str, servers: Mapping[str, str], workers_per_server: int = 2) -> AsyncIterator[Load]:
    """Run a `Load` on `servers` (name → tool prefix) for the duration of the block."""
    load = Load(url)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client, trio.open_nursery() as nursery:
        for server, prefix in servers.items():
            for _ in range(workers_per_server):
                nursery.start_soon(load.worker, client, server, prefix, 0.01)
        try:
            yield load
        finally:
            load.stop.set()


async def wait_for_calls(
    load: Load, server: str, count: int, since: float = 0.0, patience: float = 15.0, *, ok: bool = True
) -> None:
    """Until `count` calls to `server` started at or after `since` succeeded (or, `ok=False`,
    failed). Polls the recorded outcomes: the load's tasks write them as calls end."""
    with trio.move_on_after(patience):
        while len([o for o in load.of(server, since) if o.ok is ok]) < count:  # noqa: ASYNC110
            await trio.sleep(0.01)
        return
    seen = load.of(server, since)
    raise AssertionError(
        f"{server}: {count} {'successful' if ok else 'failed'} calls awaited for {patience} s; "
        f"{len(seen)} calls, last: {[o.detail for o in seen[-3:]]}"
    )




# ---------------------------------------------------------------------------------------------
# One stack for many tests


class StackThread(Generic[T]):
    """Hold an async context manager open in its own Trio run on a thread, for a module-scoped
    fixture: pytest-trio gives each test its own run, so a stack shared by many tests (the abuse
    corpus) cannot live in any of them. The tests reach it over loopback only."""

    def __init__(self, open_stack: Callable[[], AbstractAsyncContextManager[T]], patience: float = 60) -> None:
        self._open_stack = open_stack
        self._patience = patience
        self._handed: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.Event] | BaseException] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fault-stack", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:  # handed to the test thread, never lost in this one
            self._error = error
            self._handed.put(error)

    async def _main(self) -> None:
        release = trio.Event()
        async with self._open_stack() as value:
            self._handed.put((value, trio.lowlevel.current_trio_token(), release))
            await release.wait()

    def __enter__(self) -> T:
        self._thread.start()
        handed = self._handed.get(timeout=self._patience)
        if isinstance(handed, BaseException):
            self._thread.join()
            raise RuntimeError("the shared stack did not start") from handed
        value, self._token, self._release = handed
        return value

    def __exit__(self, *exc_info: object) -> None:
        trio.from_thread.run_sync(self._release.set, trio_token=self._token)
        self._thread.join(timeout=self._patience)
        if self._thread.is_alive():
            raise RuntimeError("the shared stack did not stop")
        if self._error is not None:
            raise RuntimeError("the shared stack failed") from self._error
