"""The pure reconcile: every Ready reason, conflicts, rendering and status patches, no cluster."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from mcp_gateway.config import ConfigError, parse_config
from mcp_gateway.controller.reconcile import (
    Desired,
    Reason,
    Snapshot,
    reconcile,
    render_config,
    status_patch,
)
from mcp_gateway.controller.resources import (
    EXTENSIONS,
    REGISTRATIONS,
    VIRTUAL_SERVERS,
    Extension,
    Gateway,
    ObjectKey,
    ReferenceGrant,
    Registration,
    Route,
    SecretView,
    UpstreamReport,
    VirtualServerSpec,
)

NS = "mcp-system"


def ext(name: str = "ext", created: str = "2026-01-01T00:00:00Z", **target: Any) -> Extension:
    ref = {"name": "gw", "namespace": "gateway-system", "sectionName": "mcp", **target}
    return Extension.from_object(
        {"metadata": {"name": name, "namespace": NS, "creationTimestamp": created, "generation": 1}, "spec": {"targetRef": ref}}
    )


def http_route(name: str, *backends: dict[str, Any], hostnames: tuple[str, ...] = ("h.mcp.local",), parents: Any = None) -> Route:
    return Route.from_object(
        {
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {
                "parentRefs": parents if parents is not None else [{"name": "gw", "namespace": "gateway-system"}],
                "hostnames": list(hostnames),
                "rules": [{"backendRefs": list(backends)}],
            },
        }
    )


def reg(name: str, route: str, prefix: str | None = None, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Registration:
    body: dict[str, Any] = {"targetRef": {"name": route}, **spec}
    if prefix is not None:
        body["prefix"] = prefix
    return Registration.from_object(
        {"metadata": {"name": name, "namespace": "apps", "creationTimestamp": created, "generation": 3}, "spec": body}
    )


def secret(name: str, **values: str) -> SecretView:
    return SecretView.from_object(
        {
            "metadata": {"name": name, "namespace": "apps"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }
    )


SVC = {"name": "svc", "port": 8080}


def gateway(
    name: str = "gw",
    ns: str = "gateway-system",
    listeners: tuple[str, ...] = ("mcp", "mcps"),
    allowed: dict[str, Any] | None = None,
) -> Gateway:
    """Listeners admit routes from every namespace unless `allowed` (allowedRoutes.namespaces) says
    otherwise; `allowed={}` leaves allowedRoutes out (Gateway API default: Same)."""
    namespaces = {"from": "All"} if allowed is None else allowed
    listener_docs = [
        {"name": n, "port": 8080, **({"allowedRoutes": {"namespaces": namespaces}} if namespaces else {})}
        for n in listeners
    ]
    return Gateway.from_object({"metadata": {"name": name, "namespace": ns}, "spec": {"listeners": listener_docs}})


def grant(
    from_ns: str = NS,
    ns: str = "gateway-system",
    *,
    to_name: str | None = None,
    group: str = "mcp.kuadrant.io",
    kind: str = "MCPGatewayExtension",
    to_kind: str = "Gateway",
) -> ReferenceGrant:
    to: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": to_kind}
    if to_name is not None:
        to["name"] = to_name
    return ReferenceGrant.from_object(
        {
            "metadata": {"name": f"allow-{from_ns}", "namespace": ns},
            "spec": {"from": [{"group": group, "kind": kind, "namespace": from_ns}], "to": [to]},
        }
    )


# Every Gateway the tests' extensions target, and grants for the namespaces they live in.
GATEWAYS = {g.key: g for g in (gateway("gw"), gateway("gw2"))}
GRANTS = [grant(NS), grant("elsewhere")]


def run(*registrations: Registration, routes: tuple[Route, ...] = (), **kwargs: Any) -> Desired:
    kwargs.setdefault("extensions", [ext()])
    kwargs.setdefault("gateways", GATEWAYS)
    kwargs.setdefault("reference_grants", GRANTS)
    snapshot = Snapshot(registrations=registrations, routes={r.key: r for r in routes}, **kwargs)
    return reconcile(snapshot, namespace=NS, secret_name="cfg")


def ready(desired: Desired, name: str, plural: str = REGISTRATIONS, ns: str = "apps") -> tuple[str, str, str]:
    status = desired.status_of(plural, ObjectKey(ns, name))
    assert status is not None
    return status.ready.status, status.ready.reason, status.ready.message


def test_ready_registration_becomes_a_server_entry() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),))
    assert desired.servers == (
        {
            "name": "apps/a",
            "url": "http://svc.apps.svc.cluster.local:8080/mcp",
            "hostname": "h.mcp.local",
            "prefix": "a_",
            "state": "Enabled",
        },
    )
    status, reason, message = ready(desired, "a")
    assert (status, reason) == ("True", Reason.CONFIG_WRITTEN)
    assert "mcp-system/ext" in message
    assert desired.status_of(REGISTRATIONS, ObjectKey("apps", "a")).generation == 3  # type: ignore[union-attr]


def test_custom_path_and_cross_namespace_backend() -> None:
    route = http_route("ra", {"name": "svc", "namespace": "other", "port": 9000})
    desired = run(reg("a", "ra", "a_", path="/v1/mcp"), routes=(route,))
    assert desired.servers[0]["url"] == "http://svc.other.svc.cluster.local:9000/v1/mcp"


@pytest.mark.parametrize(
    ("backend", "url"),
    [
        ({"group": "networking.istio.io", "kind": "Hostname", "name": "api.example.com", "port": 443}, "https://api.example.com/mcp"),
        ({"group": "networking.istio.io", "kind": "Hostname", "name": "api.example.com", "port": 8080}, "http://api.example.com:8080/mcp"),
    ],
)
def test_external_hostname_backend(backend: dict[str, Any], url: str) -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", backend),))
    assert desired.servers[0]["url"] == url


@pytest.mark.parametrize("prefix", ["Bad", "has space", "_lead", "dash-", "x" * 101])
def test_invalid_prefix(prefix: str) -> None:
    desired = run(reg("a", "ra", prefix), routes=(http_route("ra", SVC),))
    assert desired.servers == ()
    assert ready(desired, "a")[:2] == ("False", Reason.INVALID_PREFIX)


def test_prefix_and_legacy_tool_prefix_must_agree() -> None:
    desired = run(reg("a", "ra", "a_", toolPrefix="b_"), routes=(http_route("ra", SVC),))
    assert ready(desired, "a")[:2] == ("False", Reason.INVALID_PREFIX)
    legacy_only = run(reg("b", "ra", None, toolPrefix="b_"), routes=(http_route("ra", SVC),))
    assert legacy_only.servers[0]["prefix"] == "b_"


def test_route_not_found() -> None:
    status, reason, message = ready(run(reg("a", "missing", "a_")), "a")
    assert (status, reason) == ("False", Reason.ROUTE_NOT_FOUND)
    assert "apps/missing" in message


@pytest.mark.parametrize(
    ("backends", "fragment"),
    [
        ((), "no backendRefs"),
        (({"name": "one", "port": 1}, {"name": "two", "port": 2}), "2 different backendRefs"),
        (({"name": "svc"},), "has no port"),
        (({"kind": "ServiceImport", "group": "multicluster.x-k8s.io", "name": "s", "port": 1},), "not supported"),
    ],
)
def test_invalid_route(backends: tuple[dict[str, Any], ...], fragment: str) -> None:
    status, reason, message = ready(run(reg("a", "ra", "a_"), routes=(http_route("ra", *backends),)), "a")
    assert (status, reason) == ("False", Reason.INVALID_ROUTE)
    assert fragment in message


def test_no_gateway_extension() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), extensions=[])
    assert ready(desired, "a")[:2] == ("False", Reason.NO_GATEWAY_EXTENSION)


def other_instance_extension(gateway: str = "gw", name: str = "x", created: str = "2026-01-01T00:00:00Z") -> Extension:
    return Extension.from_object(
        {
            "metadata": {"name": name, "namespace": "elsewhere", "creationTimestamp": created},
            "spec": {"targetRef": {"name": gateway, "namespace": "gateway-system", "sectionName": "mcp"}},
        }
    )


def test_registration_served_by_another_instance_is_left_to_it() -> None:
    """Another namespace's extension serves `gw`: its instance owns the route; we write nothing."""
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), extensions=[other_instance_extension()])
    assert desired.servers == ()
    assert desired.status_of(REGISTRATIONS, ObjectKey("apps", "a")) is None
    assert desired.status_of(EXTENSIONS, ObjectKey("elsewhere", "x")) is None  # theirs to report


