"""tools/call through Envoy straight to an upstream vs through the gateway (Envoy + ext_proc router).

One run, same machine, same upstream (the `echo` sample, official SDK), same load generator
(`wrk`, Debian package; installed on first use like `make redis`):

  direct   client → Envoy (no ext_proc) → echo            (tools/call "add", a backend session)
  gateway  client → Envoy → ext_proc router → echo        (tools/call "e_add", a gateway session)

Two loads, each on both paths: one MCP session (an SDK server answers one session's requests
about one at a time, so this measures latency) and 16 sessions (many clients: throughput).
Printed per load: requests/s of each path and their ratio, p50/p99 of each and what the gateway
adds, and the gateway process's CPU per call (the router is the only part of it on this path).

    .venv/bin/python bench/bench_router.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench.harness import ACCEPT, PROTOCOL, ensure_wrk, free_port  # noqa: E402
from mcp_gateway.config import parse_config  # noqa: E402
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap  # noqa: E402

BIN = Path(sys.executable).parent


@contextmanager
def child(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ok(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def initialize(url: str) -> str:
    with httpx.Client(timeout=10) as client:
        response = client.post(
            url,
            json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}},
            headers={"accept": ACCEPT},
        )
        response.raise_for_status()
        session = response.headers["mcp-session-id"]
        client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                    headers={"accept": ACCEPT, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL})
        return session


def check_call(url: str, session: str, tool: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"a": 2, "b": 3}}}
    response = httpx.post(url, json=body, timeout=10, headers={
        "accept": ACCEPT, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL})
    assert response.status_code == 200 and '"5"' in response.text.replace("'", '"'), response.text


def wrk_script(path: Path, sessions: list[str], tool: str) -> Path:
    """POST tools/call, cycling through `sessions` (many clients, as in real use: an MCP server
    handles one session's requests largely in order, so a single session would measure that)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": tool, "arguments": {"a": 2, "b": 3}}})
    path.write_text(
        f"local sessions = {{{', '.join(json.dumps(s) for s in sessions)}}}\n"
        "local counter = 0\n"
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Accept"] = "{ACCEPT}"\n'
        f'wrk.headers["Mcp-Protocol-Version"] = "{PROTOCOL}"\n'
        "request = function()\n"
        "  counter = counter + 1\n"
        '  wrk.headers["Mcp-Session-Id"] = sessions[(counter % #sessions) + 1]\n'
        "  return wrk.format()\n"
        "end\n"
    )
    return path


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(wrk: str, url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    if "Requests/sec" not in out or "50%" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _millis(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _millis(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    if os.environ.get("BENCH_VERBOSE"):
        print(out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed requests under load:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99, "requests": total}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_bootstrap(listen_port: int, admin_port: int, upstream_port: int) -> str:
    return f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
static_resources:
  listeners:
  - name: direct
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: direct
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: echo, timeout: 0s}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]
"""


def gateway_command(config_path: Path) -> list[str]:
    command = [str(BIN / "mcp-gateway"), "serve", "--config", str(config_path)]
    profile = os.environ.get("BENCH_PROFILE")  # a path: cProfile the gateway process into it
    if profile:
        command = [sys.executable, "-m", "cProfile", "-o", profile, *command]
    return command


def report(
    args: argparse.Namespace, sessions: int, direct: dict[str, float], through: dict[str, float], cpu_ms: float
) -> None:
    print(f"\ntools/call, c={args.connections}, {sessions} session(s), {args.seconds} s each, "
          "upstream: echo sample (official SDK)")
    print(f"{'path':<10}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, result in (("direct", direct), ("gateway", through)):
        print(f"{name:<10}{result['rps']:>10.0f}{result['p50']:>10.2f}{result['p99']:>10.2f}")
    print(f"rps ratio gateway/direct: {through['rps'] / direct['rps']:.2f}")
    print(f"added latency: p50 +{through['p50'] - direct['p50']:.2f} ms, p99 +{through['p99'] - direct['p99']:.2f} ms")
    print(f"gateway (router) CPU per call: {cpu_ms:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=16, help="MCP sessions the load cycles through")
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-router-"))
    ports = {name: free_port() for name in ("echo", "broker", "router", "gw", "gw_admin", "direct", "direct_admin", "status")}
    config_text = f"""
servers:
  - name: echo
    url: http://127.0.0.1:{ports['echo']}/mcp
    prefix: e_
gateway:
  broker_listen: 127.0.0.1:{ports['broker']}
  router_listen: 127.0.0.1:{ports['router']}
  admin_listen: 127.0.0.1:{ports['status']}
"""
    config_path = work / "config.yaml"
    config_path.write_text(config_text)
    config = parse_config(config_text)
    xds = XdsWriter(work / "xds")
    xds.write_initial(config)
    (work / "gateway-envoy.yaml").write_text(render_bootstrap(BootstrapParams(
        listen=f"127.0.0.1:{ports['gw']}", admin_port=ports["gw_admin"], broker=f"127.0.0.1:{ports['broker']}",
        router=f"127.0.0.1:{ports['router']}", xds_dir=str(work / "xds"), access_log_path="/dev/null")))
    (work / "direct-envoy.yaml").write_text(direct_bootstrap(ports["direct"], ports["direct_admin"], ports["echo"]))
    envoy = str(BIN / "envoy")
    envoy_flags = ["--disable-hot-restart", "--log-level", "warning", "--concurrency", "1"]
    with child([str(BIN / "mcp-gateway"), "sample-server", "echo", "--port", str(ports["echo"])], work / "echo.log"), \
            child(gateway_command(config_path), work / "gateway.log") as gateway, \
            child([envoy, "-c", str(work / "gateway-envoy.yaml"), "--reject-unknown-dynamic-fields", *envoy_flags], work / "envoy-gw.log"), \
            child([envoy, "-c", str(work / "direct-envoy.yaml"), *envoy_flags], work / "envoy-direct.log"):
        wait_ok(f"http://127.0.0.1:{ports['echo']}/mcp")
        wait_ok(f"http://127.0.0.1:{ports['status']}/readyz")  # the gateway's admin address
        wait_ok(f"http://127.0.0.1:{ports['direct_admin']}/ready")
        direct_url = f"http://127.0.0.1:{ports['direct']}/mcp"
        gateway_url = f"http://127.0.0.1:{ports['gw']}/mcp"
        direct_sessions = [initialize(direct_url) for _ in range(args.sessions)]
        gateway_sessions = [initialize(gateway_url) for _ in range(args.sessions)]
        for session in direct_sessions:
            check_call(direct_url, session, "add")
        for session in gateway_sessions:  # also creates each backend session (lazy init)
            check_call(gateway_url, session, "e_add")
        results = []
        for count in sorted({1, args.sessions}):
            direct_script = wrk_script(work / f"direct-{count}.lua", direct_sessions[:count], "add")
            gateway_script = wrk_script(work / f"gateway-{count}.lua", gateway_sessions[:count], "e_add")
            run_wrk(wrk, direct_url, direct_script, 2, args.connections)  # warm-up
            run_wrk(wrk, gateway_url, gateway_script, 2, args.connections)
            direct = run_wrk(wrk, direct_url, direct_script, args.seconds, args.connections)
            cpu_before = cpu_seconds(gateway.pid)
            through = run_wrk(wrk, gateway_url, gateway_script, args.seconds, args.connections)
            cpu_per_call_ms = (cpu_seconds(gateway.pid) - cpu_before) / through["requests"] * 1000
            results.append((count, direct, through, cpu_per_call_ms))
    for count, direct, through, cpu_per_call_ms in results:
        report(args, count, direct, through, cpu_per_call_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
