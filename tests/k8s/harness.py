"""Shared pieces for driving the real controller against the kmock emulator."""

from __future__ import annotations

import base64
import pathlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import kubernetes
import trio
import yaml
from kubernetes.client.exceptions import ApiException

from mcp_gateway.config import GatewayConfig, parse_config
from mcp_gateway.controller.informer import WatchTiming
from mcp_gateway.controller.leader import LeaseTiming
from mcp_gateway.controller.main import USER_AGENT
from mcp_gateway.controller.service import Controller, ControllerSettings
from tests.support.kmock_emulator import EmulatorThread, api_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "deploy" / "crds"
GROUP, VERSION = "mcp.kuadrant.io", "v1"
NS = "mcp-system"
TEST_NS = "mcp-test"
SECRET = "mcp-gateway-config"

T = TypeVar("T")


def install_crds(client: Any) -> None:
    api = kubernetes.client.ApiextensionsV1Api(client)
    for path in sorted(CRD_DIR.glob("mcp*.yaml")):
        api.create_custom_resource_definition(yaml.safe_load(path.read_text()))


def fast_settings(identity: str = "replica-a", **overrides: Any) -> ControllerSettings:
    settings = ControllerSettings(
        namespace=NS,
        identity=identity,
        secret_name=SECRET,
        resync_seconds=5.0,
        debounce_seconds=0.02,
        watch=WatchTiming(timeout_seconds=2, retry_seconds=0.2),
        lease=LeaseTiming(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2),
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


@asynccontextmanager
async def running_controller(url: str, settings: ControllerSettings) -> AsyncIterator[Controller]:
    client = api_client(url, user_agent=f"{USER_AGENT} ({settings.identity})")
    controller = Controller(client, settings)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(controller.run)
            yield controller
            nursery.cancel_scope.cancel()
    finally:
        client.close()


async def eventually(probe: Callable[[], T | None], what: str = "", within: float = 10.0) -> T:
    """Poll `probe` (run in a thread: it calls the API) until it returns something truthy."""
    with trio.move_on_after(within):
        while True:
            result = await trio.to_thread.run_sync(probe)
            if result:
                return result
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or probe}")


def kubeconfig(url: str, path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig file at `path` pointing at the emulator (which checks no token)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": "not-checked-by-the-emulator"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


def api_calls(k8s: EmulatorThread, matches: Callable[[Any], bool]) -> int:
    """How many requests in the emulator's log `matches` accepts."""
    return sum(1 for request in list(k8s.emulator.requests) if matches(request))


def lease_calls_of(identity: str) -> Callable[[Any], bool]:
    """Requests on the Lease by the controller replica `identity` (its user agent ends so)."""

    def matches(request: Any) -> bool:
        plural = request.resource.plural if request.resource is not None else ""
        return plural == "leases" and request.headers.get("User-Agent", "").endswith(f"({identity})")

    return matches


def lists_of(plural: str) -> Callable[[Any], bool]:
    """List requests on `plural`, answered or not (a kind without its CRD is answered 404)."""

    def matches(request: Any) -> bool:
        method = request.method.value if request.method is not None else ""
        return method == "GET" and request.url.path.endswith(f"/{plural}") and "watch" not in request.params

    return matches


async def after_calls(k8s: EmulatorThread, matches: Callable[[Any], bool], more: int, what: str) -> None:
    """Return once the emulator has logged `more` further requests that `matches` accepts.

    The quiet window of a "nothing happened" check, measured by what the controller did (so
    many Lease renewals, so many list retries), not by the wall clock: a slow machine slows
    the window with the controller."""
    start = api_calls(k8s, matches)
    await eventually(lambda: api_calls(k8s, matches) >= start + more, what=what)


async def renew_periods(k8s: EmulatorThread, identity: str, periods: int = 3) -> None:
    """Return once replica `identity` has made `periods` more Lease requests: as many of its
    retry periods (leader: a renewal each; standby: an acquire attempt each) have passed."""
    await after_calls(k8s, lease_calls_of(identity), periods, f"{periods} Lease calls of {identity}")


# -- objects ------------------------------------------------------------------------------------


def extension(name: str = "mcp-gateway", gateway: str = "mcp-gateway", gateway_ns: str = "gateway-system") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPGatewayExtension",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetRef": {"name": gateway, "namespace": gateway_ns, "sectionName": "mcp"}},
    }


