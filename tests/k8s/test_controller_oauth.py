"""Kuadrant's `MCPGatewayExtension.spec.oauthProtectedResource` mapped onto `gateway.auth` by the
controller, through the real `kubernetes` client against the kmock emulator (docs/kubernetes.md,
"Inbound OAuth")."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from mcp_gateway.config import parse_config
from mcp_gateway.controller.reconcile import Desired, render_config
from tests.k8s.harness import (
    NS,
    Cluster,
    eventually,
    extension,
    fast_settings,
    install_crds,
    registration,
    route,
    running_controller,
)
from tests.support.kmock_emulator import EmulatorThread

PROTECTED = {
    "authorizationServers": ["https://idp.example.com/realms/mcp"],
    "resource": "https://mcp.example.com/mcp",
    "resourceName": "Example MCP",
    "scopesSupported": ["tools:read", "tools:call"],
    "bearerMethodsSupported": ["header"],
}
# The operator's settings: the issuer and key set the gateway checks tokens against.
BASE = (
    "gateway:\n"
    "  public_url: https://mcp.example.com/mcp\n"
    "  auth:\n"
    "    issuer: https://idp.example.com/realms/mcp\n"
    "    jwks_url: https://idp.example.com/realms/mcp/protocol/openid-connect/certs\n"
)


@pytest.fixture
def cluster(client: Any) -> Cluster:
    install_crds(client)
    return Cluster(client)


def protected_extension(**protected: Any) -> dict[str, Any]:
    obj = extension()
    obj["spec"]["oauthProtectedResource"] = protected
    return obj


async def test_the_extensions_protected_resource_turns_auth_on_with_its_metadata(
    k8s: EmulatorThread, cluster: Cluster
) -> None:
    cluster.core.create_namespaced_config_map(NS, {"metadata": {"name": "base"}, "data": {"config.yaml": BASE}})
    cluster.create_extension(protected_extension(**PROTECTED))
    cluster.create(route("r", "s"))
    cluster.create(registration("s", "r", "s_"))
    async with running_controller(k8s.url, fast_settings(base_configmap="base")):
        config = await eventually(lambda: (c := cluster.config()) and c.servers and c, what="config Secret")
        auth = config.gateway.auth
        assert auth.enabled
        assert auth.resource == "https://mcp.example.com/mcp"
        assert auth.authorization_servers == ["https://idp.example.com/realms/mcp"]
        assert auth.scopes_supported == ["tools:read", "tools:call"]
        # The operator's keys stay: the gateway checks tokens against this issuer's keys.
        assert auth.issuer == "https://idp.example.com/realms/mcp"
        assert auth.jwks_url is not None and auth.jwks_url.endswith("/certs")
        assert [s.name for s in config.servers] == ["mcp-test/s"]

        # A new authorization server in the extension reaches the Secret.
        moved = {**PROTECTED, "authorizationServers": ["https://login.example.org"]}
        await trio.to_thread.run_sync(
            lambda: cluster.custom.patch_namespaced_custom_object(
                "mcp.kuadrant.io", "v1", NS, "mcpgatewayextensions", "mcp-gateway",
                {"spec": {"oauthProtectedResource": moved}},
            )
        )
        config = await eventually(
            lambda: (c := cluster.config()) and c.gateway.auth.authorization_servers == ["https://login.example.org"] and c,
            what="the new authorization server",
        )
        assert config.gateway.auth.enabled


async def test_without_an_issuer_in_the_base_the_metadata_is_written_but_auth_stays_off(
    k8s: EmulatorThread, cluster: Cluster
) -> None:
    """Kuadrant's field has no issuer or key set (an AuthPolicy checks tokens there): a gateway
    that cannot check tokens itself is not switched on, and the config stays loadable."""
    cluster.create_extension(protected_extension(authorizationServers=["https://idp.example.com"]))
    cluster.create(route("r", "s"))
    cluster.create(registration("s", "r", "s_"))
    async with running_controller(k8s.url, fast_settings()):
        config = await eventually(lambda: (c := cluster.config()) and c.servers and c, what="config Secret")
    assert not config.gateway.auth.enabled
    assert config.gateway.auth.authorization_servers == ["https://idp.example.com"]


def test_render_config_without_the_field_keeps_the_base_auth_as_it_is() -> None:
    desired = Desired((), (), ())
    base = BASE + "    enabled: false\n"
    config = parse_config(render_config(desired, base))
    assert not config.gateway.auth.enabled and config.gateway.auth.authorization_servers == []
    with_field = Desired((), (), (), {"authorization_servers": ["https://a.example"], "resource": "https://r.example/mcp"})
    config = parse_config(render_config(with_field, base))
    assert config.gateway.auth.enabled and config.gateway.auth.resource == "https://r.example/mcp"
