"""The fast-path spike: what each way of taking routed calls off Python costs, through real Envoy,
on the fast upstream (bench/fast_upstream.py). Its figures are in docs/router.md ("Fast path:
the spike"). Not part of `make bench` (bench_throughput.py measures the chosen design against
Envoy, its native MCP router and ContextForge).

Part 1, Envoy's CPU per call of the pieces a Lua fast path is made of, each in its own Envoy
(one worker) in front of the upstream, wrk -c16 POSTing tools/call:

  plain            router filter only (the floor)
  lua-body         a Lua filter that buffers the body
  lua-scan         ... and runs the fast path's strict JSON check (envoy/fast_path.lua)
  lua-apply        ... and applies a decision: 9 header writes, the body rewritten, route cache cleared
  lua-metadata     one dynamic-metadata write on the request, one read on the answer
  lua-answer       the answer's headers walked (x-mcp-* stripped), the session header replaced
  mcp-parser       Envoy's own `mcp` parser filter (design B's first half)

Part 2, the ext_proc router on every call (the fast path off), one router process vs two behind
the same Envoy cluster (sessions in Redis): the "several workers" complement.

    .venv/bin/python bench/spike_fast_path.py [--seconds 3] [--rounds 2] [--skip-workers]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench.harness import (  # noqa: E402
    ACCEPT,
    PROTOCOL,
    child,
    cpu_seconds,
    ensure_wrk,
    free_port,
    initialize,
    run_wrk,
    wait_ok,
    wrk_script,
)
from mcp_gateway.config import parse_config  # noqa: E402
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap  # noqa: E402

BIN = Path(sys.executable).parent
SCRIPT = (REPO / "envoy" / "fast_path.lua").read_text()
SCAN = SCRIPT.split("-- Decisions, per worker")[0]  # the JSON check and nothing else
LIMITS = "local L = {max_depth = 64, max_string = 1048576}\n"
BODY = 'local b = h:body(); local t = b:getBytes(0, b:length())'

PIECES: dict[str, dict[str, Any]] = {
    "plain": {},
    "lua-body": {"lua": f"function envoy_on_request(h) {BODY} end"},
    "lua-scan": {"lua": SCAN + LIMITS + f"function envoy_on_request(h) {BODY}; assert(read_call(t, L)) end"},
    "lua-apply": {"lua": SCAN + LIMITS + f"""function envoy_on_request(h) {BODY}; local c = assert(read_call(t, L))
  b:setBytes(string.sub(t, 1, c.name_first - 1) .. c.name .. string.sub(t, c.name_last + 1))
  local hd = h:headers()
  for _, k in ipairs({{"x-mcp-servername", "x-mcp-fast-path", "x-mcp-method", "x-mcp-toolname",
                      "x-spike-session", "x-spike-authorization", "mcp-name"}}) do hd:replace(k, "v") end
  hd:replace(":authority", "127.0.0.1"); hd:replace(":path", "/mcp")
  h:clearRouteCache()
end"""},
    "lua-metadata": {"lua": """function envoy_on_request(h)
  h:streamInfo():dynamicMetadata():set("mcp_gateway", "call", string.rep("m", 90) .. "\\n1\\n42")
