"""Peek vs full parse on typical tools/call bodies: ns per call and the ratio.

Run: .venv/bin/python bench/bench_peek.py  (or `make bench`). Each figure is the best of
several repeats, measured in one run on the same machine, so the ratio is what to compare.
"""

from __future__ import annotations

import json
import math
import timeit
from collections.abc import Callable

from mcp_gateway.protocol import parse_message, peek


def _body(arguments: object) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "weather_get_forecast",
            "arguments": arguments,
            "_meta": {"progressToken": "tok-42"},
        },
    }
    return json.dumps(message).encode()


SMALL = _body({"city": "Paris", "days": 3})
# ~10 KB of arguments: a list of records, the shape that makes a tree expensive to build.
LARGE = _body(
    {
        "query": "select * from forecasts",
        "rows": [
            {"id": i, "city": f"city-{i}", "temperature": 12.5 + i, "tags": ["a", "b"], "ok": True}
            for i in range(110)
        ],
    }
)


def best_ns(
    functions: dict[str, Callable[[bytes], object]], body: bytes, number: int
) -> dict[str, float]:
    """Best-of-repeats ns/op for each function, the repeats interleaved so that a busy
    machine slows all of them alike."""
    best = dict.fromkeys(functions, math.inf)
    for _ in range(9):
        for label, function in functions.items():
            seconds = timeit.timeit(lambda f=function: f(body), number=number)  # type: ignore[misc]
            best[label] = min(best[label], seconds / number * 1e9)
    return best


def main() -> None:
    functions: dict[str, Callable[[bytes], object]] = {
        "parse_message": parse_message,
        "peek": peek,
        "json.loads": json.loads,  # the stdlib, no validation at all: a reference point
    }
    for label, body, number in (("small", SMALL, 5_000), ("~10 KB arguments", LARGE, 300)):
        assert peek(body).name == parse_message(body).params["name"]  # type: ignore[union-attr]
        ns = best_ns(functions, body, number)
        print(
            f"tools/call {label:17s} {len(body):6d} B: parse_message {ns['parse_message']:8.0f} "
            f"ns/op, peek {ns['peek']:7.0f} ns/op, json.loads {ns['json.loads']:7.0f} ns/op; "
            f"peek is {ns['parse_message'] / ns['peek']:4.1f}x cheaper than parse_message, "
            f"{ns['json.loads'] / ns['peek']:4.1f}x cheaper than json.loads"
        )


if __name__ == "__main__":
    main()
