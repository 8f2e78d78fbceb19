"""Side by side, in one run: one MCP upstream reached several ways, and what each way costs.

  direct        client → echo sample                                  (tool "add")
  envoy         client → Envoy (no ext_proc) → echo                   (tool "add")
  gateway       client → Envoy → ext_proc router → echo               (tool "e_add", `mcp-gateway serve`)
  contextforge  client → IBM ContextForge 1.0.7 → echo                (tool "echo-add"), in variants

The upstream is one `mcp-gateway sample-server echo` process (official SDK) shared by every path.
Measured, with every path interleaved so that background load spreads over all of them:

  * connect: a fresh official SDK client (`mcp.client.client.Client`, handshake mode) opens a
    connection, initializes and lists tools; the median of --rounds such connects.
  * load: `wrk` POSTs tools/call ("add" 2+3) on one session at --concurrency 8 and 16 for
    --seconds per run, --repeats runs: requests/s, p50, p99, the CPU the proxy processes spend
    per call, and the answers that were not 2xx.

Ratios are against `direct` from the same run. ContextForge is installed on first use into its own
venv, bench/peers/.venv, from bench/peers/requirements-contextforge.txt (fully pinned). Each
variant is its own process on SQLite in a temporary directory, one uvicorn worker, rate limiting
off (its default 100 MCP calls a minute per user would turn the load into 429s):

  contextforge jwt        JWT on every request, stateful sessions (one upstream session per
                          client session, as our gateway keeps)
  contextforge no-auth    AUTH_REQUIRED=false, stateful: like our gateway here, no client auth
  contextforge stateless  JWT, stateless sessions as shipped: an upstream session per call

    .venv/bin/python -m bench bench_peers
    .venv/bin/python bench/bench_peers.py [--seconds 5] [--rounds 20] [--concurrency 8 16]
                                          [--repeats 2] [--contextforge VARIANT ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import httpx2
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from bench.bench_router import (  # noqa: E402
    ACCEPT,
    BIN,
    PROTOCOL,
    child,
    cpu_seconds,
    direct_bootstrap,
    ensure_wrk,
    free_port,
    wait_ok,
)
from mcp_gateway.config import parse_config  # noqa: E402
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
CF_VENV = PEERS / ".venv"
CF_REQUIREMENTS = PEERS / "requirements-contextforge.txt"
CF_ADMIN = "admin@example.com"  # the bootstrap admin ContextForge creates in its fresh database
CALL_ARGUMENTS = {"a": 2, "b": 3}


@dataclass
class Target:
    """One way to reach the upstream: where to send, what the tool is called, who proxies."""

    name: str
    url: str
    tool: str
    headers: dict[str, str] = field(default_factory=dict)
    proxies: list[int] = field(default_factory=list)  # pids whose CPU is the target's overhead
    connects_ms: list[float] = field(default_factory=list)
    load: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # per concurrency, per repeat

    def best(self, connections: int) -> dict[str, float]:
        return max(self.load[connections], key=lambda run: run["rps"])


# -- ContextForge -------------------------------------------------------------------------------


def ensure_contextforge() -> Path:
    """bench/peers/.venv with ContextForge installed from the pinned list; its bin directory."""
    marker = CF_VENV / ".installed"
    wanted = CF_REQUIREMENTS.read_text()
    if marker.exists() and marker.read_text() == wanted:
        return CF_VENV / "bin"
    print("installing ContextForge into bench/peers/.venv (first run only)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(CF_VENV)], check=True)
    pip = subprocess.run(
        [str(CF_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(CF_REQUIREMENTS)],
        capture_output=True, text=True,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"installing ContextForge failed:\n{pip.stdout}{pip.stderr}")
    marker.write_text(wanted)
    return CF_VENV / "bin"


@dataclass(frozen=True)
class Variant:
    """How ContextForge is configured for one row of the table."""

    auth: bool  # JWT on every MCP request (its default); off = anonymous access to public tools
    stateful: bool  # one upstream session per client session; off (its default) = one per call


CF_VARIANTS = {
    "jwt": Variant(auth=True, stateful=True),
    "no-auth": Variant(auth=False, stateful=True),
    "stateless": Variant(auth=True, stateful=False),
}


def contextforge_env(work: Path, port: int, jwt_secret: str, variant: Variant) -> dict[str, str]:
    settings = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{work / 'contextforge.db'}",
        "JWT_SECRET_KEY": jwt_secret,
        "AUTH_ENCRYPTION_SECRET": secrets.token_hex(32),
        "PLATFORM_ADMIN_EMAIL": CF_ADMIN,
        "PLATFORM_ADMIN_PASSWORD": secrets.token_urlsafe(24) + "!A1",
        # The upstream is on loopback, which its SSRF guard refuses by default.
        "SSRF_ALLOW_LOCALHOST": "true",
        # Its default MEDIUM tier allows 100 MCP calls a minute per user: the load would be 429s.
        "RATE_LIMITING_ENABLED": "false",
        "USE_STATEFUL_SESSIONS": "true" if variant.stateful else "false",
        "AUTH_REQUIRED": "true" if variant.auth else "false",
        "CACHE_TYPE": "memory",
        "LOG_LEVEL": "WARNING",
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "false",
    }
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **settings}


def mint_token(cf_bin: Path, jwt_secret: str) -> str:
    out = subprocess.run(
        [str(cf_bin / "python"), "-m", "mcpgateway.utils.create_jwt_token", "-u", CF_ADMIN, "--admin", "-e", "120"],
        check=True, capture_output=True, text=True, env={"PATH": os.environ["PATH"], "JWT_SECRET_KEY": jwt_secret},
    ).stdout
    return out.strip().splitlines()[-1]


def register_upstream(base: str, token: str, upstream_url: str) -> None:
    response = httpx.post(
        f"{base}/gateways", timeout=30, headers={"Authorization": f"Bearer {token}"},
        json={"name": "echo", "url": upstream_url, "transport": "STREAMABLEHTTP"},
    )
    if response.status_code >= 300:
        raise RuntimeError(f"ContextForge refused the upstream: HTTP {response.status_code} {response.text[:300]}")


@contextmanager
def running_contextforge(
    cf_bin: Path, work: Path, upstream_url: str, variant: Variant
) -> Iterator[tuple[str, dict[str, str], int]]:
    """ContextForge on a loopback port with the upstream registered: (MCP URL, auth headers, pid)."""
    port = free_port()
    jwt_secret = secrets.token_hex(32)
    work.mkdir()
    env = contextforge_env(work, port, jwt_secret, variant)
    argv = [str(cf_bin / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
    with child(argv, work / "contextforge.log", env=env) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ok(f"{base}/health", seconds=120)  # it migrates a fresh database first
        token = mint_token(cf_bin, jwt_secret)
        register_upstream(base, token, upstream_url)  # the admin API wants the token in any variant
        yield f"{base}/mcp/", {"Authorization": f"Bearer {token}"} if variant.auth else {}, process.pid


# -- our gateway --------------------------------------------------------------------------------


def gateway_files(work: Path, upstream_port: int) -> tuple[Path, Path, str, str]:
    """Config and Envoy bootstrap for `mcp-gateway serve`: (config, bootstrap, client URL, the
    gateway's /readyz on its admin address)."""
    ports = {name: free_port() for name in ("broker", "router", "listen", "admin", "gateway_admin")}
    config_text = f"""
servers:
  - name: echo
    url: http://127.0.0.1:{upstream_port}/mcp
    prefix: e_
gateway:
  broker_listen: 127.0.0.1:{ports['broker']}
  router_listen: 127.0.0.1:{ports['router']}
  admin_listen: 127.0.0.1:{ports['gateway_admin']}
"""
    config_path = work / "gateway.yaml"
    config_path.write_text(config_text)
    XdsWriter(work / "xds").write_initial(parse_config(config_text))
    bootstrap = work / "gateway-envoy.yaml"
    bootstrap.write_text(render_bootstrap(BootstrapParams(
        listen=f"127.0.0.1:{ports['listen']}", admin_port=ports["admin"], broker=f"127.0.0.1:{ports['broker']}",
        router=f"127.0.0.1:{ports['router']}", xds_dir=str(work / "xds"), access_log_path="/dev/null")))
    return (config_path, bootstrap, f"http://127.0.0.1:{ports['listen']}/mcp",
            f"http://127.0.0.1:{ports['gateway_admin']}/readyz")


# -- measurements -------------------------------------------------------------------------------


async def connect_once(target: Target) -> float:
    """Milliseconds for a fresh SDK client to connect, initialize and list tools."""
    started = time.perf_counter()
    async with (
        httpx2.AsyncClient(headers=target.headers) as http,
        Client(streamable_http_client(target.url, http_client=http), mode="legacy", cache=None) as client,
    ):
        listed = await client.list_tools()
        elapsed = (time.perf_counter() - started) * 1000
    names = {tool.name for tool in listed.tools}
    if target.tool not in names:
        raise RuntimeError(f"{target.name}: tools/list has {sorted(names)}, not {target.tool}")
    return elapsed


def measure_connects(targets: Sequence[Target], rounds: int) -> None:
    async def run() -> None:
        for target in targets:  # warm-up: imports, connection pools, first upstream sessions
            await connect_once(target)
        for index in range(rounds):
            shift = index % len(targets)  # rotate the order so no target is always first
            for target in [*targets[shift:], *targets[:shift]]:
                target.connects_ms.append(await connect_once(target))

    trio.run(run)


def open_session(target: Target) -> dict[str, str]:
    """Initialize over plain HTTP; the headers a load request carries (session id if stateful)."""
    headers = {"accept": ACCEPT, **target.headers}
    with httpx.Client(timeout=30, headers=headers) as http:
        response = http.post(target.url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench-peers", "version": "1"}}})
        response.raise_for_status()
        if session := response.headers.get("mcp-session-id"):
            headers["mcp-session-id"] = session
        headers["mcp-protocol-version"] = PROTOCOL
        http.post(target.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": target.tool, "arguments": CALL_ARGUMENTS}}
        answer = http.post(target.url, json=call, headers=headers)
    if answer.status_code != 200 or '"5"' not in answer.text:
        raise RuntimeError(f"{target.name}: tools/call answered {answer.status_code} {answer.text[:300]}")
    return headers


def load_script(file: Path, target: Target, headers: dict[str, str]) -> Path:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": target.tool, "arguments": CALL_ARGUMENTS}})
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}", 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    file.write_text("\n".join(lines) + "\n")
    return file


def measure_load(
    wrk: str, work: Path, targets: Sequence[Target], concurrency: Sequence[int], seconds: int, repeats: int
) -> None:
    """Every cell `repeats` times, interleaved; the best run stands (contention only ever slows)."""
    scripts = {t.name: load_script(work / f"{t.name}.lua", t, open_session(t)) for t in targets}
    for target in targets:
        run_wrk(wrk, target.url, scripts[target.name], 1, max(concurrency))  # warm-up
    for _ in range(repeats):
        for connections in concurrency:
            for target in targets:
                before = sum(cpu_seconds(pid) for pid in target.proxies)
                result = run_wrk(wrk, target.url, scripts[target.name], seconds, connections)
                spent = sum(cpu_seconds(pid) for pid in target.proxies) - before
                result["cpu_ms"] = spent / result["requests"] * 1000
                target.load.setdefault(connections, []).append(result)


def run_wrk(wrk: str, url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """One wrk run: rps, p50/p99 ms, requests, and the answers that were not 2xx (counted, not fatal:
    a peer that fails a few calls under load still has a throughput worth showing)."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout

    def field_(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.group(1)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(field_(r"^Requests/sec:\s+([\d.]+)")),
        "requests": int(field_(r"^\s+(\d+) requests in")),
        "p50": _millis(field_(r"^\s+50%\s+(\S+)")),
        "p99": _millis(field_(r"^\s+99%\s+(\S+)")),
        "errors": int(errors.group(1)) if errors else 0,
    }


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def rss_mb(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# -- report -------------------------------------------------------------------------------------


def report(targets: Sequence[Target], concurrency: Sequence[int], rss: dict[str, float], args: argparse.Namespace) -> None:
    direct = targets[0]
    base = statistics.median(direct.connects_ms)
    print(f"\nconnect = new SDK client: initialize + notifications/initialized + tools/list; {args.rounds} rounds")
    print(f"{'path':<24}{'median ms':>10}{'p90 ms':>9}{'x direct':>10}{'proxy RSS MB':>14}")
    for target in targets:
        median = statistics.median(target.connects_ms)
        p90 = statistics.quantiles(target.connects_ms, n=10)[-1]
        memory = f"{rss[target.name]:.0f}" if target.proxies else "-"
        print(f"{target.name:<24}{median:>10.1f}{p90:>9.1f}{median / base:>10.2f}{memory:>14}")
    print(f"\ntools/call under load = wrk, one session, {args.seconds} s per run, best of {args.repeats} runs")
    print(f"{'path':<24}{'conns':>6}{'rps':>9}{'x direct':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'proxy CPU ms/call':>19}{'non-2xx':>9}   rps of each run")
    for connections in concurrency:
        reference = direct.best(connections)
        for target in targets:
            result = target.best(connections)
            ratio = result["rps"] / reference["rps"]
            errors = sum(int(run["errors"]) for run in target.load[connections])
            cpu = f"{result['cpu_ms']:.2f}" if target.proxies else "-"
            runs = "/".join(f"{run['rps']:.0f}" for run in target.load[connections])
            print(f"{target.name:<24}{connections:>6}{result['rps']:>9.0f}{ratio:>10.2f}"
                  f"{result['p50']:>9.2f}{result['p99']:>9.2f}{cpu:>19}{errors:>9}   {runs}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per cell")
    parser.add_argument("--rounds", type=int, default=20, help="SDK connects per target")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=2, help="runs per load cell (best one reported)")
    parser.add_argument("--contextforge", nargs="*", choices=list(CF_VARIANTS), default=list(CF_VARIANTS),
                        metavar="VARIANT", help="ContextForge rows (default: all); with no VARIANT, no ContextForge and no install")
    # `python -m bench bench_peers` leaves the script's name in argv.
    return parser.parse_args([a for a in sys.argv[1:] if not a.startswith("bench_")])


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    cf_bin = ensure_contextforge() if args.contextforge else None
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    config_path, gateway_bootstrap, gateway_url, gateway_ready = gateway_files(work, upstream_port)
    direct_ports = {"listen": free_port(), "admin": free_port()}
    (work / "direct-envoy.yaml").write_text(direct_bootstrap(direct_ports["listen"], direct_ports["admin"], upstream_port))
    envoy_flags = ["--disable-hot-restart", "--log-level", "warning", "--concurrency", "1"]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; work directory {work}", flush=True)
    with ExitStack() as stack:
        stack.enter_context(child([str(BIN / "mcp-gateway"), "sample-server", "echo", "--port", str(upstream_port)],
                                  work / "echo.log"))
        envoy = stack.enter_context(child([str(BIN / "envoy"), "-c", str(work / "direct-envoy.yaml"), *envoy_flags],
                                          work / "envoy-direct.log"))
        gateway = stack.enter_context(child([str(BIN / "mcp-gateway"), "serve", "--config", str(config_path)],
                                            work / "gateway.log"))
        gateway_envoy = stack.enter_context(child(
            [str(BIN / "envoy"), "-c", str(gateway_bootstrap), "--reject-unknown-dynamic-fields", *envoy_flags],
            work / "envoy-gateway.log"))
        wait_ok(upstream_url)
        wait_ok(f"http://127.0.0.1:{direct_ports['admin']}/ready")
        wait_ok(gateway_ready)
        targets = [
            Target("direct", upstream_url, "add"),
            Target("envoy", f"http://127.0.0.1:{direct_ports['listen']}/mcp", "add", proxies=[envoy.pid]),
            Target("gateway (envoy+router)", gateway_url, "e_add", proxies=[gateway.pid, gateway_envoy.pid]),
        ]
        for variant in args.contextforge:
            assert cf_bin is not None
            url, headers, pid = stack.enter_context(
                running_contextforge(cf_bin, work / f"contextforge-{variant}", upstream_url, CF_VARIANTS[variant]))
            targets.append(Target(f"contextforge {variant}", url, "echo-add", headers=headers, proxies=[pid]))
        measure_connects(targets, args.rounds)
        measure_load(wrk, work, targets, args.concurrency, args.seconds, args.repeats)
        rss = {target.name: rss_mb(target.proxies) for target in targets}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report(targets, args.concurrency, rss, args)
    shutil.rmtree(work, ignore_errors=True)  # kept when a step fails: the processes' logs are there
    return 0


if __name__ == "__main__":
    sys.exit(main())
