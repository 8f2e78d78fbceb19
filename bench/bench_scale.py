"""The gateway at scale, through a real Envoy + `mcp-gateway serve` (memory session store):

  sessions  N concurrent sessions (default 10,000), each initialize + notifications/initialized
            + one routed tools/call (a backend session each): errors, wall time, gateway RSS per
            idle session (and the Python-level size of what the gateway keeps per session)
  fanout    notifications/tools/list_changed to S open GET /mcp streams (default 5,000, through
            Envoy): from the upstream's list change (a `dyn_add_tool` call on the `dynamic`
            sample) until the last stream has the notification
  discover  100 upstreams federated: from spawning the gateway until /readyz and /status say
            all 100 are ready
  list      tools/list latency through Envoy with 1, 10, 50 and 100 upstreams (interleaved)

Upstreams: bench/many_upstreams.py (one uvicorn process, 100 raw-ASGI MCP endpoints, 2 tools
each) for sessions, discover and list; the official-SDK `dynamic` sample for fanout. Loopback
only. Each part prints its figure next to its goal, met or not; the table at the end repeats them.

    .venv/bin/python bench/bench_scale.py [--quick] [--parts sessions fanout discover list]
    .venv/bin/python -m bench bench_scale          # (make bench runs it with the defaults)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src"), str(HERE)]

from many_upstreams import READY_LINE_PREFIX as MANY_READY  # noqa: E402
from many_upstreams import endpoint_url  # noqa: E402
from scale_stack import (  # noqa: E402
    ACCEPT,
    BIN,
    PROTOCOL,
    Stack,
    cpu_seconds,
    log_event_time,
    own_cpu_seconds,
    raise_nofile,
    rss_kib,
    running_stack,
    upstream_process,
    use_bytecode_cache,
    wait_until_ready,
    warm_bytecode_cache,
)

from mcp_gateway.samples import READY_LINE_PREFIX as SAMPLE_READY  # noqa: E402

CLIENT = {"capabilities": {}, "clientInfo": {"name": "bench-scale", "version": "1"}}
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": PROTOCOL, **CLIENT}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
HEADERS = {"accept": ACCEPT, "content-type": "application/json"}
# Between "all streams open" and the list change (a profiler can attach meanwhile).
SETTLE_SECONDS = float(os.environ.get("BENCH_SCALE_SETTLE", "1"))
HOLD_SECONDS = float(os.environ.get("BENCH_SCALE_HOLD", "0"))  # streams stay open after it
PART_SECONDS = {"sessions": 1200, "fanout": 600, "discover": 120, "list": 600}


@dataclass
class Row:
    figure: str
    value: str
    goal: str
    met: bool | None  # None: no goal, informational

    def verdict(self) -> str:
        return "-" if self.met is None else ("met" if self.met else "NOT MET")


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def add(self, figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        row = Row(figure, value, goal, met)
        self.rows.append(row)
        print(f"  {figure}: {value}" + (f"   (goal {goal}: {row.verdict()})" if goal else ""),
              flush=True)

    def table(self) -> str:
        width = max(len(r.figure) for r in self.rows)
        vwidth = max(len(r.value) for r in self.rows)
        gwidth = max(len(r.goal) for r in self.rows)
        lines = [f"{'figure':<{width}}  {'value':>{vwidth}}  {'goal':<{gwidth}}  verdict"]
        for r in self.rows:
            lines.append(f"{r.figure:<{width}}  {r.value:>{vwidth}}  {r.goal:<{gwidth}}  {r.verdict()}")
        return "\n".join(lines)


def session_headers(session: str) -> dict[str, str]:
    return {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL}


async def open_session(http: httpx.AsyncClient, url: str) -> str:
    answer = await http.post(url, json=INITIALIZE, headers=HEADERS)
    if answer.status_code != 200 or "mcp-session-id" not in answer.headers:
        raise RuntimeError(f"initialize: HTTP {answer.status_code} {answer.text[:200]}")
    session = answer.headers["mcp-session-id"]
    done = await http.post(url, json=INITIALIZED, headers=session_headers(session))
    if done.status_code != 202:
        raise RuntimeError(f"notifications/initialized: HTTP {done.status_code} {done.text[:200]}")
    return session


async def call_tool(http: httpx.AsyncClient, url: str, session: str, name: str,
                    arguments: dict[str, Any], request_id: int = 1) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}
    answer = await http.post(url, json=body, headers=session_headers(session))
    if answer.status_code != 200:
        raise RuntimeError(f"tools/call {name}: HTTP {answer.status_code} {answer.text[:200]}")
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        for line in answer.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == request_id:
                    return dict(message)
        raise RuntimeError(f"tools/call {name}: no answer in the stream")
    return dict(answer.json())


POOL_SIZE = 25  # connections per httpx client: httpcore's pool costs O(connections) per request


@asynccontextmanager
async def client_pool(concurrency: int, *, seconds: float) -> AsyncIterator[list[httpx.AsyncClient]]:
    """HTTP/1.1 clients with `concurrency` connections in all, POOL_SIZE each: one httpx client
    with 300 connections spent ~29 ms of CPU per session here (pool bookkeeping), more than
    the gateway's ~10 ms, and so measured the client."""
    count = max(1, -(-concurrency // POOL_SIZE))
    size = -(-concurrency // count)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            httpx.AsyncClient(limits=limits, timeout=seconds, trust_env=False))
            for _ in range(count)]


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. sessions ----------------------------------------------------------------------------------


def python_size_per_session(count: int) -> float:
    """Bytes of Python objects the gateway keeps per idle session, built the way it builds them:
    the memory store's record (sealed-token session id, client capabilities + clientInfo, one
    backend mapping) and the router's per-session cache entry. tracemalloc, in this process."""
    from mcp_gateway.sessions import SessionTokens
    from mcp_gateway.sessions.memory_store import MemorySessionStore
    from mcp_gateway.sessions.store import client_of

    tokens = SessionTokens([b"k" * 32])
    sids = [c.session_id for c in (tokens.verify(tokens.issue(PROTOCOL)) for _ in range(count))
            if c is not None]
    backend_ids = [f"{i:032x}" for i in range(count)]  # many_upstreams' ids: 32 hex chars

    async def build() -> tuple[MemorySessionStore, dict[str, bool]]:
        store = MemorySessionStore()
        askable: dict[str, bool] = {}
        for sid, backend in zip(sids, backend_ids, strict=True):
            await store.create(sid, 3600, client=client_of(INITIALIZE["params"]))  # type: ignore[arg-type]
            await store.set_backend(sid, "many", backend)
            askable[sid] = False
        return store, askable

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = trio.run(build)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del kept
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    # The ids existed before the snapshot; in the gateway they are new per session too.
    ids = sum(sys.getsizeof(s) for s in sids) + sum(sys.getsizeof(b) for b in backend_ids)
    return (grown + ids) / count


async def part_sessions(base_url: str, upstream: trio.Process, work: Path, results: Results,
                        *, sessions: int,
                        concurrency: int) -> None:
    print(f"\n[sessions] {sessions} sessions, {concurrency} in flight, through Envoy", flush=True)
    servers = [("many", endpoint_url(base_url, 0), "m_")]
    async with running_stack(servers, work / "sessions") as stack:
        async with client_pool(concurrency, seconds=120) as clients:
            http = clients[0]
            # Warm-up: every code path once (imports, pools), then the baseline.
            for index in range(20):
                session = await open_session(http, stack.url)
                await call_tool(http, stack.url, session, "m_add", {"a": index, "b": 1})
            await trio.sleep(2)
            rss_before, envoy_before = rss_kib(stack.gateway.pid), rss_kib(stack.envoy.pid)
            pids = {"gateway": stack.gateway.pid, "Envoy": stack.envoy.pid, "upstream": upstream.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu_before["bench client"] = own_cpu_seconds()
            errors: dict[str, int] = {}
            limiter = trio.CapacityLimiter(concurrency)
            done = 0

            async def one(index: int) -> None:
                nonlocal done
                http = clients[index % len(clients)]
                async with limiter:
                    try:
                        session = await open_session(http, stack.url)
                        answer = await call_tool(http, stack.url, session, "m_add",
                                                 {"a": index, "b": 1})
                        if answer.get("result", {}).get("structuredContent") != {"sum": index + 1}:
                            raise RuntimeError(f"wrong answer {str(answer)[:200]}")
                    except Exception as exc:  # counted, the run goes on
                        key = f"{type(exc).__name__}: {str(exc)[:80]}"
                        errors[key] = errors.get(key, 0) + 1
                    done += 1

            started = trio.current_time()
            with trio.move_on_after(PART_SECONDS["sessions"]) as scope:
                async with trio.open_nursery() as nursery:
                    for index in range(sessions):
                        nursery.start_soon(one, index)
            wall = trio.current_time() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            cpu["bench client"] = own_cpu_seconds() - cpu_before["bench client"]
        # Idle now (client connections closed); let the gateway settle before reading RSS.
        await trio.sleep(3)
        rss_after, envoy_after = rss_kib(stack.gateway.pid), rss_kib(stack.envoy.pid)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as probe:
            status = (await probe.get(f"{stack.status}/status")).json()
    failed = sum(errors.values()) + (sessions - done)
    results.add(f"sessions: errors of {sessions}", f"{failed}", "0", failed == 0)
    for key, count in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {count} x {key}")
    if scope.cancelled_caught:
        print(f"    stopped after {PART_SECONDS['sessions']} s with {sessions - done} not done")
    results.add("sessions: wall time", f"{wall:.1f} s ({sessions / wall:.0f} sessions/s)")
    results.add("sessions: CPU per session",
                ", ".join(f"{name} {seconds / sessions * 1e3:.1f} ms" for name, seconds in cpu.items()))
    per_session = (rss_after - rss_before) * 1024 / sessions
    results.add("sessions: gateway RSS per idle session",
                f"{per_session / 1024:.1f} KiB ({rss_before // 1024} → {rss_after // 1024} MiB)",
                "≤ 20 KiB", per_session <= 20 * 1024)
    results.add("sessions: Envoy RSS per idle session",
                f"{(envoy_after - envoy_before) / sessions:.1f} KiB")
    python_size = await trio.to_thread.run_sync(python_size_per_session, min(sessions, 10_000))
    results.add("sessions: Python-level size per session", f"{python_size / 1024:.2f} KiB",
                "≤ 20 KiB", python_size <= 20 * 1024)
    print(f"    /status openStreams {status.get('openStreams')}, "
          f"backendStreams {status.get('backendStreams')}")


# -- 2. fan-out -----------------------------------------------------------------------------------

MARK = b"notifications/tools/list_changed"


@dataclass
class StreamStats:
    opened: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)


async def hold_stream(host: str, port: int, session: str, stats: StreamStats,
                      release: trio.Event, opening: trio.CapacityLimiter) -> None:
    """GET /mcp on a raw socket (HTTP/1.1); note when the list_changed event arrives."""
    request = (
        f"GET /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: {PROTOCOL}\r\n\r\n"
    ).encode()
    try:
        async with opening:
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(request)
            buffer = b""
            while b": stream open" not in buffer:
                if b"\r\n\r\n" in buffer and not buffer.startswith(b"HTTP/1.1 200"):
                    break  # refused (Envoy keeps the connection open after its 503)
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buffer += chunk
            status = buffer.split(b"\r\n", 1)[0].decode(errors="replace")
            if b": stream open" not in buffer:
                stats.refused[status] = stats.refused.get(status, 0) + 1
                await stream.aclose()
                return
            stats.opened += 1
    except OSError as exc:
        key = type(exc).__name__
        stats.refused[key] = stats.refused.get(key, 0) + 1
        return
    async with stream:
        tail = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            tail = tail[-64:] + chunk
            if MARK in tail:
                stats.arrivals.append(trio.current_time())
                break
        await release.wait()


async def part_fanout(work: Path, results: Results, *, streams: int, concurrency: int) -> None:
    print(f"\n[fanout] {streams} GET /mcp streams through Envoy, `dynamic` sample upstream",
          flush=True)
    argv = [str(BIN / "mcp-gateway"), "sample-server", "dynamic", "--port", "0"]
    async with (
        upstream_process(argv, work / "dynamic.log", SAMPLE_READY) as (dyn_url, dyn),
        running_stack([("dyn", dyn_url, "dyn_")], work / "fanout") as stack,
        client_pool(concurrency, seconds=60) as clients,
    ):
        http = clients[0]
        limiter = trio.CapacityLimiter(concurrency)
        sessions: list[str] = []

        failed: dict[str, int] = {}

        async def opener(index: int) -> None:
            async with limiter:
                try:
                    sessions.append(await open_session(clients[index % len(clients)], stack.url))
                except Exception as exc:  # counted; the streams of the others still open
                    key = f"{type(exc).__name__}: {str(exc)[:80]}"
                    failed[key] = failed.get(key, 0) + 1

        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(opener, index)
        if failed:
            print(f"    sessions that failed to open: {failed}", flush=True)
        caller = await open_session(http, stack.url)
        # The caller's backend session exists before the measured call.
        await call_tool(http, stack.url, caller, "dyn_hello", {})
        stats = StreamStats()
        release = trio.Event()
        host, port = stack.base.removeprefix("http://").split(":")
        open_started = trio.current_time()
        async with trio.open_nursery() as nursery:
            opening = trio.CapacityLimiter(concurrency)
            for session in sessions:
                nursery.start_soon(hold_stream, host, int(port), session, stats,
                                   release, opening)
            with trio.move_on_after(120):
                while stats.opened + sum(stats.refused.values()) < len(sessions):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            open_time = trio.current_time() - open_started
            # Straight to the broker: through Envoy, this GET would queue behind the streams
            # when the broker cluster's circuit breakers are full (stock bootstrap: 1024).
            try:
                status = (await http.get(f"{stack.status}/status", timeout=10)).json()
            except httpx.HTTPError as exc:
                status = {"openStreams": f"unknown ({type(exc).__name__})"}
            print(f"    {stats.opened} streams open in {open_time:.1f} s "
                  f"(of {len(sessions)} sessions) "
                  f"(/status openStreams {status.get('openStreams')})"
                  + (f"; refused: {stats.refused}" if stats.refused else "")
                  + (f"; still waiting for an answer: {waiting}" if (waiting := len(sessions)
                     - stats.opened - sum(stats.refused.values())) else ""), flush=True)
            rss_streams = rss_kib(stack.gateway.pid)
            await trio.sleep(SETTLE_SECONDS)
            pids = {"gateway": stack.gateway.pid, "Envoy": stack.envoy.pid,
                    "dynamic": dyn.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu_before["bench client"] = own_cpu_seconds()
            sent = trio.current_time()
            answer = await call_tool(http, stack.url, caller, "dyn_add_tool",
                                     {"name": "bench_added"}, request_id=7)
            answered = trio.current_time()
            if "result" not in answer:
                raise RuntimeError(f"dyn_add_tool: {answer}")
            with trio.move_on_after(30):
                while len(stats.arrivals) < stats.opened:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            cpu["bench client"] = own_cpu_seconds() - cpu_before["bench client"]
            await trio.sleep(HOLD_SECONDS)
            release.set()
            nursery.cancel_scope.cancel()
    results.add("fanout: streams open", f"{stats.opened} of {streams}", f"{streams}",
                stats.opened == streams)
    results.add("fanout: gateway RSS with the streams open", f"{rss_streams // 1024} MiB")
    got = len(stats.arrivals)
    if got:
        delays = [t - sent for t in stats.arrivals]
        last = max(delays)
        results.add(f"fanout: change → last of {got} streams", f"{last * 1e3:.0f} ms", "< 1 s",
                    last < 1.0 and got == streams)
        results.add("fanout: change → first / median stream",
                    f"{min(delays) * 1e3:.0f} / {statistics.median(delays) * 1e3:.0f} ms")
        results.add("fanout: the add_tool call itself", f"{(answered - sent) * 1e3:.0f} ms")
        results.add("fanout: CPU from the change to the last stream",
                    ", ".join(f"{name} {seconds * 1e3:.0f} ms" for name, seconds in cpu.items()))
    if got < stats.opened:
        results.add("fanout: streams without the notification", f"{stats.opened - got}", "0", False)


# -- 3. discovery ---------------------------------------------------------------------------------


async def ready_times(stack: Stack, count: int) -> tuple[float, float]:
    """(spawn → /readyz 200, spawn → /status with `count` upstreams all ready)."""
    readyz = await wait_until_ready(stack, patience=PART_SECONDS["discover"])
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        with trio.fail_after(PART_SECONDS["discover"]):
            while True:
                upstreams = (await http.get(f"{stack.status}/status")).json()["upstreams"]
                if len(upstreams) == count and all(u["state"] == "ready" for u in upstreams):
                    return readyz, trio.current_time() - stack.spawned_at
                await trio.sleep(0.01)


async def part_discover(base_url: str, work: Path, results: Results, *, upstreams: int,
                        then: Callable[[Stack], Awaitable[None]] | None = None) -> None:
    print(f"\n[discover] gateway spawn → ready, 1 vs {upstreams} upstreams", flush=True)
    one = [("u0", endpoint_url(base_url, 0), "u0_")]
    async with running_stack(one, work / "discover-1", wait_ready=False) as stack:
        one_readyz, one_status = await ready_times(stack, 1)
        one_listening = log_event_time(stack, "broker listening") or 0.0
    servers = [(f"u{i}", endpoint_url(base_url, i), f"u{i}_") for i in range(upstreams)]
    async with running_stack(servers, work / f"discover-{upstreams}", wait_ready=False,
                             page_size=1000) as stack:
        readyz, status = await ready_times(stack, upstreams)
        listening = log_event_time(stack, "broker listening") or 0.0
        results.add("discover: 1 upstream, spawn → /readyz, /status ready",
                    f"{one_readyz:.2f} s, {one_status:.2f} s")
        results.add(f"discover: {upstreams} upstreams, spawn → /readyz", f"{readyz:.2f} s",
                    "< 2 s", readyz < 2.0)
        results.add(f"discover: {upstreams} upstreams, spawn → /status all ready",
                    f"{status:.2f} s", "< 2 s", status < 2.0)
        results.add(f"discover: {upstreams} upstreams, broker listening → /status all ready",
                    f"{status - listening:.2f} s (1 upstream: {one_status - one_listening:.2f} s)")
        results.add("discover: spawn → broker listening (process start)",
                    f"{listening:.2f} s (1 upstream: {one_listening:.2f} s)")
        if then is not None:
            await then(stack)


# -- 4. tools/list --------------------------------------------------------------------------------


async def part_list(base_url: str, work: Path, results: Results, *, counts: list[int],
                    rounds: int, largest: Stack | None = None) -> None:
    print(f"\n[list] tools/list through Envoy, {rounds} requests per upstream count "
          f"(interleaved), one page", flush=True)
    async with AsyncExitStack() as stacks, httpx.AsyncClient(timeout=30, trust_env=False) as http:
        targets: list[tuple[int, Stack, str]] = []
        for count in counts:
            if largest is not None and count == counts[-1]:
                stack = largest
            else:
                servers = [(f"u{i}", endpoint_url(base_url, i), f"u{i}_") for i in range(count)]
                stack = await stacks.enter_async_context(
                    running_stack(servers, work / f"list-{count}", page_size=1000))
            # /readyz can come before every upstream is serving: wait for all of them.
            with trio.fail_after(60):
                while True:
                    upstreams = (await http.get(f"{stack.status}/status")).json()["upstreams"]
                    if all(u["state"] == "ready" for u in upstreams):
                        break
                    await trio.sleep(0.05)
            targets.append((count, stack, await open_session(http, stack.url)))
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        samples: dict[int, list[float]] = {count: [] for count in counts}
        sizes: dict[int, tuple[int, int]] = {}
        for index in range(rounds + 20):
            shift = index % len(targets)
            for count, stack, session in targets[shift:] + targets[:shift]:
                started = time.perf_counter()
                answer = await http.post(stack.url, json=body, headers=session_headers(session))
                elapsed = time.perf_counter() - started
                if answer.status_code != 200:
                    raise RuntimeError(f"tools/list ({count}): HTTP {answer.status_code}")
                if index >= 20:
                    samples[count].append(elapsed)
                else:
                    tools = answer.json()["result"]["tools"]
                    sizes[count] = (len(tools), len(answer.content))
    base = statistics.median(samples[counts[0]])
    for count in counts:
        p50, p99 = _p(samples[count], 0.5) * 1e3, _p(samples[count], 0.99) * 1e3
        tools, size = sizes[count]
        ratio = statistics.median(samples[count]) / base
        goal = "flat: p50 ≤ 1.5x 1 upstream's" if count != counts[0] else ""
        results.add(f"list: {count:>3} upstreams ({tools} tools, {size // 1024} KiB)",
                    f"p50 {p50:.2f} ms p99 {p99:.2f} ms (x{ratio:.2f})", goal,
                    ratio <= 1.5 if goal else None)


# -- main -----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    nofile = raise_nofile(args.streams * 2 + args.concurrency * 2 + 1000)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"work directory {work} (RLIMIT_NOFILE {nofile})", flush=True)
    results = Results()
    endpoints = max([*args.counts, args.upstreams])
    many_argv = [sys.executable, str(HERE / "many_upstreams.py"), "--endpoints", str(endpoints)]
    use_bytecode_cache(work / "pycache")
    await warm_bytecode_cache()
    ok = False
    try:
        async with upstream_process(many_argv, work / "many.log", MANY_READY) as (base_url, many):
            if "discover" in args.parts or "list" in args.parts:

                async def then(stack: Stack) -> None:
                    if "list" in args.parts:
                        with trio.fail_after(PART_SECONDS["list"]):
                            await part_list(base_url, work, results, counts=args.counts,
                                            rounds=args.rounds, largest=stack)

                if "discover" in args.parts:
                    with trio.fail_after(PART_SECONDS["discover"] * 3):
                        await part_discover(base_url, work, results, upstreams=args.upstreams,
                                            then=then if args.counts[-1] == args.upstreams else None)
                    if args.counts[-1] != args.upstreams and "list" in args.parts:
                        await part_list(base_url, work, results, counts=args.counts,
                                        rounds=args.rounds)
                else:
                    with trio.fail_after(PART_SECONDS["list"]):
                        await part_list(base_url, work, results, counts=args.counts,
                                        rounds=args.rounds)
            if "sessions" in args.parts:
                await part_sessions(base_url, many, work, results, sessions=args.sessions,
                                    concurrency=args.concurrency)
        if "fanout" in args.parts:
            with trio.fail_after(PART_SECONDS["fanout"]):
                await part_fanout(work, results, streams=args.streams,
                                  concurrency=args.concurrency)
        ok = True
    finally:
        if results.rows:
            print("\n" + results.table(), flush=True)
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 1,000 sessions, 500 streams, 50 list rounds")
    parser.add_argument("--parts", nargs="+", default=["discover", "list", "sessions", "fanout"],
                        choices=["discover", "list", "sessions", "fanout"])
    parser.add_argument("--sessions", type=int, default=None, help="default 10000 (quick: 1000)")
    parser.add_argument("--streams", type=int, default=None, help="default 5000 (quick: 500)")
    parser.add_argument("--concurrency", type=int, default=300, help="requests in flight")
    parser.add_argument("--upstreams", type=int, default=100)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--rounds", type=int, default=None, help="default 200 (quick: 50)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    # `make bench` / `python -m bench` pass no options: the environment can ask for the short run.
    args.quick = args.quick or os.environ.get("BENCH_SCALE_QUICK", "") not in ("", "0")
    args.sessions = args.sessions or (1000 if args.quick else 10_000)
    args.streams = args.streams or (500 if args.quick else 5000)
    args.rounds = args.rounds or (50 if args.quick else 200)
    args.counts = sorted(args.counts)
    return args


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
