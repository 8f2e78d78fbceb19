"""Kuadrant's checks of an MCPGatewayExtension's target, through the real client and the emulator:
a Gateway in another namespace needs a ReferenceGrant there, a missing Gateway is reported, and
the instance serves nothing (an empty server list) until both are right."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from mcp_gateway.controller.service import KIND_REFERENCE_GRANTS
from tests.k8s.harness import (
    NS,
    Cluster,
    eventually,
    extension,
    fast_settings,
    gateway,
    install_crds,
    reference_grant,
    registration,
    renew_periods,
    route,
    running_controller,
)
from tests.support.kmock_emulator import EmulatorThread


@pytest.fixture
def cluster(client: Any) -> Cluster:
    install_crds(client)
    return Cluster(client)


def extension_reason(cluster: Cluster, expected: str) -> Any:
    def probe() -> dict[str, Any] | None:
        ready = cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS)
        return ready if ready is not None and ready["reason"] == expected else None

    return probe


def served(cluster: Cluster) -> list[str] | None:
    config = cluster.config()
    return [s.name for s in config.servers] if config is not None else None


async def test_cross_namespace_extension_waits_for_its_reference_grant(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension(), grant=False)
    cluster.create(route("r", "svc"))
    cluster.create(registration("reg", "r", "p_"))
    async with running_controller(k8s.url, fast_settings()) as controller:
        refused = await eventually(extension_reason(cluster, "ReferenceGrantRequired"), what="ReferenceGrantRequired")
        assert refused["status"] == "False"
        assert "namespace gateway-system" in refused["message"] and "namespace: mcp-system" in refused["message"]
        assert await eventually(lambda: served(cluster) == [] or None, what="an empty server list")
        # The controller writes the config and the statuses one after the other: under load the
        # registration's status can trail the config by a pass, so wait for it too.
        def registration_waits() -> dict[str, Any] | None:
            ready = cluster.ready("mcpserverregistrations", "reg")
            return ready if ready is not None and ready["reason"] == "NoGatewayExtension" else None

        registration_ready = await eventually(registration_waits, what="the registration's NoGatewayExtension")
        assert registration_ready["status"] == "False"

        # A grant for another namespace's extensions changes nothing.
        await trio.to_thread.run_sync(lambda: cluster.create(reference_grant("for-team-b", from_ns="team-b")))
        grants = controller.cache.setdefault(KIND_REFERENCE_GRANTS, {})
        await eventually(lambda: any(key.name == "for-team-b" for key in list(grants)), what="the grant seen")
        await renew_periods(k8s, "replica-a", 3)  # and its passes run (debounce 0.02 s)
        assert (cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS) or {})["reason"] == "ReferenceGrantRequired"

        # The right grant, limited to this Gateway by name: valid, and the server is served.
        await trio.to_thread.run_sync(lambda: cluster.create(reference_grant(gateway_name="mcp-gateway")))
        await eventually(extension_reason(cluster, "ValidMCPGatewayExtension"), what="valid once granted")
        assert await eventually(lambda: served(cluster) == ["mcp-test/reg"] or None, what="the server served")

        # Withdrawn: refused again and the server leaves the config.
        await trio.to_thread.run_sync(
            lambda: cluster.delete(
                "referencegrants", "allow-mcp-extensions", group="gateway.networking.k8s.io", ns="gateway-system", version="v1beta1"
            )
        )
        await eventually(extension_reason(cluster, "ReferenceGrantRequired"), what="refused once the grant is gone")
        assert await eventually(lambda: served(cluster) == [] or None, what="the server withdrawn")


async def test_missing_gateway_is_reported_until_it_exists(k8s: EmulatorThread, cluster: Cluster) -> None:
    await trio.to_thread.run_sync(lambda: cluster.create(reference_grant()))
    cluster.create(extension())  # no Gateway yet
    async with running_controller(k8s.url, fast_settings()):
        missing = await eventually(extension_reason(cluster, "InvalidMCPGatewayExtension"), what="Gateway not found")
        assert missing["message"] == "Gateway gateway-system/mcp-gateway (spec.targetRef) not found"

        # A Gateway without the listener the extension names is still not enough.
        await trio.to_thread.run_sync(lambda: cluster.create(gateway(listeners=("public",))))
        await eventually(
            lambda: "listener 'mcp'" in ((cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS) or {}).get("message") or ""),
            what="listener not found",
        )
        await trio.to_thread.run_sync(
            lambda: cluster.delete("gateways", "mcp-gateway", group="gateway.networking.k8s.io", ns="gateway-system")
        )
        await trio.to_thread.run_sync(lambda: cluster.create(gateway()))
        await eventually(extension_reason(cluster, "ValidMCPGatewayExtension"), what="valid once the Gateway exists")


async def test_listener_admitting_namespaces_by_label_follows_the_namespace_labels(
    k8s: EmulatorThread, cluster: Cluster
) -> None:
    selective = gateway()
    selective["spec"]["listeners"][0]["allowedRoutes"] = {
        "namespaces": {"from": "Selector", "selector": {"matchLabels": {"mcp-gateway": "allowed"}}}
    }
    cluster.create(selective)
    cluster.create_extension(extension())  # keeps the existing Gateway; adds the grant
    cluster.core.create_namespace({"metadata": {"name": NS}})
    async with running_controller(k8s.url, fast_settings()):
        refused = await eventually(extension_reason(cluster, "InvalidMCPGatewayExtension"), what="not admitted")
        assert "does not allow routes from namespace mcp-system" in refused["message"]
        await trio.to_thread.run_sync(
            lambda: cluster.core.patch_namespace(NS, {"metadata": {"labels": {"mcp-gateway": "allowed"}}})
        )
        await eventually(extension_reason(cluster, "ValidMCPGatewayExtension"), what="admitted once labelled")
