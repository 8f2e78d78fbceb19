"""Routed tools/call on a fast upstream: Envoy alone, Envoy's native MCP router, this gateway, ContextForge.

One run, loopback, one upstream fast enough that the proxy in front of it is the bottleneck:
bench/fast_upstream.py (raw ASGI on uvicorn with uvloop + httptools, a few tens of µs per call).
Each path is loaded by `wrk -t1 -c16` POSTing `tools/call` (one MCP session, opened through that
path with `initialize`), interleaved (A B C D, A B C D, ... --repeats times, --seconds each):

  envoy         client → Envoy (router filter only) → fast upstream              tool `echo`
  native        client → Envoy `mcp` + `mcp_router` filters → fast upstream      tool `fast__echo`
  gateway       client → Envoy + `mcp-gateway serve` (router + broker) → fast    tool `f_echo`
  contextforge  client → IBM ContextForge 1.0.7 (no auth, stateful) → fast       tool `echo-echo`

and, as a second table, the old setup of bench_router.py (the official SDK `echo` sample as the
upstream, 16 sessions), which measures the SDK server rather than the gateway:

  sdk-envoy     client → Envoy → SDK echo sample                                 tool `echo`
  sdk-gateway   client → Envoy + `mcp-gateway serve` → SDK echo sample           tool `e_echo`

Per path: rps of the best run, its p50/p99, the ratio to `envoy` and the p50 it adds, the CPU per
call of the Python proxy process (gateway or ContextForge, with its children) and of Envoy, over
every run, and the answers that were not 2xx. Every path's answer is checked to be the real tool
result with httpx before the load and after every run.

A full run (all paths, not --quick) rewrites the marked block of docs/benchmarks.md and
docs/benchmarks-throughput.png (--doc / --no-doc to force either way).

    .venv/bin/python -m bench bench_throughput
    .venv/bin/python bench/bench_throughput.py [--seconds 8] [--repeats 2] [--quick]
                                               [--paths envoy native gateway gateway-ext-proc contextforge
                                                       sdk-envoy sdk-gateway]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from bench.bench_peers import (  # noqa: E402
    CF_VARIANTS,
    contextforge_env,
    ensure_contextforge,
    mint_token,
    register_upstream,
)
from bench.harness import (  # noqa: E402
    ACCEPT,
    PROTOCOL,
    WrkResult,
    child,
    cpu_seconds,
    ensure_wrk,
    free_port,
    initialize,
    list_tools,
    rpc_result,
    run_wrk,
    stop_on_signals,
    wait_ok,
    wrk_script,
)
from mcp_gateway.config import parse_config  # noqa: E402
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap  # noqa: E402

BIN = Path(sys.executable).parent
DOC = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks-throughput.png"
BEGIN = "<!-- bench_throughput:begin (written by bench/bench_throughput.py; edits inside are overwritten) -->"
END = "<!-- bench_throughput:end -->"
TEXT = "hello"
CONNECTIONS = 16
CF_VARIANT = "no-auth"  # its best configuration in bench_peers: stateful sessions, no JWT to verify
ENVOY_FLAGS = ["--disable-hot-restart", "--log-level", "warning", "--concurrency", "1"]

MAIN = ("envoy", "native", "gateway", "gateway-modern", "gateway-ext-proc", "contextforge")
MODERN = "2026-07-28"  # a modern client: no session, the _meta envelope, Mcp-Method/Mcp-Name
SDK = ("sdk-envoy", "sdk-gateway")
LABELS = {
    "envoy": "Envoy → upstream (router filter only)",
    "native": "Envoy native mcp + mcp_router",
    "gateway": "Envoy + mcp-gateway (router + broker)",
    "gateway-modern": "Envoy + mcp-gateway, a 2026-07-28 client (no session)",
    "gateway-ext-proc": "Envoy + mcp-gateway, fast path off (ext_proc on every call)",
    "contextforge": f"ContextForge 1.0.7 ({CF_VARIANT}, stateful)",
    "sdk-envoy": "Envoy → SDK echo",
    "sdk-gateway": "Envoy + mcp-gateway → SDK echo",
}
SHORT = {"envoy": "Envoy direct", "native": "Envoy mcp_router", "gateway": "mcp-gateway",
         "gateway-modern": "gateway, modern client",
         "gateway-ext-proc": "ext_proc only",
         "contextforge": "ContextForge", "sdk-envoy": "Envoy → SDK", "sdk-gateway": "gateway → SDK"}


@dataclass
class Path_:
    """One way to reach an upstream, and what it measured."""

    key: str
    url: str
    tool: str
    envoy: list[int] = field(default_factory=list)  # pids: the Envoy in the path
    python: list[int] = field(default_factory=list)  # pids: the Python proxy (with its children)
    upstream: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # extra headers a request carries
    sessions: list[str] = field(default_factory=list)
    runs: list[WrkResult] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=lambda: {"python": 0.0, "envoy": 0.0, "upstream": 0.0})
    bad_checks: list[str] = field(default_factory=list)
    modern: bool = False  # calls as a 2026-07-28 client: no initialize, the _meta envelope

    @property
    def protocol(self) -> str:
        return MODERN if self.modern else PROTOCOL

    def best(self) -> WrkResult:
        return max(self.runs, key=lambda run: run.rps)

    def requests(self) -> int:
        return sum(run.requests for run in self.runs)

    def cpu_ms(self, kind: str) -> float | None:
        pids = {"python": self.python, "envoy": self.envoy, "upstream": self.upstream}[kind]
        return self.cpu[kind] / self.requests() * 1000 if pids and self.requests() else None

    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


# -- Envoy configs ------------------------------------------------------------------------------


NATIVE_FILTERS = """\
          - name: envoy.filters.http.mcp
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp}}
          - name: envoy.filters.http.mcp_router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.mcp_router.v3.McpRouter
              servers:
              - name: fast
                mcp_cluster: {{cluster: up, path: /mcp}}
              - name: fast2
                mcp_cluster: {{cluster: up, path: /mcp}}
