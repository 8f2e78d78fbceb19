"""broker/routed_calls.py: Envoy's lines of routed calls counted with bounded labels, and the
format the bootstrap gives Envoy being the one the counting reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcp_gateway.broker.routed_calls import LINE_FORMAT, BuildInfo, RoutedCalls
from mcp_gateway.config import ServerConfig
from mcp_gateway.router.xds import BootstrapParams, render_bootstrap
from mcp_gateway.upstream.catalog import ServerCatalog
from mcp_gateway.upstream.supervisor import UpstreamStatus


class Catalogs:
    """A supervisor's catalog and statuses, as RoutedCalls reads them."""

    def __init__(self, listed: dict[str, ServerCatalog], configured: list[str]) -> None:
        self.listed, self.configured = listed, configured

    def catalog(self) -> list[tuple[ServerConfig, ServerCatalog]]:
        return [
            (ServerConfig(name=name, url="http://127.0.0.1:1/mcp", prefix=f"{name}_"), catalog)
            for name, catalog in self.listed.items()
        ]

    def status(self) -> list[UpstreamStatus]:
        return [_Named(name) for name in self.configured]  # type: ignore[misc]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def samples(calls: RoutedCalls, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    registry = CollectorRegistry()
    registry.register(calls)
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def key(server: str, method: str, name: str, status: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"server": server, "method": method, "name": name, "status": status}.items()))


ALPHA = ServerCatalog(
    {"tools": ({"name": "add"},), "prompts": ({"name": "greet"},), "resource_templates": ({"uriTemplate": "t://{x}"},)}
)


@asynccontextmanager
async def following(calls: RoutedCalls, source: Catalogs) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """`calls` following `source`; yields "the catalog changed" (returns once it is taken in)."""
    send, receive = trio.open_memory_channel[int](0)
    version = 0

    async def changed() -> None:
        nonlocal version
        version += 1
        await send.send(version)
        await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(calls.follow, source, receive)
        await trio.testing.wait_all_tasks_blocked()
        yield changed
        nursery.cancel_scope.cancel()


async def test_lines_are_counted_with_known_names_and_everything_else_as_other() -> None:
    calls = RoutedCalls()
    async with following(calls, Catalogs({"alpha": ALPHA}, ["alpha", "beta"])):
        calls.record([
            "alpha\ntools/call\nadd\n200\n-\n1500",
            "alpha\ntools/call\nadd\n200\n-\n2500",
            "alpha\ntools/call\nmade-up\n200\n-\n100",
            "alpha\nprompts/get\ngreet\n200\n-\n100",
            "alpha\ncompletion/complete\nt://{x}\n200\n-\n100",
            "alpha\nprompts/get\nadd\n200\n-\n100",  # a tool's name, not a prompt's
            "beta\ntools/call\nanything\n503\nUF\n100",  # configured, never listed
            "gamma\ntools/call\nx\n200\n-\n100",  # not configured
            "alpha\nresources/read\nadd\n200\n-\n100",
            "alpha\ntools/call\nadd\n<b>\n-\n100",
            "not a line",
        ])
    assert samples(calls, "mcp_gateway_routed_calls_total") == {
        key("alpha", "tools/call", "add", "200"): 2,
        key("alpha", "tools/call", "other", "200"): 1,
        key("alpha", "prompts/get", "greet", "200"): 1,
        key("alpha", "completion/complete", "t://{x}", "200"): 1,
        key("alpha", "prompts/get", "other", "200"): 1,
        key("beta", "tools/call", "other", "UF"): 1,
        key("other", "tools/call", "other", "200"): 1,
        key("alpha", "other", "other", "200"): 1,
        key("alpha", "tools/call", "add", "other"): 1,
    }
    series = (("method", "tools/call"), ("name", "add"), ("server", "alpha"))
    # Its three calls (the one with an unreadable status too): 1.5 ms, 2.5 ms, 0.1 ms.
    assert samples(calls, "mcp_gateway_routed_call_seconds_sum")[series] == pytest.approx(0.0041)
    buckets = samples(calls, "mcp_gateway_routed_call_seconds_bucket")
    assert buckets[tuple(sorted((*series, ("le", "0.001"))))] == 1
    assert buckets[tuple(sorted((*series, ("le", "0.0025"))))] == 3  # le: at most, inclusive
    assert buckets[tuple(sorted((*series, ("le", "+Inf"))))] == 3


async def test_made_up_names_cannot_grow_the_series() -> None:
    calls = RoutedCalls()
    async with following(calls, Catalogs({"alpha": ALPHA}, ["alpha"])):
        calls.record([f"alpha\ntools/call\nname-{i}\n200\n-\n100" for i in range(10_000)])
    assert samples(calls, "mcp_gateway_routed_calls_total") == {key("alpha", "tools/call", "other", "200"): 10_000}


async def test_an_upstream_that_goes_down_keeps_its_names_and_a_removed_one_loses_them() -> None:
    calls = RoutedCalls()
    source = Catalogs({"alpha": ALPHA}, ["alpha"])
    async with following(calls, source) as changed:
        source.listed = {}  # down: no longer in the catalog, still configured
        await changed()
        calls.record(["alpha\ntools/call\nadd\n200\nUF\n100"])
        source.configured = []  # removed from the config
        await changed()
        calls.record(["alpha\ntools/call\nadd\n200\n-\n100"])
    assert samples(calls, "mcp_gateway_routed_calls_total") == {
        key("alpha", "tools/call", "add", "UF"): 1,
        key("other", "tools/call", "other", "200"): 1,
    }


def test_the_bootstrap_gives_envoy_the_format_the_counting_reads() -> None:
    rendered = yaml.safe_load(render_bootstrap(BootstrapParams(
        listen="127.0.0.1:8080", admin_port=9901, broker="127.0.0.1:8081", router="127.0.0.1:8082",
        xds_dir="/xds", access_log_path="/dev/null",
    )))
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (logger,) = [a for a in manager["access_log"] if a["name"] == "envoy.access_loggers.open_telemetry"]
    assert logger["typed_config"]["body"]["string_value"] == LINE_FORMAT
    common = logger["typed_config"]["common_config"]
    assert common["grpc_service"] == {"envoy_grpc": {"cluster_name": "mcp_router"}}
    assert common["buffer_size_bytes"] == 65536  # batched: not one gRPC call a routed call


def test_build_info_names_the_version_and_python() -> None:
    registry = CollectorRegistry()
    registry.register(BuildInfo())
    (family,) = [f for f in text_string_to_metric_families(generate_latest(registry).decode())]
    (sample,) = family.samples
    assert sample.name == "mcp_gateway_build_info" and sample.value == 1
    assert set(sample.labels) == {"version", "python"}