def test_two_instances_split_registrations_by_gateway() -> None:
    ours, theirs = ext(), other_instance_extension(gateway="gw2")
    routes = (
        http_route("r1", SVC),
        http_route("r2", {"name": "svc2", "port": 1}, parents=[{"name": "gw2", "namespace": "gateway-system"}]),
        http_route("r3", {"name": "svc3", "port": 1}, parents=[{"name": "gw", "namespace": "gateway-system"}, {"name": "gw2", "namespace": "gateway-system"}]),
    )
    regs = (reg("mine", "r1", "m_"), reg("yours", "r2", "y_"), reg("both", "r3", "b_"))
    desired = run(*regs, routes=routes, extensions=[ours, theirs])
    assert [s["name"] for s in desired.servers] == ["apps/both", "apps/mine"]
    assert desired.status_of(REGISTRATIONS, ObjectKey("apps", "yours")) is None
    # A server both instances serve gets the same message from both: no status tug of war.
    both = ready(desired, "both")[2]
    assert "elsewhere/x" in both and "mcp-system/ext" in both
    mirrored = reconcile(
        Snapshot(
            registrations=regs,
            routes={r.key: r for r in routes},
            extensions=[ours, theirs],
            gateways=GATEWAYS,
            reference_grants=GRANTS,
        ),
        namespace="elsewhere",
        secret_name="cfg",
    )
    assert ready(mirrored, "both") == ready(desired, "both")
    assert [s["name"] for s in mirrored.servers] == ["apps/both", "apps/yours"]


