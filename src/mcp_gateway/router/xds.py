"""Envoy configuration: the bootstrap, and file-based CDS/RDS generated from the gateway config.

Why files rather than an ADS server: Envoy watches a directory and applies a renamed-in file in
~2 ms, a bad file is rejected whole (with --reject-unknown-dynamic-fields) and the old config
stays, and there is no nonce/ACK/reconnect state to get wrong. The price is ordering, which
`XdsWriter.apply` handles: clusters are added before the routes that use them, routes removed
before their clusters (a route to an unknown cluster answers 503).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpx
import structlog
import trio

from mcp_gateway.router.decision import (
    NAME_HEADER,
    REQUEST_ID_HEADER,
    SERVER_HEADER,
    SESSION_KEY_HEADER,
    UPSTREAM_MARK_HEADER,
)
from mcp_gateway.router.fast_path import DECISION_KEY, FAST_HEADER, LUA_FILTER, FastPath
from mcp_gateway.router.modern_clients import STATEFUL_PATH
from mcp_gateway.router.rate_limits import virtual_host_rate_limits

if TYPE_CHECKING:
    from mcp_gateway.config import GatewayConfig, ServerConfig

_log = structlog.get_logger(__name__)

CLUSTER_TYPE: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ROUTE_CONFIG_NAME: Final = "mcp_routes"
BROKER_CLUSTER: Final = "mcp_broker"
EXT_PROC_FILTER: Final = "envoy.filters.http.ext_proc"
EXT_PROC_PER_ROUTE_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
CDS_FILE: Final = "cds.json"
UPSTREAM_BREAKERS: Final = {"max_connections": 100_000, "max_pending_requests": 100_000, "max_requests": 100_000}
RDS_FILE: Final = "rds.json"

_TEMPLATE_ENV = "MCP_GATEWAY_ENVOY_TEMPLATE"


def bootstrap_template_path() -> Path:
    override = os.environ.get(_TEMPLATE_ENV)
    if override:
        return Path(override)
    # src/mcp_gateway/router/xds.py → repository root → envoy/
    return Path(__file__).resolve().parents[3] / "envoy" / "bootstrap.yaml.tmpl"


def fast_path_script_path() -> Path:
    return bootstrap_template_path().parent / "fast_path.lua"


# Where the Lua script sits in the template: under `inline_string: |` of the Lua filter.
_LUA_INDENT: Final = " " * 26


def _split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class BootstrapParams:
    listen: str = "127.0.0.1:8080"
    admin_port: int = 9901
    broker: str = "127.0.0.1:8081"
    router: str = "127.0.0.1:9002"
    xds_dir: str = "/tmp/mcp-gateway-xds"
    access_log_path: str = "/dev/stdout"
    message_timeout: str = "30s"
    disallow_is_error: bool = False


def render_bootstrap(params: BootstrapParams, template: Path | None = None) -> str:
    template_path = template or bootstrap_template_path()
    text = template_path.read_text()
    script = (template_path.parent / "fast_path.lua").read_text()
    listen_host, listen_port = _split_host_port(params.listen)
    broker_host, broker_port = _split_host_port(params.broker)
    router_host, router_port = _split_host_port(params.router)
    return Template(text).substitute(
        listen_host=listen_host,
        listen_port=listen_port,
        fast_path_lua="\n".join(_LUA_INDENT + line if line else "" for line in script.splitlines()),
        admin_port=params.admin_port,
        broker_host=broker_host,
        broker_port=broker_port,
        router_host=router_host,
        router_port=router_port,
        xds_dir=params.xds_dir,
        access_log_path=params.access_log_path,
        message_timeout=params.message_timeout,
        disallow_is_error="true" if params.disallow_is_error else "false",
    )


# ---------------------------------------------------------------------------------------------
# Resources


def cluster_name(server: str) -> str:
    return f"mcp_upstream_{server}"


def upstream_cluster(server: ServerConfig) -> dict[str, Any]:
    url = urlsplit(server.url)
    tls = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if tls else 80)
    try:
        ip_address(host)
        discovery = "STATIC"
    except ValueError:
        discovery = "STRICT_DNS"
    cluster: dict[str, Any] = {
        "@type": CLUSTER_TYPE,
        "name": cluster_name(server.name),
        "type": discovery,
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        # A routed SSE answer holds one request for its whole life: Envoy's default breakers
        # (1,024) would queue the 1,025th concurrent call to one upstream.
        "circuit_breakers": {"thresholds": [UPSTREAM_BREAKERS]},
        "load_assignment": {
            "cluster_name": cluster_name(server.name),
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                    ]
                }
            ],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": server.hostname or host,
            },
        }
    return cluster


def _upstream_mark(name: str) -> list[dict[str, Any]]:
    # "<server> via_upstream" on the upstream's own answers; an Envoy local reply (connect
    # failure, timeout) carries its own details instead.
    return [
        {
            "header": {"key": UPSTREAM_MARK_HEADER, "value": f"{name} %RESPONSE_CODE_DETAILS%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


_EXT_PROC_DISABLED: Final = {EXT_PROC_FILTER: {"@type": EXT_PROC_PER_ROUTE_TYPE, "disabled": True}}
# The ext_proc filter is off in the listener (envoy/bootstrap.yaml.tmpl) and on only where a
# route says so: the routes whose requests or answers the router must see.
_EXT_PROC_ENABLED: Final = {
    EXT_PROC_FILTER: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {"@type": EXT_PROC_PER_ROUTE_TYPE, "overrides": {}},  # the listener's settings
    }
}

MCP_PATH: Final = "/mcp"
WEBSOCKET_PATH: Final = "/mcp/ws"
# Any other path: Envoy answers itself (no ext_proc, no broker).
NOT_FOUND_ROUTE: Final = {
    "name": "not_found",
    "match": {"prefix": "/"},
    "direct_response": {
        "status": 404,
        "body": {"inline_string": json.dumps({"error": f"not found: MCP is served at {MCP_PATH}"})},
    },
    "response_headers_to_add": [
        {
            "header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ],
    "typed_per_filter_config": _EXT_PROC_DISABLED,
}


WELL_KNOWN_PREFIX = "/.well-known/oauth-protected-resource"
# What the fast path and the router tell Envoy's rate limits (router/rate_limits.py): for
# Envoy's eyes only, gone before the upstream or the broker (the gateway token among them).
RATE_LIMIT_HEADERS: Final = (SESSION_KEY_HEADER, NAME_HEADER, REQUEST_ID_HEADER)


def route_configuration(
    servers: Iterable[str],
    fast_path: Mapping[str, Any] | None = None,
    *,
    well_known: bool = False,
    rate_limits: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The routes. `fast_path`: the POST route's metadata for the Lua fast path
    (`FastPath.route_metadata`); without it the fast path is off and every call takes the
    ext_proc. `rate_limits`: the virtual host's local_ratelimit config
    (`rate_limits.virtual_host_rate_limits`), shared by every route; None: no limits."""
    names = sorted(servers)
    # Calls the Lua fast path routed itself (it set both headers; a client's copies are
    # stripped before routing): straight to the upstream, no ext_proc.
    routes: list[dict[str, Any]] = [
        {
            "name": f"fast_to_{name}",
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": SERVER_HEADER, "string_match": {"exact": name}},
                    {"name": FAST_HEADER, "present_match": True},
                ],
            },
            "route": {"cluster": cluster_name(name), "timeout": "0s"},
            "request_headers_to_remove": [FAST_HEADER, *RATE_LIMIT_HEADERS],
            "response_headers_to_add": _upstream_mark(name),
            "typed_per_filter_config": _EXT_PROC_DISABLED,
        }
        for name in (names if fast_path is not None else ())
    ]
    routes += [
        {
            "name": f"to_{name}",
            "match": {
                "prefix": "/",
                "headers": [{"name": SERVER_HEADER, "string_match": {"exact": name}}],
            },
            # timeout 0s: a slow tool's SSE stream lives as long as it needs.
            "route": {"cluster": cluster_name(name), "timeout": "0s"},
            "request_headers_to_remove": list(RATE_LIMIT_HEADERS),
            "response_headers_to_add": _upstream_mark(name),
            # The router sees the answer's headers (backend session swap, 404 replay).
            "typed_per_filter_config": _EXT_PROC_ENABLED,
        }
        for name in names
    ]
    # GET (the SSE stream, the WebSocket upgrade) and DELETE never carry a body to route on: they
    # go to the broker without an ext_proc round trip (client x-mcp-* headers are still removed
    # natively by the header_mutation filter, and the broker trusts none of them).
    routes.extend(
        {
            "name": f"to_broker_{method.lower()}{suffix}",
            "match": {
                "path": path,
                "headers": [{"name": ":method", "string_match": {"exact": method}}],
            },
            "route": {"cluster": BROKER_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": _EXT_PROC_DISABLED,
        }
        for method, path, suffix in (
            ("GET", MCP_PATH, ""), ("GET", WEBSOCKET_PATH, "_ws"), ("DELETE", MCP_PATH, "")
        )
    )
    if well_known:
        # Inbound OAuth: the protected resource metadata (RFC 9728), both forms, served by the
        # broker; a GET with no body to route on, so no ext_proc (docs/auth.md).
        routes.append(
            {
                "name": "to_broker_well_known",
                "match": {
                    "prefix": WELL_KNOWN_PREFIX,
                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                },
                "route": {"cluster": BROKER_CLUSTER, "timeout": "10s"},
                "typed_per_filter_config": _EXT_PROC_DISABLED,
            }
        )
    to_broker: dict[str, Any] = {
        "name": "to_broker",
        "match": {"path": MCP_PATH},
        "route": {"cluster": BROKER_CLUSTER, "timeout": "0s"},
        "request_headers_to_remove": list(RATE_LIMIT_HEADERS),
        # Every POST is the router's to decide (the Lua fast path takes its calls elsewhere).
        "typed_per_filter_config": _EXT_PROC_ENABLED,
    }
    if fast_path is not None:
        to_broker["metadata"] = {"filter_metadata": dict(fast_path)}
        # The Lua filter reads this metadata only when the route's name changes: the name
        # carries the generation, so a new config is seen on its first request.
        to_broker["name"] = f"to_broker@{fast_path[LUA_FILTER][DECISION_KEY]['generation']}"
    routes.append(to_broker)
    routes += _stateful_routes()
    # The public listener serves the MCP endpoints and nothing else: /status, /metrics and the
    # probes live on the broker's admin address (gateway.admin_listen), which has no route here.
    routes.append(NOT_FOUND_ROUTE)
    host: dict[str, Any] = {"name": "mcp", "domains": ["*"], "routes": routes}
    if rate_limits is not None:
        # On the host, not on each route: a route's own config would have buckets of its own, and
        # one session's calls take several routes.
        host["typed_per_filter_config"] = dict(rate_limits)
    return {"@type": ROUTE_TYPE, "name": ROUTE_CONFIG_NAME, "virtual_hosts": [host]}


def _stateful_routes() -> list[dict[str, Any]]:
    """/mcp/stateful: a POST in a session as POST /mcp (the ext_proc routes its calls; no Lua
    fast path, which keeps to /mcp); anything else (initialize, the 2026-07-28 requests the
    broker refuses there, GET, DELETE) has nothing for the router to route, and goes straight to
    the broker, which checks Origin and tokens itself (as it does behind the GET route)."""
    in_session = [
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": "mcp-session-id", "present_match": True},
    ]
    return [
        {
            "name": f"to_broker_stateful{suffix}",
            "match": {"path": STATEFUL_PATH, "headers": headers} if headers else {"path": STATEFUL_PATH},
            "route": {"cluster": BROKER_CLUSTER, "timeout": "0s"},
            "request_headers_to_remove": list(RATE_LIMIT_HEADERS),
            "typed_per_filter_config": ext_proc,
        }
        for suffix, headers, ext_proc in (
            ("", in_session, _EXT_PROC_ENABLED), ("_direct", [], _EXT_PROC_DISABLED)
        )
    ]


def wanted_routes(config: GatewayConfig) -> dict[str, Any]:
    return route_configuration(
        routable_servers(config),
        FastPath.of(config).route_metadata(),
        well_known=config.gateway.auth.enabled,
        rate_limits=virtual_host_rate_limits(config.gateway.rate_limits),
    )


def routable_servers(config: GatewayConfig) -> dict[str, ServerConfig]:
    """Servers Envoy can reach directly: enabled, over HTTP(S)."""
    return {s.name: s for s in config.enabled_servers() if s.transport == "http"}


# ---------------------------------------------------------------------------------------------
# Writing


def write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Envoy notices only a rename into the watched directory, never an in-place write."""
    data = json.dumps(document, indent=1, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp)
        raise


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, OSError)


class XdsWriter:
    """Keeps `cds.json` and `rds.json` in `xds_dir` equal to the config's routable servers.

    With `admin_url`, each cluster addition waits until Envoy reports the cluster before the
    routes to it are written; without it, a short fixed pause stands in.
    """

    def __init__(self, xds_dir: str | Path, admin_url: str | None = None) -> None:
        self.xds_dir = Path(xds_dir)
        self.admin_url = admin_url
        self._version = 0
        self._clusters: dict[str, dict[str, Any]] = {}
        self._routes: dict[str, Any] | None = None  # the RouteConfiguration on disk

    def _next_version(self) -> str:
        # Unique across writers and restarts (the router and `mcp-gateway up` share the files).
        self._version = max(self._version + 1, time.time_ns())
        return str(self._version)

    def _write_clusters(self, clusters: Mapping[str, dict[str, Any]]) -> None:
        document = {
            "version_info": self._next_version(),
            "resources": [clusters[name] for name in sorted(clusters)],
        }
        write_atomically(self.xds_dir / CDS_FILE, document)

    def _write_routes(self, routes: dict[str, Any]) -> None:
        document = {"version_info": self._next_version(), "resources": [routes]}
        write_atomically(self.xds_dir / RDS_FILE, document)

    def write_initial(self, config: GatewayConfig) -> None:
        """Before Envoy starts: both files at once (Envoy loads CDS before the listener's RDS)."""
        self.xds_dir.mkdir(parents=True, exist_ok=True)
        servers = routable_servers(config)
        self._clusters = {name: upstream_cluster(s) for name, s in servers.items()}
        self._write_clusters(self._clusters)
        self._routes = wanted_routes(config)
        self._write_routes(self._routes)

    def _load_current(self) -> bool:
        """Adopt what is on disk (Envoy's current state) so the first update is ordered too."""
        try:
            clusters = json.loads((self.xds_dir / CDS_FILE).read_text())["resources"]
            routes = json.loads((self.xds_dir / RDS_FILE).read_text())["resources"][0]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return False
        prefix = cluster_name("")
        self._clusters = {str(c["name"])[len(prefix) :]: c for c in clusters}
        self._routes = routes
        return True

    async def apply(self, config: GatewayConfig) -> None:
        """Move Envoy to `config` without a window where a route points at a missing cluster."""
        if self._routes is None and not await trio.to_thread.run_sync(self._load_current):
            await trio.to_thread.run_sync(self.write_initial, config)
            return
        servers = routable_servers(config)
        wanted = {name: upstream_cluster(s) for name, s in servers.items()}
        added = [name for name in wanted if self._clusters.get(name) != wanted[name]]
        if added:
            # 1. the union of old and new clusters, so every current and future route resolves.
            union = {**self._clusters, **wanted}
            await trio.to_thread.run_sync(self._write_clusters, union)
            await self._wait_for_clusters(cluster_name(n) for n in added)
            self._clusters = union
        # 2. the new routes (also when only the fast path's generation changed).
        routes = wanted_routes(config)
        if routes != self._routes:
            await trio.to_thread.run_sync(self._write_routes, routes)
            self._routes = routes
            await self._wait_for_routes()
        # 3. only the new clusters (drops the removed ones, now unreferenced).
        if set(self._clusters) != set(wanted):
            await trio.to_thread.run_sync(self._write_clusters, wanted)
        self._clusters = wanted
        _log.info("envoy xds updated", servers=sorted(servers), added=added)

    async def _wait_for_clusters(self, names: Iterable[str]) -> None:
        expected = set(names)
        if self.admin_url is None:
            await trio.sleep(0.1)
            return
        with trio.move_on_after(5) as scope:
            async with httpx.AsyncClient(base_url=self.admin_url, timeout=2) as admin:
                while True:
                    try:
                        known = await _envoy_cluster_names(admin)
                    except httpx.HTTPError:
                        known = set()
                    if expected <= known:
                        return
                    await trio.sleep(0.01)
        if scope.cancelled_caught:
            _log.warning("envoy did not confirm new clusters in time", clusters=sorted(expected))

    async def _wait_for_routes(self) -> None:
        # RDS applies in ~2 ms; removal of a cluster right after must not race it.
        await trio.sleep(0.05)


async def _envoy_cluster_names(admin: httpx.AsyncClient) -> set[str]:
    response = await admin.get("/clusters", params={"format": "json"})
    response.raise_for_status()
    statuses = response.json().get("cluster_statuses", [])
    return {str(item.get("name")) for item in statuses}