"""
ROUTER_FILTER = """\
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


def envoy_bootstrap(listen_port: int, admin_port: int, upstream_port: int, native: bool) -> str:
    """A minimal Envoy: one listener, one cluster; the router filter only, or Envoy's own MCP pair.

    The native router gets two servers on the same upstream so that, like the gateway, it routes
    by a prefix (`fast__echo`) and rewrites the body: with one server it passes names unprefixed."""
    filters = (NATIVE_FILTERS if native else ROUTER_FILTER).format()
    return f"""\
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: up, timeout: 0s}}}}]
          http_filters:
{filters}  clusters:
  - name: up
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]
"""


def gateway_files(
    work: Path, fast_port: int, sdk_port: int | None, fast_path: bool = True
) -> tuple[Path, Path, str, int, str]:
    """The gateway's config, its Envoy bootstrap (rendered the standard way), client URL, Envoy's
    admin port, and the gateway's /readyz (on its own admin address, a free port).
    `fast_path=False`: every call through the ext_proc router, as before Envoy's Lua fast path."""
    work.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("broker", "router", "listen", "admin", "gateway_admin")}
    servers = f"""
  - name: fast
    url: http://127.0.0.1:{fast_port}/mcp
    prefix: f_"""
    if sdk_port is not None:
        servers += f"""
  - name: echo
    url: http://127.0.0.1:{sdk_port}/mcp
    prefix: e_"""
    config_text = f"""servers:{servers}
gateway:
  broker_listen: 127.0.0.1:{ports['broker']}
  router_listen: 127.0.0.1:{ports['router']}
  admin_listen: 127.0.0.1:{ports['gateway_admin']}
  envoy:
    fast_path:
      enabled: {"true" if fast_path else "false"}
"""
    config_path = work / "gateway.yaml"
    config_path.write_text(config_text)
    XdsWriter(work / "xds").write_initial(parse_config(config_text))
    bootstrap = work / "gateway-envoy.yaml"
    bootstrap.write_text(render_bootstrap(BootstrapParams(
        listen=f"127.0.0.1:{ports['listen']}", admin_port=ports["admin"], broker=f"127.0.0.1:{ports['broker']}",
        router=f"127.0.0.1:{ports['router']}", xds_dir=str(work / "xds"), access_log_path="/dev/null")))
    return (config_path, bootstrap, f"http://127.0.0.1:{ports['listen']}/mcp", ports["admin"],
            f"http://127.0.0.1:{ports['gateway_admin']}/readyz")


# -- checks and load ----------------------------------------------------------------------------


def call_body(tool: str, request_id: int = 1, *, modern: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": {"text": TEXT}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench-throughput", "version": "1"},
        }
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


_check_ids = iter(range(10**9, 2 * 10**9))  # never an id the load used on the same session