def test_one_extension_per_gateway_oldest_wins() -> None:
    older = other_instance_extension(created="2025-01-01T00:00:00Z")
    desired = run(extensions=[ext(), older])
    status, reason, message = ready(desired, "ext", EXTENSIONS, NS)
    assert (status, reason) == ("False", Reason.INVALID_EXTENSION)
    assert "elsewhere/x" in message


def test_route_not_attached_to_the_extension_gateway() -> None:
    elsewhere = http_route("ra", SVC, parents=[{"name": "other-gw", "namespace": "gateway-system"}])
    assert ready(run(reg("a", "ra", "a_"), routes=(elsewhere,)), "a")[1] == Reason.ROUTE_NOT_ATTACHED
    other_namespace = http_route("ra", SVC, parents=[{"name": "gw", "namespace": "apps"}])
    assert ready(run(reg("a", "ra", "a_"), routes=(other_namespace,)), "a")[1] == Reason.ROUTE_NOT_ATTACHED
    # Server routes attach to a wildcard listener beside the extension's own: still attached.
    wildcard_listener = http_route("ra", SVC, parents=[{"name": "gw", "namespace": "gateway-system", "sectionName": "mcps"}])
    assert ready(run(reg("a", "ra", "a_"), routes=(wildcard_listener,)), "a")[1] == Reason.CONFIG_WRITTEN


def test_second_extension_in_namespace_is_invalid_and_oldest_wins() -> None:
    older, newer = ext("older", "2026-01-01T00:00:00Z"), ext("newer", "2026-02-01T00:00:00Z")
    desired = run(extensions=[newer, older])
    assert ready(desired, "older", EXTENSIONS, NS)[:2] == ("True", Reason.VALID_EXTENSION)
    status, reason, message = ready(desired, "newer", EXTENSIONS, NS)
    assert (status, reason) == ("False", Reason.INVALID_EXTENSION)
    assert "mcp-system/older" in message


