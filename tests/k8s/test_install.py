"""`kubectl apply -k` of deploy/ and deploy/examples against the emulator, then the controller as
the Deployment configures it: the example servers end up in the config Secret.

kubectl (with its built-in kustomize) is installed on these machines; it drives the API server
exactly as on a cluster: discovery, client-side apply with last-applied annotations.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
from typing import Any

import trio
import yaml

from mcp_gateway.cli import build_parser
from tests.k8s.harness import (
    NS,
    Cluster,
    eventually,
    fast_settings,
    kubeconfig,
    renew_periods,
    running_controller,
)
from tests.support.kmock_emulator import EmulatorThread

ROOT = pathlib.Path(__file__).resolve().parents[2]


def kubectl(config: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={config}", *args], capture_output=True, text=True, timeout=60, check=False
    )


def controller_deployment_settings() -> dict[str, Any]:
    """What deploy/base/controller.yaml passes to `mcp-gateway controller`."""
    doc = next(d for d in yaml.safe_load_all((ROOT / "deploy/base/controller.yaml").read_text()) if d)
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    args = build_parser().parse_args([re.sub(r"\$\(POD_NAMESPACE\)", NS, a) for a in container["args"]])
    return {"namespace": args.namespace, "secret_name": args.secret_name, "base_configmap": env["MCP_GATEWAY_BASE_CONFIGMAP"]}


async def test_kubectl_apply_then_controller_serves_the_examples(k8s: EmulatorThread, client: Any, tmp_path: pathlib.Path) -> None:
    config = kubeconfig(k8s.url, tmp_path / "kubeconfig")
    first = await trio.to_thread.run_sync(lambda: kubectl(config, "apply", "--validate=false", "-k", str(ROOT / "deploy")))
    # As on a real cluster, the extension in the same apply as its CRD is refused the first time.
    assert first.returncode == 0 or "MCPGatewayExtension" in first.stderr, first.stderr
    for directory in ("deploy", "deploy/examples", "deploy/gateway-common"):
        applied = await trio.to_thread.run_sync(lambda d=directory: kubectl(config, "apply", "--validate=false", "-k", str(ROOT / d)))
        assert applied.returncode == 0, applied.stderr
    # The Gateway the extension targets (deploy/istio's; its EnvoyFilter needs Istio's CRDs, which
    # the emulator lacks). Without it, or without gateway-common's ReferenceGrant, the extension
    # would not be valid and no server would be served.
    applied = await trio.to_thread.run_sync(lambda: kubectl(config, "apply", "--validate=false", "-f", str(ROOT / "deploy/istio/gateway.yaml")))
    assert applied.returncode == 0, applied.stderr

    cluster = Cluster(client)
    settings = fast_settings("installed", **controller_deployment_settings())
    async with running_controller(k8s.url, settings):
        gateway_config = await eventually(lambda: (c := cluster.config()) and len(c.servers) == 2 and c, what="example servers")
        await eventually(lambda: (r := cluster.ready("mcpvirtualservers", "greeter")) and r["reason"] == "Programmed")
        for name in ("dynamic", "slow"):
            assert cluster.ready("mcpserverregistrations", name)["reason"] == "ConfigWritten"  # type: ignore[index]
        written = cluster.config_text()
        # Re-applying the kustomization leaves the controller's Secret alone.
        again = await trio.to_thread.run_sync(lambda: kubectl(config, "apply", "--validate=false", "-k", str(ROOT / "deploy")))
        assert again.returncode == 0, again.stderr
        await renew_periods(k8s, "installed", 3)  # time for the passes the re-apply caused
        assert cluster.config_text() == written

    dynamic = gateway_config.server("mcp-test/dynamic")
    assert dynamic is not None
    assert dynamic.url == "http://mcp-sample-dynamic.mcp-test.svc.cluster.local:9101/mcp"
    assert (dynamic.hostname, dynamic.prefix) == ("dynamic.mcp.local", "dyn_")
    assert [v.name for v in gateway_config.virtual_servers] == ["mcp-test/greeter"]
    assert gateway_config.gateway.broker_listen == "0.0.0.0:8081"  # from the base ConfigMap
    assert cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS)["reason"] == "ValidMCPGatewayExtension"  # type: ignore[index]