end
function envoy_on_response(h) local m = h:streamInfo():dynamicMetadata():get("mcp_gateway") end"""},
    "lua-answer": {"lua": """function envoy_on_response(h)
  local hd = h:headers(); local drop = {}
  for k, _ in pairs(hd) do if string.sub(k, 1, 6) == "x-mcp-" then drop[#drop + 1] = k end end
  for _, k in ipairs(drop) do hd:remove(k) end
  hd:replace("mcp-session-id", "token")
end"""},
    "mcp-parser": {"mcp": True},
}


def lua_filter(code: str) -> dict[str, Any]:
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": code}}}


def piece_envoy(port: int, admin: int, upstream: int, piece: dict[str, Any]) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    if piece.get("mcp"):
        filters.append({"name": "envoy.filters.http.mcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp"}})
    if piece.get("lua"):
        filters.append(lua_filter(piece["lua"]))
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "spike",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "up", "timeout": "0s"}}]}]},
        "http_filters": filters,
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "spike", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": manager}]}]}],
            "clusters": [{"name": "up", "type": "STATIC", "load_assignment": {
                "cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}}],
        },
    }


def call(tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "hello"}}}


def pieces(wrk: str, work: Path, upstream: int, seconds: int, rounds: int) -> dict[str, list[float]]:
    session = initialize(f"http://127.0.0.1:{upstream}/mcp")
    assert session, "the fast upstream gave no session"
    script = wrk_script(work / "pieces.lua", call("echo"), {"Accept": ACCEPT, "Mcp-Protocol-Version": PROTOCOL}, [session])
    costs: dict[str, list[float]] = {name: [] for name in PIECES}
    for _ in range(rounds):  # interleaved: background load spreads over every piece
        for name, piece in PIECES.items():
            port, admin = free_port(), free_port()
            config = work / f"{name}.yaml"
            config.write_text(yaml.safe_dump(piece_envoy(port, admin, upstream, piece)))
            with ExitStack() as stack:
                envoy = stack.enter_context(child(
                    [str(BIN / "envoy"), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                     "--log-level", "error"], work / f"{name}.log"))
                wait_ok(f"http://127.0.0.1:{admin}/ready", process=envoy)
                before = cpu_seconds([envoy.pid])
                result = run_wrk(wrk, f"http://127.0.0.1:{port}/mcp", script, seconds, 16)
                spent = cpu_seconds([envoy.pid]) - before
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} failed answers (see {work / (name + '.log')})")
                costs[name].append(spent / result.requests * 1000)
    return costs


def workers(wrk: str, work: Path, upstream: int, seconds: int, count: int) -> tuple[float, float]:
    """rps and gateway CPU per call with `count` router processes (fast path off, Redis store)."""
    redis_port = free_port()
    ports = {name: free_port() for name in ("broker", "listen", "admin", "status")}
    routers = [free_port() for _ in range(count)]
    keys = "spike-" + "k" * 32
    base = f"""servers:
  - name: fast
    url: http://127.0.0.1:{upstream}/mcp
    prefix: f_
gateway:
  broker_listen: 127.0.0.1:{ports['broker']}
  router_listen: 127.0.0.1:%d
  admin_listen: 127.0.0.1:{ports['status']}
  sessions: {{store: redis, redis_url: "redis://127.0.0.1:{redis_port}/0", keys: ["{keys}"]}}
  envoy: {{fast_path: {{enabled: false}}}}
"""
    with ExitStack() as stack:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        stack.enter_context(child([redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], work / f"redis-{count}.log"))
        time.sleep(0.3)
        pids = []
        for index, port in enumerate([0, *routers]):
            role = "broker" if index == 0 else "router"
            path = work / f"gateway-{count}-{index}.yaml"
            path.write_text(base % (port or routers[0]))
            pids.append(stack.enter_context(child([str(BIN / "mcp-gateway"), "serve", "--role", role, "--config", str(path)],
                                                  work / f"gateway-{count}-{index}.log")).pid)
        xds = work / f"xds-{count}"
        XdsWriter(xds).write_initial(parse_config(base % routers[0]))
        bootstrap = yaml.safe_load(render_bootstrap(BootstrapParams(
            listen=f"127.0.0.1:{ports['listen']}", admin_port=ports["admin"], broker=f"127.0.0.1:{ports['broker']}",
            router=f"127.0.0.1:{routers[0]}", xds_dir=str(xds), access_log_path="/dev/null")))
        cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "mcp_router")
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in routers]
        config = work / f"envoy-{count}.yaml"
        config.write_text(yaml.safe_dump(bootstrap))
        envoy = stack.enter_context(child([str(BIN / "envoy"), "-c", str(config), "--concurrency", "1",
                                           "--disable-hot-restart", "--log-level", "error",
                                           "--reject-unknown-dynamic-fields"], work / f"envoy-{count}.log"))
        wait_ok(f"http://127.0.0.1:{ports['admin']}/ready", process=envoy)
        url = f"http://127.0.0.1:{ports['listen']}/mcp"
        wait_ok(f"http://127.0.0.1:{ports['status']}/readyz")
        session = initialize(url)
        assert session, "no gateway session"
        answer = httpx.post(url, json=call("f_echo"), headers={"accept": ACCEPT, "mcp-session-id": session,
                                                               "mcp-protocol-version": PROTOCOL}, timeout=30)
        assert answer.status_code == 200 and "hello" in answer.text, answer.text
        script = wrk_script(work / f"workers-{count}.lua", call("f_echo"),
                            {"Accept": ACCEPT, "Mcp-Protocol-Version": PROTOCOL}, [session])
        before = cpu_seconds(pids)
        result = run_wrk(wrk, url, script, seconds, 16)
        spent = cpu_seconds(pids) - before
        if result.errors:
            raise RuntimeError(f"{count} routers: {result.errors} failed answers")
        return result.rps, spent / result.requests * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="spike-fast-path-"))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with ExitStack() as stack:
        upstream = free_port()
        fast = stack.enter_context(child([sys.executable, str(REPO / "bench" / "fast_upstream.py"), "--port", str(upstream)],
                                         work / "fast.log"))
        wait_ok(f"http://127.0.0.1:{upstream}/mcp", process=fast)
        costs = pieces(wrk, work, upstream, args.seconds, args.rounds)
        floor = min(costs["plain"])
        print("\n| piece | Envoy CPU ms/call (min of rounds) | above the floor |\n|---|--:|--:|")
        for name, values in costs.items():
            print(f"| {name} | {min(values):.4f} | {min(values) - floor:+.4f} |")
        if not args.skip_workers:
            print("\n| ext_proc on every call | rps | gateway CPU ms/call |\n|---|--:|--:|")
            for count in (1, 2):
                rps, cpu = workers(wrk, work, upstream, args.seconds * 2, count)
                print(f"| {count} router process{'es' if count > 1 else ''} | {rps:,.0f} | {cpu:.3f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