def test_credential_reasons_and_value_only_in_config() -> None:
    route = (http_route("ra", SVC),)
    with_cred = reg("a", "ra", "a_", credentialRef={"name": "tok"})
    assert ready(run(with_cred, routes=route), "a")[1] == Reason.CREDENTIAL_SECRET_MISSING
    unlabelled = run(with_cred, routes=route, unlabelled_secrets=frozenset({ObjectKey("apps", "tok")}))
    assert ready(unlabelled, "a")[1] == Reason.CREDENTIAL_SECRET_NOT_LABELLED
    wrong_key = run(with_cred, routes=route, secrets={ObjectKey("apps", "tok"): secret("tok", other="Bearer xyz-123")})
    _, reason, message = ready(wrong_key, "a")
    assert reason == Reason.CREDENTIAL_KEY_MISSING and "other" in message and "xyz-123" not in message
    good = run(with_cred, routes=route, secrets={ObjectKey("apps", "tok"): secret("tok", token="Bearer xyz-123")})
    assert good.servers[0]["credential"] == "Bearer xyz-123"
    assert all("xyz-123" not in c.message for s in good.statuses for c in s.conditions)
    assert "xyz-123" not in repr(secret("tok", token="Bearer xyz-123"))


def test_ca_cert_reasons() -> None:
    route = (http_route("ra", SVC),)
    with_ca = reg("a", "ra", "a_", caCertSecretRef={"name": "ca"})
    assert ready(run(with_ca, routes=route), "a")[1] == Reason.CA_CERT_SECRET_MISSING
    no_key = run(with_ca, routes=route, secrets={ObjectKey("apps", "ca"): secret("ca", other="x")})
    assert ready(no_key, "a")[1] == Reason.CA_CERT_KEY_MISSING
    good = run(with_ca, routes=route, secrets={ObjectKey("apps", "ca"): secret("ca", **{"ca.crt": "PEM"})})
    assert good.servers[0]["caCert"] == "PEM"


def test_duplicate_prefix_oldest_keeps_it() -> None:
    routes = (http_route("r1", SVC), http_route("r2", {"name": "svc2", "port": 1}))
    older = reg("older", "r1", "same_", created="2026-01-01T00:00:00Z")
    newer = reg("newer", "r2", "same_", created="2026-03-01T00:00:00Z")
    desired = run(newer, older, routes=routes)
    assert [s["name"] for s in desired.servers] == ["apps/older"]
    status, reason, message = ready(desired, "newer")
    assert (status, reason) == ("False", Reason.DUPLICATE_PREFIX)
    assert "apps/older" in message


def test_two_unprefixed_servers_are_duplicates_and_overlaps_are_refused() -> None:
    routes = (http_route("r1", SVC), http_route("r2", {"name": "svc2", "port": 1}))
    unprefixed = run(reg("a", "r1", None), reg("b", "r2", None, created="2026-05-01T00:00:00Z"), routes=routes)
    assert ready(unprefixed, "b")[1] == Reason.DUPLICATE_PREFIX
    overlap = run(reg("a", "r1", "ab_"), reg("b", "r2", "ab_c_", created="2026-05-01T00:00:00Z"), routes=routes)
    assert ready(overlap, "b")[1] == Reason.PREFIX_OVERLAP


def test_disabled_server_stays_in_config_disabled() -> None:
    desired = run(reg("a", "ra", "a_", state="Disabled"), routes=(http_route("ra", SVC),))
    assert desired.servers[0]["state"] == "Disabled"
    assert ready(desired, "a")[:2] == ("False", Reason.DISABLED)