def check_call(path: Path_, session: str | None) -> str | None:
    """One tools/call with httpx: None if the answer is the tool's real result, else what it was."""
    headers = {"accept": ACCEPT, "mcp-protocol-version": path.protocol, **path.headers}
    if session:
        headers["mcp-session-id"] = session
    try:
        body = call_body(path.tool, next(_check_ids), modern=path.modern)
        response = httpx.post(path.url, json=body, headers=headers, timeout=30)
        message = rpc_result(response)
        result = message.get("result") or {}
        content = result.get("content") or [{}]
        if response.status_code == 200 and content[0].get("text") == TEXT and not result.get("isError"):
            return None
        return f"HTTP {response.status_code} {response.text[:300]}"
    except (httpx.HTTPError, ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"


def prepare(path: Path_, sessions: int) -> None:
    """Open the path's sessions through it and check that a call answers the real result."""
    for _ in range(0 if path.modern else sessions):
        session = initialize(path.url, path.headers, client_name=f"bench-throughput-{path.key}")
        if session:
            path.sessions.append(session)
    for session in path.sessions or [None]:  # on the gateway this also opens the backend session
        problem = check_call(path, session)
        if problem:
            raise RuntimeError(f"{path.key}: tools/call {path.tool} did not answer {TEXT!r}: {problem}")


def measure(wrk: str, work: Path, paths: Sequence[Path_], seconds: int, repeats: int, warmup: int,
            connections: int = CONNECTIONS) -> None:
    def script(p: Path_, run: int) -> Path:  # ids of run N start at N * 10^8: none is used twice
        return wrk_script(work / f"{p.key}-{run}.lua", call_body(p.tool, modern=p.modern),
                          {"Accept": ACCEPT, "Mcp-Protocol-Version": p.protocol, **p.headers}, p.sessions,
                          first_id=run * 10**8 + 1)

    for p in paths:
        run_wrk(wrk, p.url, script(p, 0), warmup, connections)
    for repeat in range(repeats):
        for p in paths:
            groups = {"python": p.python, "envoy": p.envoy, "upstream": p.upstream}
            before = {kind: cpu_seconds(pids) for kind, pids in groups.items()}
            result = run_wrk(wrk, p.url, script(p, repeat + 1), seconds, connections)
            for kind, pids in groups.items():
                p.cpu[kind] += cpu_seconds(pids) - before[kind]
            p.runs.append(result)
            problem = check_call(p, p.sessions[0] if p.sessions else None)
            if problem:
                p.bad_checks.append(problem)
                print(f"  {p.key}: the check after run {repeat + 1} failed: {problem}", flush=True)
            print(f"  run {repeat + 1}/{repeats} {p.key:<13} {result.rps:>8.0f} rps  p50 {result.p50:.2f} ms  "
                  f"p99 {result.p99:.2f} ms  non-2xx {result.errors}", flush=True)


# -- report -------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _us(value_ms: float | None) -> str:
    return "-" if value_ms is None else f"{value_ms * 1000:.1f}"


def _per_second(path: Path_) -> str:
    seconds = sum(run.seconds for run in path.runs)
    return f"{path.cpu['python'] * 1000 / seconds:.1f}" if seconds else "-"


def table(paths: Sequence[Path_], reference: Path_ | None) -> list[str]:
    lines = [
        "| path | rps | x Envoy-direct | p50 ms | p50 added | p99 ms | Python CPU ms/call | Envoy CPU ms/call "
        "| upstream CPU ms/call | non-2xx | rps of each run |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for p in paths:
        best = p.best()
        ratio = added = "-"
        if reference is not None:
            share = best.rps / reference.best().rps
            ratio = f"{share:.2f}" if share >= 0.1 else f"{share:.3f}"
            added = f"{best.p50 - reference.best().p50:+.2f}"
        runs = " / ".join(f"{run.rps:.0f}" for run in p.runs)
        lines.append(
            f"| {LABELS[p.key]} | {best.rps:,.0f} | {ratio} | {best.p50:.2f} | {added} | {best.p99:.2f} "
            f"| {_ms(p.cpu_ms('python'))} | {_ms(p.cpu_ms('envoy'))} | {_ms(p.cpu_ms('upstream'))} "
            f"| {p.errors()} | {runs} |")
    return lines


def ratios(by_key: dict[str, Path_]) -> list[str]:
    lines = []
    gateway = by_key.get("gateway")
    names = {"native": "native mcp_router", "contextforge": "ContextForge",
             "gateway-ext-proc": "the same gateway with the fast path off"}
    for other in ("native", "contextforge", "gateway-ext-proc"):
        peer = by_key.get(other)
        if gateway is None or peer is None:
            continue
        rps = gateway.best().rps / peer.best().rps
        mine = sum(v for v in (gateway.cpu_ms("python"), gateway.cpu_ms("envoy")) if v is not None)
        theirs = sum(v for v in (peer.cpu_ms("python"), peer.cpu_ms("envoy")) if v is not None)
        name = names[other]
        cpu = f"{mine / theirs:.1f}x theirs" if mine >= theirs else f"1/{theirs / mine:.0f} of theirs"
        lines.append(f"- gateway / {name}: **{rps:.2f}x** the rps; proxy CPU per call "
                     f"{mine:.3f} ms (gateway process + its Envoy) vs {theirs:.3f} ms ({cpu})")
    modern = by_key.get("gateway-modern")
    if gateway is not None and modern is not None:
        lines.append(f"- Python CPU per routed call, same gateway and upstream: legacy client "
                     f"{_us(gateway.cpu_ms('python'))} µs, 2026-07-28 client {_us(modern.cpu_ms('python'))} µs; "
                     f"Python CPU per second of load (what stays when no call passes through Python: "
                     f"the renewals, the batched access log, the gateway's own timers): legacy "
                     f"{_per_second(gateway)} ms/s, 2026-07-28 {_per_second(modern)} ms/s")
    return lines


def report(paths: Sequence[Path_], args: argparse.Namespace, started: datetime.datetime,
           load: tuple[str, str]) -> list[str]:
    by_key = {p.key: p for p in paths}
    main = [p for p in paths if p.key in MAIN]
    sdk = [p for p in paths if p.key in SDK]
    lines = [
        f"Run of **{started:%Y-%m-%d %H:%M} UTC**, `{args.command}`{' (what `make bench` runs)' if args.as_make else ''}: wrk -t1 -c{args.connections}, "
        f"{args.seconds:g} s per run, {args.repeats} run(s) per path interleaved, best run shown "
        "(CPU per call: over every run). "
        f"Machine: {os.cpu_count()} cores shared by everything (wrk, the upstream, every proxy, and "
        f"whatever else runs); load average {load[0]} before, {load[1]} after. Python {platform.python_version()}.",
        "",
    ]
    if main:
        lines += ["Fast upstream (bench/fast_upstream.py on uvicorn + uvloop + httptools), one MCP session:", ""]
        lines += table(main, by_key.get("envoy"))
        if ratios(by_key):
            lines += ["", *ratios(by_key)]
    if sdk:
        if main:
            lines.append("")
        lines += [f"**SDK echo upstream: measures the SDK server, not the gateway** "
                  f"(`mcp-gateway sample-server echo`, {args.sdk_sessions} sessions round robin):", ""]
        lines += table(sdk, by_key.get("sdk-envoy"))
    bad = [f"- {p.key}: {len(p.bad_checks)} failed check(s) after a run: {p.bad_checks[0]}" for p in paths if p.bad_checks]
    if bad:
        lines += ["", "**Checks that failed:**", *bad]
    return lines


def write_doc(lines: list[str]) -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC}: no {BEGIN} … {END} block; not written")
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n" + "\n".join(lines) + f"\n{END}{tail}")
    print(f"wrote {DOC.relative_to(REPO)}")


def plot(paths: Sequence[Path_], started: datetime.datetime) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = [p for p in paths if p.key in MAIN] or list(paths)
    names = [SHORT[p.key] for p in shown]
    rps = [p.best().rps for p in shown]
    p50 = [p.best().p50 for p in shown]
    p99 = [p.best().p99 for p in shown]
    colours = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"][: len(shown)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = left.bar(names, rps, color=colours)
    left.bar_label(bars, labels=[f"{value:,.0f}" for value in rps], fontsize=8)
    left.set_ylabel("tools/call per second (best run)")
    left.set_title(f"Throughput, wrk -c{CONNECTIONS}")
    positions = range(len(shown))
    width = 0.38
    low = right.bar([x - width / 2 for x in positions], p50, width, label="p50", color="#1f77b4")
    high = right.bar([x + width / 2 for x in positions], p99, width, label="p99", color="#ff7f0e")
    right.bar_label(low, labels=[f"{v:.1f}" for v in p50], fontsize=7)
    right.bar_label(high, labels=[f"{v:.1f}" for v in p99], fontsize=7)
    right.set_xticks(list(positions), names)
    right.set_yscale("log")
    right.set_ylim(bottom=min(p50) / 2, top=max(p99) * 2)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    right.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(plain)
    right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.set_ylabel("latency, ms (log scale)")
    right.set_title("Latency of the same run")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    figure.suptitle(f"Routed tools/call on a fast upstream, {started:%Y-%m-%d} (2 shared cores, loopback)", fontsize=10)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    plt.close(figure)
    print(f"wrote {PLOT.relative_to(REPO)}")


# -- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration of each run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per path")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 3 s")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections (1: the latency a call adds, without queueing)")
    parser.add_argument("--paths", nargs="+", choices=[*MAIN, *SDK], default=[*MAIN, *SDK])
    parser.add_argument("--sdk-sessions", type=int, default=16, help="sessions of the SDK echo rows")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="rewrite docs/benchmarks.md's block and the PNG (default: on a full run)")
    args = parser.parse_args()
    full = not args.quick and set(args.paths) == {*MAIN, *SDK} and args.connections == CONNECTIONS
    if args.quick:
        args.repeats, args.seconds = 1, 3
    if args.doc is None:
        args.doc = full
    args.as_make = full and args.seconds == 8 and args.repeats == 2
    args.command = ".venv/bin/python -m bench bench_throughput" if args.as_make else \
        " ".join([".venv/bin/python bench/bench_throughput.py", *sys.argv[1:]])
    return args


