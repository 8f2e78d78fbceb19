"""Shared helpers for the load benchmarks: child processes that are always stopped, wrk, CPU.

Every process a benchmark starts goes through `child`, which puts it in a process group of its
own and ends that whole group when the block exits (normally, on an exception, on Ctrl-C, or on
SIGTERM once `stop_on_signals` is installed), so that a server's own workers go too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    """wrk from Debian's package, installed with apt-get on first use (as `make redis` does)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "/usr/bin/wrk"


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so every `child` block stops its process."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


@contextmanager
def child(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv in its own process group, output to `log`; on exit SIGTERM the group, then SIGKILL."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield process
        finally:
            _signal_group(process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(5)
            _signal_group(process.pid, signal.SIGKILL)  # the leader's stragglers, or the leader itself
            process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def wait_ok(url: str, seconds: float = 30, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers below 500; fails early if `process` (the server) has exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {seconds} s")


# -- CPU ----------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    # Fields after the command name (which may hold spaces and parentheses): state is [0].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all their threads) and their live descendants."""
    ticks = 0
    seen: set[int] = set()
    for pid in pids:
        for member in process_tree(pid):
            if member in seen:
                continue
            seen.add(member)
            try:
                fields = _stat(member)
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- wrk ----------------------------------------------------------------------------------------


def wrk_script(path: Path, body: dict[str, Any], headers: dict[str, str], sessions: Sequence[str] = (),
               first_id: int = 1) -> Path:
    """A wrk Lua script POSTing the JSON-RPC request `body` with `headers`. Every request gets its
    own id (first_id, first_id + 1, ...: MCP forbids reusing a request id within a session, and a
    proxy that tracks calls by id would otherwise see 16 calls with one id); with `sessions`, each
    carries the next one of them as Mcp-Session-Id (round robin)."""
    head, tail = json.dumps({**body, "id": "@ID@"}).split('"@ID@"')
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        *(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()),
        f"local head, tail = {json.dumps(head)}, {json.dumps(tail)}",
        f"local counter = {first_id - 1}",
        f"local sessions = {{{', '.join(json.dumps(s) for s in sessions)}}}",
    ]
    if len(sessions) == 1:
        lines.append(f'wrk.headers["Mcp-Session-Id"] = {json.dumps(sessions[0])}')
    lines += [
        "request = function()",
        "  counter = counter + 1",
        *(['  wrk.headers["Mcp-Session-Id"] = sessions[(counter % #sessions) + 1]'] if len(sessions) > 1 else []),
        "  return wrk.format(nil, nil, nil, head .. counter .. tail)",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50: float  # ms
    p99: float  # ms
    errors: int  # answers that were not 2xx or 3xx, plus socket errors
    seconds: float  # wall time of the run


def run_wrk(wrk: str, url: str, script: Path, seconds: int, connections: int, threads: int = 1) -> WrkResult:
    started = time.monotonic()
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    elapsed = time.monotonic() - started
    if os.environ.get("BENCH_VERBOSE"):
        print(out)

    def field(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(
        rps=float(field(r"^Requests/sec:\s+([\d.]+)")),
        requests=int(field(r"^\s+(\d+) requests in")),
        p50=millis(field(r"^\s+50%\s+(\S+)")),
        p99=millis(field(r"^\s+99%\s+(\S+)")),
        errors=errors,
        seconds=elapsed,
    )


def millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


# -- MCP over plain HTTP ------------------------------------------------------------------------


def rpc_result(response: httpx.Response) -> Any:
    """The JSON-RPC message of an answer, whether sent as JSON or as one SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:])
        raise RuntimeError(f"no data in the event stream: {response.text[:300]}")
    return response.json()


def initialize(url: str, headers: dict[str, str] | None = None, client_name: str = "bench") -> str | None:
    """initialize + notifications/initialized over plain HTTP; the session id (None if stateless)."""
    base = {"accept": ACCEPT, **(headers or {})}
    with httpx.Client(timeout=30, headers=base) as http:
        response = http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": client_name, "version": "1"}}})
        if response.status_code != 200 or "result" not in rpc_result(response):
            raise RuntimeError(f"{url}: initialize answered {response.status_code} {response.text[:300]}")
        session = response.headers.get("mcp-session-id")
        follow = {"mcp-protocol-version": PROTOCOL, **({"mcp-session-id": session} if session else {})}
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=follow)
        return session


def list_tools(url: str, headers: dict[str, str]) -> list[str]:
    response = httpx.post(url, timeout=30, headers={"accept": ACCEPT, "mcp-protocol-version": PROTOCOL, **headers},
                          json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    message = rpc_result(response)
    if "result" not in message:
        raise RuntimeError(f"{url}: tools/list answered {response.status_code} {response.text[:300]}")
    return [tool["name"] for tool in message["result"]["tools"]]