def test_discovered_tools_and_condition_from_the_brokers_view() -> None:
    route = (http_route("ra", SVC),)
    ready_report = UpstreamReport(state="ready", reason=None, tools=7)
    desired = run(reg("a", "ra", "a_"), routes=route, upstreams={"apps/a": ready_report})
    status = desired.status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert status is not None and status.extra == {"discoveredTools": 7}
    (discovered,) = [c for c in status.conditions if c.type == "Discovered"]
    assert (discovered.status, discovered.reason) == ("True", Reason.TOOLS_DISCOVERED)
    failed = UpstreamReport(state="failed", reason="connect refused " + "x" * 900, tools=0)
    status = run(reg("a", "ra", "a_"), routes=route, upstreams={"apps/a": failed}).status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert status is not None
    (discovered,) = [c for c in status.conditions if c.type == "Discovered"]
    assert (discovered.status, discovered.reason) == ("False", Reason.UPSTREAM_FAILED)
    assert "connect refused" in discovered.message and len(discovered.message) < 600
    assert status.ready.status == "True"  # the registration itself is fine; the server is not
    # Not in the config -> no view of the broker reported.
    broken = run(reg("a", "missing", "a_"), upstreams={"apps/a": ready_report}).status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert broken is not None and len(broken.conditions) == 1 and broken.extra == {}


def test_virtual_servers() -> None:
    vs_ok = VirtualServerSpec.from_object({"metadata": {"name": "v", "namespace": "apps"}, "spec": {"tools": ["a_x"]}})
    vs_bad = VirtualServerSpec.from_object(
        {"metadata": {"name": "w", "namespace": "apps"}, "spec": {"tools": ["a_x", "zz_y"], "prompts": ["p"]}}
    )
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), virtual_servers=[vs_bad, vs_ok])
    assert desired.virtual_servers == (
        {"name": "apps/v", "tools": ["a_x"]},
        {"name": "apps/w", "tools": ["a_x", "zz_y"], "prompts": ["p"]},
    )
    assert ready(desired, "v", VIRTUAL_SERVERS)[:2] == ("True", Reason.VIRTUAL_SERVER_PROGRAMMED)
    status, reason, message = ready(desired, "w", VIRTUAL_SERVERS)
    assert (status, reason) == ("False", Reason.UNKNOWN_TOOL_PREFIX) and "zz_y" in message


# -- rendering ----------------------------------------------------------------------------------

EXISTING = """
gateway:
  broker_listen: 0.0.0.0:8081
  router_listen: 0.0.0.0:9002
servers:
  - name: stale
    url: http://stale:1/mcp
"""


def test_render_replaces_servers_keeps_gateway_section_and_is_canonical() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),))
    text = render_config(desired, EXISTING)
    config = parse_config(text)
    assert [s.name for s in config.servers] == ["apps/a"]
    assert config.gateway.broker_listen == "0.0.0.0:8081"
    assert render_config(desired, text) == text  # unchanged cluster -> same bytes -> no write
    assert yaml.safe_load(text)["servers"][0]["state"] == "Enabled"


def test_render_from_nothing_and_invalid_existing_is_refused() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),))
    assert parse_config(render_config(desired, None)).servers[0].prefix == "a_"
    with pytest.raises(ConfigError):
        render_config(desired, "servers: [{name: x}]\n")


def test_every_desired_config_parses() -> None:
    routes = tuple(http_route(f"r{i}", {"name": f"s{i}", "port": 80 + i}) for i in range(5))
    regs = [reg(f"a{i}", f"r{i}", f"p{i}_", created=f"2026-01-0{i + 1}T00:00:00Z") for i in range(5)]
    regs.append(reg("dup", "r0", "p0_", created="2026-02-01T00:00:00Z"))
    config = parse_config(render_config(run(*regs, routes=routes), None))
    assert len(config.servers) == 5


# -- status patches -----------------------------------------------------------------------------


