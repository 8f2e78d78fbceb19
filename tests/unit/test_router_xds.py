"""Envoy resources generated from the config, and the atomic xDS file writes."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import RateLimitSettings, parse_config
from mcp_gateway.protocol import ErrorCode
from mcp_gateway.router.fast_path import FastPath, generation
from mcp_gateway.router.rate_limits import fnmatch_regex, virtual_host_rate_limits
from mcp_gateway.router.xds import (
    BootstrapParams,
    XdsWriter,
    cluster_name,
    render_bootstrap,
    route_configuration,
    upstream_cluster,
    wanted_routes,
)

CONFIG = parse_config(
    """
servers:
  - name: weather
    url: http://127.0.0.1:9101/mcp
    prefix: w_
  - name: files
    url: https://files.example.com/mcp
    hostname: files.internal
    prefix: f_
  - name: local
    transport: stdio
    command: [my-server]
    prefix: l_
  - name: retired
    url: http://127.0.0.1:9104/mcp
    prefix: r_
    state: Disabled
"""
)


def test_bootstrap_renders_the_listener_admin_and_filters() -> None:
    text = render_bootstrap(BootstrapParams(listen="127.0.0.1:18080", admin_port=19901, broker="127.0.0.1:18081",
                                            router="127.0.0.1:19002", xds_dir="/x", message_timeout="45s"))
    document = yaml.safe_load(text)
    listener = document["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    # The Lua fast path (it may route a call itself and skip the ext_proc), then the ext_proc; the
    # header mutation in front is the last to see an answer: it drops every x-mcp-* header.
    assert names == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.lua", "envoy.filters.http.ext_proc",
        "envoy.filters.http.local_ratelimit", "envoy.filters.http.router",
    ]
    outgoing = hcm["http_filters"][0]["typed_config"]["mutations"]["response_mutations"]
    assert outgoing == [{"remove_on_match": {"key_matcher": {"prefix": "x-mcp-"}}}]
    assert "envoy_on_request" in hcm["http_filters"][1]["typed_config"]["default_source_code"]["inline_string"]
    clusters = {c["name"]: c for c in document["static_resources"]["clusters"]}
    # A burst of calls spread over router connections from the start (grpclib takes 100 streams
    # a connection), and no 1,024-request ceiling on the broker (each open stream holds one).
    router_h2 = clusters["mcp_router"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]["http2_protocol_options"]
    assert router_h2["max_concurrent_streams"] == 100
    assert clusters["mcp_broker"]["circuit_breakers"]["thresholds"][0]["max_requests"] >= 100_000
    # The fast path's replays reach the same filter chain through an internal listener.
    replay = next(item for item in document["static_resources"]["listeners"] if item["name"] == "mcp_replay")
    assert replay["filter_chains"] == listener["filter_chains"]
    mutations = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    patterns = [re.compile(m["remove_on_match"]["key_matcher"]["safe_regex"]["regex"]) for m in mutations]
    # Envoy's safe_regex matches the whole name: every x-mcp-* goes but the selection header.
    internal = ["x-mcp-servername", "x-mcp-toolname", "x-mcp-method", "x-mcp-upstream", "x-mcp-",
                "x-mcp-virtual", "x-mcp-virtualserve", "x-mcp-virtualservers", "x-mcp-virtualsErver", "x-mcp-v"]
    for name in internal:
        assert any(p.fullmatch(name) for p in patterns), name
    for name in ["x-mcp-virtualserver", "mcp-session-id", "x-mcpservername", "authorization"]:
        assert not any(p.fullmatch(name) for p in patterns), name
    ext_proc = hcm["http_filters"][2]["typed_config"]
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["processing_mode"]["response_body_mode"] == "NONE"
    assert ext_proc["mutation_rules"]["allow_all_routing"] is True
    assert ext_proc["message_timeout"] == "45s"
    assert hcm["rds"]["config_source"]["path_config_source"]["path"] == "/x/rds.json"
    runtime = document["layered_runtime"]["layers"][0]["static_layer"]
    assert runtime["envoy.reloadable_features.ext_proc_graceful_grpc_close"] is True
    log_fields = json.dumps(hcm["access_log"][0]["typed_config"]["log_format"]).lower()
    assert "mcp-session-id" not in log_fields and "authorization" not in log_fields


def test_clusters_only_for_enabled_http_servers_with_tls_and_sni_for_https() -> None:
    writer_dir = {s.name for s in CONFIG.enabled_servers() if s.transport == "http"}
    assert writer_dir == {"weather", "files"}
    weather = upstream_cluster(CONFIG.servers[0])
    assert weather["type"] == "STATIC"
    assert "transport_socket" not in weather
    files = upstream_cluster(CONFIG.servers[1])
    assert files["type"] == "STRICT_DNS"
    # Every routed SSE answer holds a request: no 1,024 ceiling per upstream.
    assert files["circuit_breakers"]["thresholds"][0]["max_requests"] >= 100_000
    endpoint = files["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "files.example.com", "port_value": 443}
    assert files["transport_socket"]["typed_config"]["sni"] == "files.internal"


def test_routes_match_the_servername_header_then_default_to_the_broker() -> None:
    config = route_configuration(["weather", "files"])
    routes = config["virtual_hosts"][0]["routes"]
    assert [r["route"]["cluster"] for r in routes[:-1]] == [
        cluster_name("files"), cluster_name("weather"), *["mcp_broker"] * 6
    ]
    # GET (SSE stream, WebSocket upgrade) and DELETE skip the ext_proc round trip; POSTs to the
    # broker do not. Only the MCP paths reach the broker.
    assert [r["name"] for r in routes[2:]] == [
        "to_broker_get", "to_broker_get_ws", "to_broker_delete", "to_broker",
        "to_broker_stateful", "to_broker_stateful_direct", "not_found",
    ]
    assert [r["match"]["path"] for r in routes[2:6]] == ["/mcp", "/mcp/ws", "/mcp", "/mcp"]
    assert routes[2]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    # The ext_proc is off in the listener (so Envoy's replies to broken framing reach the client)
    # and turned on by the routes that need it: the POST route and each server's slow route.
    for enabled in (routes[0], routes[1], routes[5]):
        on = enabled["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert on["@type"].endswith("envoy.config.route.v3.FilterConfig") and not on.get("disabled")
        assert on["config"]["@type"].endswith("ExtProcPerRoute")
    assert routes[0]["match"]["headers"] == [{"name": "x-mcp-servername", "string_match": {"exact": "files"}}]
    assert all(r["route"]["timeout"] == "0s" for r in routes[:-1])
    # Everything else (/status, /metrics, /healthz...) is Envoy's own 404: no ext_proc, no broker.
    not_found = routes[-1]
    assert not_found["match"] == {"prefix": "/"} and not_found["direct_response"]["status"] == 404
    assert not_found["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    mark = routes[0]["response_headers_to_add"][0]["header"]
    assert mark == {"key": "x-mcp-upstream", "value": "files %RESPONSE_CODE_DETAILS%"}


def test_mcp_stateful_posts_in_a_session_take_the_ext_proc_and_everything_else_goes_straight_to_the_broker() -> None:
    routes = {r["name"]: r for r in route_configuration(["files"], FastPath.of(CONFIG).route_metadata())["virtual_hosts"][0]["routes"]}
    in_session, direct = routes["to_broker_stateful"], routes["to_broker_stateful_direct"]
    assert in_session["match"] == {
        "path": "/mcp/stateful",
        "headers": [
            {"name": ":method", "string_match": {"exact": "POST"}},
            {"name": "mcp-session-id", "present_match": True},
        ],
    }
    assert not in_session["typed_per_filter_config"]["envoy.filters.http.ext_proc"].get("disabled")
    # No fast-path metadata: the Lua filter leaves these to the ext_proc.
    assert "metadata" not in in_session
    # Initialize, the 2026-07-28 requests the broker refuses there, GET and DELETE.
    assert direct["match"] == {"path": "/mcp/stateful"}
    assert direct["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    for route in (in_session, direct):
        assert route["route"] == {"cluster": "mcp_broker", "timeout": "0s"}
        assert route["request_headers_to_remove"] == ["x-mcp-session", "x-mcp-name", "x-mcp-request-id"]


def test_with_the_fast_path_each_server_has_a_route_that_skips_the_ext_proc_and_the_post_route_carries_the_generation() -> None:
    fast = FastPath.of(CONFIG)
    config = route_configuration(["weather", "files"], fast.route_metadata())
    routes = config["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == [
        "fast_to_files", "fast_to_weather", "to_files", "to_weather", "to_broker_get", "to_broker_get_ws",
        "to_broker_delete", f"to_broker@{fast.generation}", "to_broker_stateful", "to_broker_stateful_direct",
        "not_found",
    ]
    fast_files = routes[0]
    # Only a call the Lua filter routed itself: both headers (a client's x-mcp-* never gets here).
    assert fast_files["match"]["headers"] == [
        {"name": "x-mcp-servername", "string_match": {"exact": "files"}},
        {"name": "x-mcp-fast-path", "present_match": True},
    ]
    assert fast_files["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert fast_files["request_headers_to_remove"] == [
        "x-mcp-fast-path", "x-mcp-session", "x-mcp-name", "x-mcp-request-id"
    ]
    assert fast_files["response_headers_to_add"] == routes[2]["response_headers_to_add"]
    settings = routes[-4]["metadata"]["filter_metadata"]["envoy.filters.http.lua"]["fast"]
    assert settings["generation"] == fast.generation
    assert settings["max_body"] == min(CONFIG.gateway.envoy.fast_path.max_body_bytes, CONFIG.gateway.limits.max_body_bytes)


def test_the_fast_path_generation_follows_what_a_decision_depends_on() -> None:
    base = generation(CONFIG)
    assert generation(CONFIG) == base
    servers = [s.model_copy(update={"prefix": "w2_"}) if s.name == "weather" else s for s in CONFIG.servers]
    assert generation(CONFIG.model_copy(update={"servers": servers})) != base
    stricter = CONFIG.gateway.model_copy(
        update={"limits": CONFIG.gateway.limits.model_copy(update={"max_depth": 8})}
    )
    assert generation(CONFIG.model_copy(update={"gateway": stricter})) != base


def test_without_the_fast_path_no_route_skips_the_ext_proc_for_posts() -> None:
    off = CONFIG.gateway.model_copy(update={"envoy": CONFIG.gateway.envoy.model_copy(
        update={"fast_path": CONFIG.gateway.envoy.fast_path.model_copy(update={"enabled": False})})})
    routes = wanted_routes(CONFIG.model_copy(update={"gateway": off}))["virtual_hosts"][0]["routes"]
    assert not [r for r in routes if r["name"].startswith("fast_")]
    assert "metadata" not in routes[-1]


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_writes_are_atomic_renames_and_a_new_writer_adopts_the_files(tmp_path: Path) -> None:
    first = XdsWriter(tmp_path)
    first.write_initial(CONFIG)
    assert files_in(tmp_path) == ["cds.json", "rds.json"]  # no temp files left
    cds = json.loads((tmp_path / "cds.json").read_text())
    assert {c["name"] for c in cds["resources"]} == {cluster_name("weather"), cluster_name("files")}
    assert oct((tmp_path / "cds.json").stat().st_mode & 0o777) == "0o644"

    smaller = parse_config("servers:\n  - name: weather\n    url: http://127.0.0.1:9101/mcp\n    prefix: w_\n")
    second = XdsWriter(tmp_path)  # e.g. the router after a restart
    await second.apply(smaller)
    cds_after = json.loads((tmp_path / "cds.json").read_text())
    rds_after = json.loads((tmp_path / "rds.json").read_text())
    assert {c["name"] for c in cds_after["resources"]} == {cluster_name("weather")}
    routes = rds_after["resources"][0]["virtual_hosts"][0]["routes"]
    assert [r["route"]["cluster"] for r in routes[:-1]] == [
        cluster_name("weather"), cluster_name("weather"), *["mcp_broker"] * 6
    ]
    assert int(cds_after["version_info"]) > int(cds["version_info"])


# ---------------------------------------------------------------------------------------------
# Rate limits (router/rate_limits.py)

RATE_LIMITED = CONFIG.model_copy(update={"gateway": CONFIG.gateway.model_copy(update={
    "rate_limits": RateLimitSettings.model_validate({
        "per_session": {"requests": 100, "per_seconds": 1},
        "per_tool": [
            {"tool": "w_forecast", "requests": 10, "per_seconds": 60},
            {"tool": "f_*", "requests": 5, "per_seconds": 2},
        ],
        "max_buckets": 1000,
    })
})})


def test_the_rate_limit_filter_sits_after_both_paths_inert_and_its_429_is_a_json_rpc_error() -> None:
    hcm = yaml.safe_load(render_bootstrap(BootstrapParams()))["static_resources"]["listeners"][0][
        "filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    # After the Lua fast path and the ext_proc: both have named the session and the tool by then.
    assert names.index("envoy.filters.http.local_ratelimit") == names.index("envoy.filters.http.ext_proc") + 1
    limiter = hcm["http_filters"][names.index("envoy.filters.http.local_ratelimit")]["typed_config"]
    # No bucket and not enabled here: the limits are the virtual host's, in RDS.
    assert set(limiter) == {"@type", "stat_prefix"}
    mappers = [m for m in hcm["local_reply_config"]["mappers"] if "429" in json.dumps(m["filter"])]
    with_id, without_id = mappers
    assert with_id["filter"]["and_filter"]["filters"][1] == {
        "header_filter": {"header": {"name": "x-mcp-request-id", "present_match": True}}
    }
    template = with_id["body_format_override"]["text_format_source"]["inline_string"]
    body = json.loads(template.replace("%REQ(x-mcp-request-id)%", '"id-7"'))
    assert body == {"jsonrpc": "2.0", "id": "id-7", "error": {"code": ErrorCode.RATE_LIMITED, "message": "Rate limit exceeded"}}
    assert json.loads(template.replace("%REQ(x-mcp-request-id)%", "7"))["id"] == 7
    assert without_id["body_format_override"]["json_format"]["id"] is None
    assert without_id["body_format_override"]["json_format"]["error"]["code"] == ErrorCode.RATE_LIMITED


def test_rate_limits_are_one_config_for_the_whole_virtual_host_shared_by_every_route() -> None:
    config = wanted_routes(RATE_LIMITED)
    host = config["virtual_hosts"][0]
    limiter = host["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    # No route has one of its own: a route's own config would have buckets of its own.
    assert not [r for r in host["routes"] if "envoy.filters.http.local_ratelimit" in r.get("typed_per_filter_config", {})]
    assert limiter["filter_enabled"] == limiter["filter_enforced"] == {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    assert limiter["local_rate_limit_per_downstream_connection"] is False  # per session, across connections
    assert limiter["always_consume_default_token_bucket"] is False
    assert limiter["max_dynamic_descriptors"] == 1000
    assert limiter["rate_limits"][0] == {
        "actions": [{"request_headers": {"header_name": "x-mcp-session", "descriptor_key": "session"}}]
    }
    session, forecast, files = limiter["descriptors"]
    # An empty value: a bucket per distinct session (and per distinct tool of a rule).
    assert session == {"entries": [{"key": "session", "value": ""}],
                       "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"}}
    assert forecast["entries"] == [{"key": "tool_rule", "value": "0"}, {"key": "tool", "value": ""}]
    assert forecast["token_bucket"] == {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "60s"}
    assert files["entries"][0] == {"key": "tool_rule", "value": "1"}
    files_rule = limiter["rate_limits"][2]["actions"]
    assert files_rule[0]["header_value_match"]["headers"] == [
        {"name": "x-mcp-method", "string_match": {"exact": "tools/call"}},
        {"name": "x-mcp-name", "string_match": {"safe_regex": {"regex": "f_.*"}}},
    ]
    assert files_rule[1] == {"request_headers": {"header_name": "x-mcp-name", "descriptor_key": "tool"}}
    added = {h["header"]["key"]: h["header"]["value"] for h in limiter["response_headers_to_add"]}
    # Buckets refill evenly: the longest wait for one token of any limit (10 a minute: 6 s).
    assert added["retry-after"] == "6"
    assert added["x-mcp-rate-limited"] == "1"
    # What the paths tell the limiter reaches neither an upstream nor the broker.
    for route in host["routes"]:
        if route["name"].startswith(("to_", "fast_to_")) and route["name"] not in (
            "to_broker_get", "to_broker_get_ws", "to_broker_delete"
        ):
            assert {"x-mcp-session", "x-mcp-name", "x-mcp-request-id"} <= set(route["request_headers_to_remove"]), route["name"]


def test_without_rate_limits_the_virtual_host_has_no_limiter_and_limits_never_change_the_generation() -> None:
    assert "typed_per_filter_config" not in wanted_routes(CONFIG)["virtual_hosts"][0]
    assert virtual_host_rate_limits(CONFIG.gateway.rate_limits) is None
    # Envoy applies the limits after routing, on both paths: no decision depends on them.
    assert generation(RATE_LIMITED) == generation(CONFIG)


@given(
    st.text(alphabet="ab_*?!-.+/$^( ", min_size=1, max_size=8),
    st.text(alphabet="ab_-.+[]!/$^( ", max_size=8),
)
def test_property_a_tool_pattern_matches_in_envoy_what_fnmatch_matches(pattern: str, name: str) -> None:
    # Envoy's RE2 and Python's re read the subset fnmatch_regex writes alike; Envoy matches the
    # whole header value, as fullmatch does.
    assert bool(re.fullmatch(fnmatch_regex(pattern), name)) == fnmatch.fnmatchcase(name, pattern)
