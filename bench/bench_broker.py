"""The broker's two scale claims, measured in one run on this machine:

  list     tools/list latency (p50, p99) with 50 upstreams (100 tools, one page) vs 1 upstream,
           requests interleaved between the two brokers so machine load falls on both alike.
  discover 20 upstreams that each take DELAY per request, discovered at once, vs one of them
           (concurrent discovery ≈ one upstream's time; one after another would be 20 times that).

Upstreams are the official-SDK `echo` sample served in-process (hypercorn on Trio).

    .venv/bin/python bench/bench_broker.py [--rounds 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.e2e.test_broker_scale import (  # noqa: E402
    DELAY,
    InFlight,
    _session,
    slow_sample,
)
from tests.support.servers import gateway_config, running_broker, sample_in_process  # noqa: E402


async def _list_once(http: httpx.AsyncClient, broker: Any, session: dict[str, str]) -> float:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    started = time.perf_counter()
    answer = await http.post(broker.url, json=body, headers=session)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200
    return elapsed


def _p(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] * 1e3


async def bench_list(rounds: int) -> None:
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(sample_in_process("echo")) for _ in range(50)]
        one = gateway_config([("s0", urls[0], "s0_")], page_size=100)
        fifty = gateway_config([(f"s{i}", u, f"s{i}_") for i, u in enumerate(urls)], page_size=100)
        async with (
            running_broker(one) as b1,
            running_broker(fifty) as b50,
            httpx.AsyncClient() as http,
        ):
            s1, s50 = await _session(http, b1), await _session(http, b50)
            one_samples: list[float] = []
            fifty_samples: list[float] = []
            for index in range(rounds + 50):
                a = await _list_once(http, b1, s1)
                b = await _list_once(http, b50, s50)
                if index >= 50:
                    one_samples.append(a)
                    fifty_samples.append(b)
    m1, m50 = statistics.median(one_samples), statistics.median(fifty_samples)
    print(f"tools/list, {rounds} requests each (interleaved)")
    print(f"  1 upstream   (2 tools):   p50 {_p(one_samples, .5):.2f} ms  p99 {_p(one_samples, .99):.2f} ms")
    print(f"  50 upstreams (100 tools): p50 {_p(fifty_samples, .5):.2f} ms  p99 {_p(fifty_samples, .99):.2f} ms")
    print(f"  ratio p50 50/1: {m50 / m1:.2f}  (goal ≤ 1.5)")


async def _discover(count: int) -> float:
    async with trio.open_nursery() as nursery:
        async with AsyncExitStack() as stack:
            urls = [await stack.enter_async_context(slow_sample(nursery, InFlight())) for _ in range(count)]
            config = gateway_config([(f"s{i}", u, f"s{i}_") for i, u in enumerate(urls)])
            started = time.perf_counter()
            async with running_broker(config):
                elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


async def bench_discover() -> None:
    one = await _discover(1)
    twenty = await _discover(20)
    print(f"discovery (each upstream answers every request after {DELAY:.1f} s)")
    print(f"  1 upstream: {one:.2f} s   20 upstreams: {twenty:.2f} s   ratio {twenty / one:.2f}")
    print(f"  one after another would take ≈ {20 * one:.1f} s")


async def main(rounds: int) -> None:
    await bench_list(rounds)
    await bench_discover()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    trio.run(main, args.rounds)