def test_status_patch_only_when_something_changed_and_transition_time_kept() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),))
    status = desired.status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert status is not None
    first = status_patch({}, status, "2026-01-01T00:00:00Z")
    assert first is not None
    applied = first["status"]
    assert applied["observedGeneration"] == 3
    assert status_patch(applied, status, "2026-06-01T00:00:00Z") is None
    broken = run(reg("a", "missing", "a_")).status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert broken is not None
    moved = status_patch(applied, broken, "2026-06-01T00:00:00Z")
    assert moved is not None and moved["status"]["conditions"][0]["lastTransitionTime"] == "2026-06-01T00:00:00Z"
    same_status_new_message = run(reg("a", "gone", "a_")).status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert same_status_new_message is not None
    kept = status_patch(moved["status"], same_status_new_message, "2026-07-01T00:00:00Z")
    assert kept is not None and kept["status"]["conditions"][0]["lastTransitionTime"] == "2026-06-01T00:00:00Z"


def test_status_patch_drops_stale_tool_count() -> None:
    status = run(reg("a", "missing", "a_")).status_of(REGISTRATIONS, ObjectKey("apps", "a"))
    assert status is not None
    patch = status_patch({"discoveredTools": 4}, status, "2026-01-01T00:00:00Z")
    assert patch is not None and patch["status"]["discoveredTools"] is None


def test_upstream_reports_read_from_the_brokers_status_shape() -> None:
    from mcp_gateway.controller.resources import upstream_reports
    from mcp_gateway.upstream.supervisor import UpstreamState, UpstreamStatus

    upstream = UpstreamStatus(
        name="apps/a",
        url="http://svc.apps.svc.cluster.local:8080/mcp",
        prefix="a_",
        state=UpstreamState.DEGRADED,
        reason="prompts/list failed",
        counts={"tools": 5, "prompts": 1},
        last_refresh=None,
        protocol_version=None,
        server_info=None,
        consecutive_failures=0,
    )
    document = {"ready": True, "upstreams": [upstream.to_json(), {"name": "x", "toolCount": True}, "junk"]}
    assert upstream_reports(document) == {"apps/a": UpstreamReport("degraded", "prompts/list failed", 5)}
    assert upstream_reports(["not", "a", "mapping"]) == {}


# -- the extension's target: Gateway existence, listener, ReferenceGrant (Kuadrant's rules) ----


def extension_ready(desired: Desired, name: str = "ext") -> tuple[str, str, str]:
    status = desired.status_of(EXTENSIONS, ObjectKey(NS, name))
    assert status is not None
    return status.ready.status, status.ready.reason, status.ready.message


def test_extension_whose_gateway_is_missing_is_invalid_and_serves_nothing() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), gateways={})
    assert extension_ready(desired) == (
        "False", Reason.INVALID_EXTENSION, "Gateway gateway-system/gw (spec.targetRef) not found"
    )
    assert desired.servers == ()
    assert ready(desired, "a") == (
        "False", Reason.NO_GATEWAY_EXTENSION, "no valid MCPGatewayExtension: mcp-system/ext not Ready (its status says why)"
    )


def test_extension_naming_a_listener_the_gateway_lacks_is_invalid() -> None:
    desired = run(extensions=[ext(sectionName="public")])
    status, reason, message = extension_ready(desired)
    assert (status, reason) == ("False", Reason.INVALID_EXTENSION)
    assert "listener 'public'" in message and "gateway-system/gw" in message and "mcp, mcps" in message


def test_extension_without_a_listener_name_needs_only_the_gateway() -> None:
    desired = run(extensions=[ext(sectionName=None)])
    assert extension_ready(desired)[:2] == ("True", Reason.VALID_EXTENSION)


def test_cross_namespace_extension_without_a_reference_grant_is_refused_with_what_to_create() -> None:
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), reference_grants=[])
    status, reason, message = extension_ready(desired)
    assert (status, reason) == ("False", "ReferenceGrantRequired")
    assert "namespace gateway-system" in message
    assert "group: mcp.kuadrant.io, kind: MCPGatewayExtension, namespace: mcp-system" in message
    assert "group: gateway.networking.k8s.io, kind: Gateway" in message
    assert desired.servers == ()
    assert ready(desired, "a")[:2] == ("False", Reason.NO_GATEWAY_EXTENSION)