def main() -> int:
    args = parse_args()
    stop_on_signals()
    missing = [m for m in ("uvloop", "httptools", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: install the lockfile (`make install`; the 'bench' extra)")
    wrk = ensure_wrk()
    selected = [key for key in (*MAIN, *SDK) if key in args.paths]
    cf_bin = ensure_contextforge() if "contextforge" in selected else None
    started = datetime.datetime.now(datetime.UTC)
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load_before}; work directory {work}", flush=True)
    envoy = str(BIN / "envoy")
    paths: list[Path_] = []
    with ExitStack() as stack:
        fast_port = free_port()
        fast = stack.enter_context(child([sys.executable, str(REPO / "bench" / "fast_upstream.py"), "--port", str(fast_port)],
                                         work / "fast.log"))
        wait_ok(f"http://127.0.0.1:{fast_port}/mcp", process=fast)
        sdk_port = None
        if {"sdk-envoy", "sdk-gateway"} & set(selected):
            sdk_port = free_port()
            sdk = stack.enter_context(child([str(BIN / "mcp-gateway"), "sample-server", "echo", "--port", str(sdk_port)],
                                            work / "sdk-echo.log"))
            wait_ok(f"http://127.0.0.1:{sdk_port}/mcp", process=sdk)

        def plain_envoy(name: str, upstream_port: int, native: bool) -> tuple[str, int]:
            listen, admin = free_port(), free_port()
            config = work / f"envoy-{name}.yaml"
            config.write_text(envoy_bootstrap(listen, admin, upstream_port, native))
            process = stack.enter_context(child([envoy, "-c", str(config), *ENVOY_FLAGS], work / f"envoy-{name}.log"))
            wait_ok(f"http://127.0.0.1:{admin}/ready", process=process)
            return f"http://127.0.0.1:{listen}/mcp", process.pid

        if "envoy" in selected:
            url, pid = plain_envoy("direct", fast_port, native=False)
            paths.append(Path_("envoy", url, "echo", envoy=[pid], upstream=[fast.pid]))
        if "native" in selected:
            url, pid = plain_envoy("native", fast_port, native=True)
            paths.append(Path_("native", url, "fast__echo", envoy=[pid], upstream=[fast.pid]))
        if {"gateway", "gateway-modern", "sdk-gateway"} & set(selected):
            config_path, bootstrap, gateway_url, admin, gateway_ready = gateway_files(
                work, fast_port, sdk_port if "sdk-gateway" in selected else None)
            gateway = stack.enter_context(child([str(BIN / "mcp-gateway"), "serve", "--config", str(config_path)],
                                                work / "gateway.log"))
            gateway_envoy = stack.enter_context(child(
                [envoy, "-c", str(bootstrap), "--reject-unknown-dynamic-fields", *ENVOY_FLAGS], work / "envoy-gateway.log"))
            wait_ok(f"http://127.0.0.1:{admin}/ready", process=gateway_envoy)
            wait_ok(gateway_ready, process=gateway)
            if "gateway" in selected:
                paths.append(Path_("gateway", gateway_url, "f_echo", envoy=[gateway_envoy.pid],
                                   python=[gateway.pid], upstream=[fast.pid]))
            if "gateway-modern" in selected:  # the same gateway and upstream, a modern client
                paths.append(Path_("gateway-modern", gateway_url, "f_echo", envoy=[gateway_envoy.pid],
                                   python=[gateway.pid], upstream=[fast.pid], modern=True,
                                   headers={"Mcp-Method": "tools/call", "Mcp-Name": "f_echo"}))
        if "gateway-ext-proc" in selected:
            config_path, bootstrap, slow_url, admin, slow_ready = gateway_files(
                work / "ext-proc", fast_port, None, fast_path=False)
            slow_gateway = stack.enter_context(child([str(BIN / "mcp-gateway"), "serve", "--config", str(config_path)],
                                                     work / "gateway-ext-proc.log"))
            slow_envoy = stack.enter_context(child(
                [envoy, "-c", str(bootstrap), "--reject-unknown-dynamic-fields", *ENVOY_FLAGS],
                work / "envoy-gateway-ext-proc.log"))
            wait_ok(f"http://127.0.0.1:{admin}/ready", process=slow_envoy)
            wait_ok(slow_ready, process=slow_gateway)
            paths.append(Path_("gateway-ext-proc", slow_url, "f_echo", envoy=[slow_envoy.pid],
                               python=[slow_gateway.pid], upstream=[fast.pid]))
        if "contextforge" in selected:
            assert cf_bin is not None
            paths.append(start_contextforge(stack, cf_bin, work, f"http://127.0.0.1:{fast_port}/mcp", fast.pid))
        if "sdk-envoy" in selected:
            assert sdk_port is not None
            url, pid = plain_envoy("sdk", sdk_port, native=False)
            paths.append(Path_("sdk-envoy", url, "echo", envoy=[pid], upstream=[sdk.pid]))
        if "sdk-gateway" in selected:
            paths.append(Path_("sdk-gateway", gateway_url, "e_echo", envoy=[gateway_envoy.pid],
                               python=[gateway.pid], upstream=[sdk.pid]))
        for p in paths:
            prepare(p, args.sdk_sessions if p.key in SDK else 1)
        print("every path answers tools/call with the tool's result; measuring", flush=True)
        measure(wrk, work, paths, args.seconds, args.repeats, warmup=1 if args.quick else 2,
                connections=args.connections)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = report(paths, args, started, (load_before, load_after))
    print("\n" + "\n".join(lines))
    if args.doc:
        write_doc(lines)
        plot(paths, started)
    if any(p.errors() or p.bad_checks for p in paths if p.key != "contextforge"):
        print("\nFAILED: non-2xx answers or failed checks on a path of ours or Envoy's (logs kept in the work directory)")
        return 1
    shutil.rmtree(work, ignore_errors=True)  # kept when a step fails: the processes' logs are there
    return 0


def start_contextforge(stack: ExitStack, cf_bin: Path, work: Path, upstream_url: str, upstream_pid: int) -> Path_:
    """ContextForge (its best configuration here) with the fast upstream registered."""
    port = free_port()
    jwt_secret = os.urandom(32).hex()
    home = work / "contextforge"
    home.mkdir()
    env = contextforge_env(home, port, jwt_secret, CF_VARIANTS[CF_VARIANT])
    process = stack.enter_context(child([str(cf_bin / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)],
                                        home / "contextforge.log", env=env))
    base = f"http://127.0.0.1:{port}"
    wait_ok(f"{base}/health", seconds=180, process=process)  # it migrates a fresh database first
    register_upstream(base, mint_token(cf_bin, jwt_secret), upstream_url)
    url = f"{base}/mcp/"
    session = initialize(url, client_name="bench-throughput-list")
    names = list_tools(url, {"mcp-session-id": session} if session else {})
    tool = next((name for name in names if re.fullmatch(r"[\w.-]*-echo", name)), None)
    if tool is None:
        raise RuntimeError(f"contextforge: no echo tool in {names}")
    return Path_("contextforge", url, tool, python=[process.pid], upstream=[upstream_pid])


if __name__ == "__main__":
    sys.exit(main())