def gateway(name: str = "mcp-gateway", ns: str = "gateway-system", listeners: tuple[str, ...] = ("mcp",)) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [
                {"name": n, "port": 8080, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
                for n in listeners
            ],
        },
    }


def reference_grant(
    name: str = "allow-mcp-extensions", ns: str = "gateway-system", from_ns: str = NS, gateway_name: str | None = None
) -> dict[str, Any]:
    """Kuadrant's shape: MCPGatewayExtensions of `from_ns` may target Gateways in `ns`."""
    to: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
    if gateway_name is not None:
        to["name"] = gateway_name
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"from": [{"group": GROUP, "kind": "MCPGatewayExtension", "namespace": from_ns}], "to": [to]},
    }


def route(name: str, service: str, port: int = 9090, hostname: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": TEST_NS, "labels": {"mcp-server": "true"}},
        "spec": {
            "parentRefs": [{"name": "mcp-gateway", "namespace": "gateway-system", "sectionName": "mcp"}],
            "hostnames": [hostname or f"{service}.mcp.local"],
            "rules": [{"backendRefs": [{"name": service, "port": port}]}],
        },
    }


def registration(name: str, route_name: str, prefix: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route_name}}
    if prefix is not None:
        body["prefix"] = prefix
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MCPServerRegistration",
        "metadata": {"name": name, "namespace": TEST_NS},
        "spec": body,
    }


def credential_secret(name: str, value: str, labelled: bool = True, key: str = "token") -> dict[str, Any]:
    labels = {"mcp.kuadrant.io/secret": "true"} if labelled else {}
    return {"metadata": {"name": name, "namespace": TEST_NS, "labels": labels}, "stringData": {key: value}}


class Cluster:
    """Thin helpers over the real client, as the tests' own user."""

    def __init__(self, client: Any) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        group, version = obj["apiVersion"].split("/")
        plural = {
            "MCPGatewayExtension": "mcpgatewayextensions",
            "MCPServerRegistration": "mcpserverregistrations",
            "MCPVirtualServer": "mcpvirtualservers",
            "HTTPRoute": "httproutes",
            "Gateway": "gateways",
            "ReferenceGrant": "referencegrants",
        }[obj["kind"]]
        ns = obj["metadata"]["namespace"]
        return dict(self.custom.create_namespaced_custom_object(group, version, ns, plural, obj))

    def create_extension(self, obj: dict[str, Any], *, grant: bool = True) -> dict[str, Any]:
        """Create an MCPGatewayExtension with what makes it valid: its target Gateway (with the
        listener it names) and, when the Gateway is in another namespace and `grant`, a
        ReferenceGrant there for the extension's namespace. Existing ones are kept."""
        target = obj["spec"]["targetRef"]
        ns = obj["metadata"]["namespace"]
        gateway_ns = target.get("namespace") or ns
        listeners = (target["sectionName"],) if target.get("sectionName") else ("mcp",)
        wanted = [gateway(target["name"], gateway_ns, listeners)]
        if grant and gateway_ns != ns:
            wanted.append(reference_grant(f"allow-mcp-extensions-from-{ns}", gateway_ns, ns))
        for body in wanted:
            try:
                self.create(body)
            except ApiException as err:
                if err.status != 409:
                    raise
        return self.create(obj)

    def delete(self, plural: str, name: str, group: str = GROUP, ns: str = TEST_NS, version: str = VERSION) -> None:
        self.custom.delete_namespaced_custom_object(group, version, ns, plural, name)

    def registration(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, TEST_NS, "mcpserverregistrations", name))

    def ready(self, plural: str, name: str, ns: str = TEST_NS) -> dict[str, Any] | None:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready":
                return dict(condition)
        return None

    def config(self) -> GatewayConfig | None:
        try:
            secret = self.core.read_namespaced_secret(SECRET, NS)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        text = base64.b64decode((secret.data or {})["config.yaml"]).decode()
        return parse_config(text, source="config Secret")

    def config_text(self) -> str:
        secret = self.core.read_namespaced_secret(SECRET, NS)
        return base64.b64decode((secret.data or {})["config.yaml"]).decode()
