"""The controller's RBAC in deploy/ is derived from what its code does, not from a hand list.

The controller runs against the emulator through a scenario that takes every code path that
touches the API (list/watch of everything, the unlabelled-Secret probe, creating then updating
the config Secret, status patches of all three kinds, creating, renewing and releasing the
Lease). kmock records every request; each one the controller made must be allowed by the
ServiceAccount's bindings, and every rule granted must have been needed by some request.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import yaml

from tests.k8s.harness import (
    NS,
    TEST_NS,
    Cluster,
    credential_secret,
    eventually,
    extension,
    fast_settings,
    install_crds,
    registration,
    renew_periods,
    route,
)
from tests.k8s.harness import running_controller as run_controller
from tests.support.kmock_emulator import EmulatorThread

ROOT = pathlib.Path(__file__).resolve().parents[2]
RBAC_FILE = ROOT / "deploy" / "base" / "controller-rbac.yaml"
SERVICE_ACCOUNT = ("mcp-system", "mcp-gateway-controller")


@dataclass(frozen=True)
class ApiCall:
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None


@dataclass(frozen=True)
class Grant:
    rule_id: int
    namespace: str | None  # None: cluster-wide (ClusterRoleBinding)
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]

    def allows(self, call: ApiCall) -> bool:
        return (
            (self.namespace is None or call.namespace == self.namespace)
            and ("*" in self.groups or call.group in self.groups)
            and ("*" in self.resources or call.resource in self.resources)
            and ("*" in self.verbs or call.verb in self.verbs)
            and (not self.names or call.name in self.names)
        )


def api_call(request: Any) -> ApiCall:
    method = request.method.value
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    name = request.name
    selector = request.params.get("fieldSelector", "")
    if name is None and selector.startswith("metadata.name="):
        name = selector.split("=", 1)[1]  # RBAC resourceNames apply to list/watch by name
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return ApiCall(verb, request.resource.group, resource, request.namespace, name)


def grants_for_service_account() -> list[Grant]:
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    grants: list[Grant] = []
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {(s.get("namespace"), s["name"]) for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
        if SERVICE_ACCOUNT not in subjects:
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        for index, rule in enumerate(role["rules"]):
            grants.append(
                Grant(
                    rule_id=hash((ref["kind"], ref["name"], index)),
                    namespace=scope,
                    groups=frozenset(rule.get("apiGroups", [])),
                    resources=frozenset(rule.get("resources", [])),
                    verbs=frozenset(rule.get("verbs", [])),
                    names=frozenset(rule.get("resourceNames", [])),
                )
            )
    return grants


@pytest.fixture
async def recorded_calls(k8s: EmulatorThread, client: Any) -> list[ApiCall]:
    install_crds(client)
    cluster = Cluster(client)
    cluster.core.create_namespaced_secret(TEST_NS, credential_secret("tok", "abcdef-123", labelled=False))
    cluster.core.create_namespaced_config_map(
        NS, {"metadata": {"name": "mcp-gateway-base"}, "data": {"config.yaml": "gateway:\n  page_size: 50\n"}}
    )
    cluster.create_extension(extension())
    cluster.create(route("r", "svc"))
    cluster.create(registration("reg", "r", "p_", credentialRef={"name": "tok"}))
    cluster.create(
        {
            "apiVersion": "mcp.kuadrant.io/v1",
            "kind": "MCPVirtualServer",
            "metadata": {"name": "vs", "namespace": TEST_NS},
            "spec": {"tools": ["p_hello"]},
        }
    )

    def reason() -> str | None:
        ready = cluster.ready("mcpserverregistrations", "reg")
        return ready["reason"] if ready else None

    async with run_controller(k8s.url, fast_settings("rbac-probe", base_configmap="mcp-gateway-base")):
        await eventually(lambda: reason() == "CredentialSecretNotLabelled", what="unlabelled reason")
        await eventually(lambda: cluster.ready("mcpvirtualservers", "vs"), what="virtual server status")
        await eventually(lambda: cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS), what="extension status")
        await trio.to_thread.run_sync(
            lambda: cluster.core.patch_namespaced_secret("tok", TEST_NS, {"metadata": {"labels": {"mcp.kuadrant.io/secret": "true"}}})
        )
        await eventually(lambda: reason() == "ConfigWritten", what="ready")
        await eventually(lambda: (c := cluster.config()) and c.servers, what="config with the server")
        await renew_periods(k8s, "rbac-probe", 3)  # a few Lease renewals are in the log too
    # Leaving the block released the Lease; its requests are in the log now.
    return [
        api_call(r)
        for r in k8s.emulator.requests
        if "mcp-gateway-controller" in r.headers.get("User-Agent", "") and r.resource is not None and r.resource.plural
    ]


async def test_rbac_allows_every_call_the_controller_makes_and_grants_nothing_more(
    recorded_calls: list[ApiCall],
) -> None:
    grants = grants_for_service_account()
    assert grants, "no RBAC bound to the controller's ServiceAccount"
    calls = set(recorded_calls)
    denied = sorted((c for c in calls if not any(g.allows(c) for g in grants)), key=str)
    assert denied == [], "calls the RBAC would refuse"

    # Every verb of every granted rule was needed by at least one call.
    unused = []
    for grant in grants:
        for resource in grant.resources:
            for verb in grant.verbs:
                narrowed = Grant(grant.rule_id, grant.namespace, grant.groups, frozenset({resource}), frozenset({verb}), grant.names)
                if not any(narrowed.allows(c) for c in calls):
                    unused.append((sorted(grant.groups), resource, verb, sorted(grant.names)))
    assert unused == [], "granted but never used"

    # The scenario really took the write paths (otherwise the checks above prove little).
    verbs = {(c.verb, c.resource) for c in calls}
    for expected in [
        ("create", "secrets"),
        ("update", "secrets"),
        ("get", "secrets"),
        ("create", "leases"),
        ("update", "leases"),
        ("patch", "mcpserverregistrations/status"),
        ("patch", "mcpvirtualservers/status"),
        ("patch", "mcpgatewayextensions/status"),
        ("watch", "httproutes"),
        ("watch", "configmaps"),
    ]:
        assert expected in verbs, expected
