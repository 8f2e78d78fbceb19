"""Peek vs full parse on typical tools/call bodies: ns per call and the ratio.

Run: .venv/bin/python bench/bench_peek.py  (or `make bench`). Each figure is the best of
several repeats, measured in one run on the same machine, so the ratio is what to compare.
"""

from __future__ import annotations

import json
import timeit

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


def best_ns(function: object, body: bytes, number: int) -> float:
    timer = timeit.Timer(lambda: function(body))  # type: ignore[operator]
    return min(timer.repeat(repeat=7, number=number)) / number * 1e9


def main() -> None:
    for label, body, number in (("small", SMALL, 20_000), ("~10 KB arguments", LARGE, 1_000)):
        assert peek(body).name == parse_message(body).params["name"]  # type: ignore[union-attr]
        parse_ns = best_ns(parse_message, body, number)
        peek_ns = best_ns(peek, body, number)
        print(
            f"tools/call {label:17s} {len(body):6d} B  parse_message {parse_ns:9.0f} ns/op  "
            f"peek {peek_ns:8.0f} ns/op  peek is {parse_ns / peek_ns:5.1f}x cheaper"
        )


if __name__ == "__main__":
    main()