def test_extension_in_the_gateways_namespace_needs_no_reference_grant() -> None:
    local = ext(namespace=NS)
    desired = run(extensions=[local], gateways={gateway("gw", NS).key: gateway("gw", NS)}, reference_grants=[])
    assert extension_ready(desired)[:2] == ("True", Reason.VALID_EXTENSION)


@pytest.mark.parametrize(
    ("the_grant", "allows"),
    [
        (grant(NS), True),
        (grant(NS, to_name="gw"), True),  # `to` naming this Gateway
        (grant(NS, to_name="other-gw"), False),  # naming another Gateway
        (grant("team-x"), False),  # for another namespace's extensions
        (grant(NS, ns="elsewhere"), False),  # not in the Gateway's namespace
        (grant(NS, group="gateway.networking.k8s.io"), False),  # wrong `from` group
        (grant(NS, group="mcp.kagenti.com"), False),  # the older project's group is not ours
        (grant(NS, kind="HTTPRoute"), False),  # wrong `from` kind
        (grant(NS, to_kind="Service"), False),  # grants Services, not Gateways
    ],
)
def test_which_reference_grants_allow_the_extension(the_grant: ReferenceGrant, allows: bool) -> None:
    desired = run(reference_grants=[the_grant])
    assert extension_ready(desired)[1] == (Reason.VALID_EXTENSION if allows else "ReferenceGrantRequired")


def test_an_extension_refused_for_its_reference_does_not_block_a_valid_younger_one() -> None:
    """An older extension without a grant claims neither the Gateway nor its namespace."""
    refused = ext("old", created="2025-01-01T00:00:00Z")
    valid = other_instance_extension(created="2026-06-01T00:00:00Z")
    desired = run(reg("a", "ra", "a_"), routes=(http_route("ra", SVC),), extensions=[refused, valid], reference_grants=[grant("elsewhere")])
    assert extension_ready(desired, "old")[1] == "ReferenceGrantRequired"
    # The registration's route attaches to gw, which the other instance now serves: left to it.
    assert desired.status_of(REGISTRATIONS, ObjectKey("apps", "a")) is None


@pytest.mark.parametrize(
    ("allowed", "labels", "admitted"),
    [
        ({}, {}, False),  # no allowedRoutes: Same, and the extension is in mcp-system
        ({"from": "Same"}, {}, False),
        ({"from": "None"}, {}, False),
        ({"from": "All"}, {}, True),
        ({"from": "Selector", "selector": {"matchLabels": {"mcp": "yes"}}}, {"mcp": "yes"}, True),
        ({"from": "Selector", "selector": {"matchLabels": {"mcp": "yes"}}}, {"mcp": "no"}, False),
        ({"from": "Selector", "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}, {"tier": "b"}, True),
        ({"from": "Selector", "selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}}, {"tier": "a"}, False),
        ({"from": "Selector", "selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}, {}, False),
        ({"from": "Selector", "selector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}, {}, True),
        ({"from": "Selector"}, {"mcp": "yes"}, False),  # Selector without a selector admits nothing
        ({"from": "Someday"}, {}, False),  # an unknown value admits nothing
    ],
)
def test_the_listener_must_admit_routes_from_the_extensions_namespace(
    allowed: dict[str, Any], labels: dict[str, str], admitted: bool
) -> None:
    gw = gateway(allowed=allowed)
    desired = run(gateways={gw.key: gw}, namespace_labels={NS: labels})
    status, reason, message = extension_ready(desired)
    if admitted:
        assert (status, reason) == ("True", Reason.VALID_EXTENSION)
    else:
        assert (status, reason) == ("False", Reason.INVALID_EXTENSION)
        assert message.startswith("listener 'mcp' on Gateway gateway-system/gw does not allow routes from namespace mcp-system")


def test_same_namespace_listener_admits_an_extension_beside_its_gateway() -> None:
    gw = gateway("gw", NS, allowed={})
    desired = run(extensions=[ext(namespace=NS)], gateways={gw.key: gw}, reference_grants=[])
    assert extension_ready(desired)[:2] == ("True", Reason.VALID_EXTENSION)
