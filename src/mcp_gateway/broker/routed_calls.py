"""The routed-call metrics and `mcp_gateway_build_info`, on the admin `/metrics`.

Routed calls never reach the broker: Envoy sends each one to an upstream, through the router or
its Lua fast path. Envoy reports them in batches to the router (router/call_log.py), which hands
each batch to `RoutedCalls.record` in this process (serve.py wires the two). Counting is plain
dict arithmetic; prometheus-client sees the totals only when `/metrics` is read (`collect`).

A call is one line, `LINE_FORMAT` (Envoy's access-log format in envoy/bootstrap.yaml.tmpl):
server, method, name (routed: without its prefix, as the upstream calls it), HTTP status,
Envoy's response flags, microseconds from the request's first byte to the answer's last; header
values cannot hold the newline between them. The `status` label is the flags when Envoy set any
(a call it could not complete: `UF` no connection to the upstream, `UT` upstream timeout, `DC`
the client left, ...), else the HTTP status: the fast path answers an unreachable upstream with
a JSON-RPC error in a 200, which must not count as a success.

Label values are bounded: `server` is a configured one, `name` one that server listed
(tools for `tools/call`, prompts for `prompts/get`, prompts and resource templates for
`completion/complete`), else `other`; a client calling made-up names cannot grow the series.
"""

from __future__ import annotations

import platform
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Protocol

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream.catalog import PROMPTS, RESOURCE_TEMPLATES, TOOLS, ServerCatalog
from mcp_gateway.upstream.supervisor import UpstreamStatus

OTHER: Final = "other"
# From a fast call (about a millisecond) to a long tool run; an SSE answer counts until its end.
BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
_ROUTED_METHODS: Final = ("tools/call", "prompts/get", "completion/complete")
# An HTTP status, or Envoy's response flags (short upper-case codes, comma-separated).
_STATUS: Final = re.compile(r"[0-9]{1,3}|[A-Z]{1,5}(?:,[A-Z]{1,5}){0,3}")

LINE_FORMAT: Final = (
    "%REQ(X-MCP-SERVERNAME)%\n%REQ(X-MCP-METHOD)%\n%REQ(X-MCP-TOOLNAME)%\n"
    "%RESPONSE_CODE%\n%RESPONSE_FLAGS%\n%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%"
)
# Distinct line heads (all but the duration) whose labels are remembered; past it, start over.
_LABEL_CACHE: Final = 4096


# (server, method, name, status) of the counter, (server, method, name) of the histogram.
_Labels = tuple[tuple[str, str, str, str], tuple[str, str, str]]


class CatalogSource(Protocol):
    """What the known names come from: the supervisor."""

    def catalog(self) -> list[tuple[ServerConfig, ServerCatalog]]: ...

    def status(self) -> list[UpstreamStatus]: ...


def _known_names(catalog: ServerCatalog) -> dict[str, frozenset[str]]:
    tools = frozenset(str(item.get("name")) for item in catalog.of(TOOLS))
    prompts = frozenset(str(item.get("name")) for item in catalog.of(PROMPTS))
    templates = frozenset(str(item.get("uriTemplate")) for item in catalog.of(RESOURCE_TEMPLATES))
    return {"tools/call": tools, "prompts/get": prompts, "completion/complete": prompts | templates}


class RoutedCalls(Collector):
    """Counts of routed calls by (server, method, name, status), and their latency histogram
    by (server, method, name)."""

    def __init__(self) -> None:
        # server -> method -> names it listed (the last listing: a server that went down keeps
        # its names, so its failing calls are still counted under them).
        self._known: dict[str, dict[str, frozenset[str]]] = {}
        self._labels: dict[str, _Labels | None] = {}
        self._counts: dict[tuple[str, str, str, str], int] = {}
        # (server, method, name) -> [bucket counts..., +Inf count], and the sum of seconds.
        self._buckets: dict[tuple[str, str, str], list[int]] = {}
        self._sums: dict[tuple[str, str, str], float] = {}

    async def follow(self, source: CatalogSource, changes: trio.MemoryReceiveChannel[int]) -> None:
        """Keep the known names up to `source`'s catalog, at once and on every change, until
        cancelled (the names stay as they were last)."""
        self._refresh_known(source)
        async for _version in changes:
            self._refresh_known(source)

    def _refresh_known(self, source: CatalogSource) -> None:
        configured = {status.name for status in source.status()}
        known = {name: names for name, names in self._known.items() if name in configured}
        for server, catalog in source.catalog():
            known[server.name] = _known_names(catalog)
        for name in configured:
            known.setdefault(name, {})
        self._known = known
        self._labels.clear()  # a name may be known now, or no longer

    def record(self, lines: Sequence[str]) -> None:
        """Count one batch of `LINE_FORMAT` lines. Runs on the event loop's thread, as `collect`
        does: no lock. Per line: a split and a few dict updates (the labels of a line's head are
        worked out once)."""
        cache, counts, buckets, sums = self._labels, self._counts, self._buckets, self._sums
        for line in lines:
            head, _, micros = line.rpartition("\n")
            labels = cache.get(head)
            if labels is None:
                if len(cache) >= _LABEL_CACHE:
                    cache.clear()
                labels = cache[head] = self._labels_of(head)
                if labels is None:
                    continue
            key, series = labels
            counts[key] = counts.get(key, 0) + 1
            try:
                seconds = int(micros) / 1e6
            except ValueError:  # "-": no end time (not for a logged request)
                seconds = 0.0
            buckets[series][bisect_left(BUCKETS, seconds)] += 1
            sums[series] += seconds

    def _labels_of(self, head: str) -> _Labels | None:
        parts = head.split("\n")
        if len(parts) != 5:
            return None
        server, method, name, code, flags = parts
        status = code if flags == "-" else flags
        methods = self._known.get(server)
        if methods is None:
            server = name = OTHER
        elif name not in methods.get(method, ()):
            name = OTHER
        if method not in _ROUTED_METHODS:
            method = OTHER
        if not _STATUS.fullmatch(status):
            status = OTHER
        series = (server, method, name)
        if series not in self._buckets:
            self._buckets[series] = [0] * (len(BUCKETS) + 1)
            self._sums[series] = 0.0
        return (server, method, name, status), series

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "mcp_gateway_routed_calls",
            "Calls Envoy routed to an upstream (through the router or its fast path), by "
            "server, method, name (as the upstream lists it; 'other' for an unknown one) and "
            "the HTTP status the client got.",
            labels=["server", "method", "name", "status"],
        )
        for key, count in self._counts.items():
            calls.add_metric(list(key), count)
        seconds = HistogramMetricFamily(
            "mcp_gateway_routed_call_seconds",
            "Time from a routed call's first byte in Envoy to the last byte of its answer.",
            labels=["server", "method", "name"],
        )
        for series, histogram in self._buckets.items():
            cumulative, total = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            seconds.add_metric(list(series), cumulative, self._sums[series])
        yield calls
        yield seconds


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class BuildInfo(Collector):
    """`mcp_gateway_build_info{version, python} 1`."""

    def __init__(self) -> None:
        try:
            package_version = version("mcp-gateway")
        except PackageNotFoundError:  # run from a source tree without installing
            package_version = "unknown"
        self._labels = [package_version, platform.python_version()]

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "mcp_gateway_build_info",
            "Always 1; the labels say which gateway and Python serve.",
            labels=["version", "python"],
        )
        info.add_metric(self._labels, 1)
        return [info]
