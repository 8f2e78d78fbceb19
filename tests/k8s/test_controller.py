"""The controller, driven through the real `kubernetes` client against the kmock emulator."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any

import pytest
import trio

from tests.k8s.harness import (
    NS,
    Cluster,
    credential_secret,
    eventually,
    extension,
    fast_settings,
    install_crds,
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


def _reason(cluster: Cluster, name: str, expected: str) -> Any:
    def probe() -> dict[str, Any] | None:
        ready = cluster.ready("mcpserverregistrations", name)
        return ready if ready is not None and ready["reason"] == expected else None

    return probe


async def test_registration_and_route_put_the_server_in_the_secret(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    cluster.create(route("server1-route", "server1"))
    cluster.create(registration("server1", "server1-route", "test1_"))
    async with running_controller(k8s.url, fast_settings()):
        config = await eventually(cluster.config, what="config Secret")
        ready = await eventually(_reason(cluster, "server1", "ConfigWritten"))
    server = config.server("mcp-test/server1")
    assert server is not None
    assert server.url == "http://server1.mcp-test.svc.cluster.local:9090/mcp"
    assert server.hostname == "server1.mcp.local"
    assert server.prefix == "test1_"
    assert server.enabled
    assert ready["status"] == "True"
    status = cluster.registration("server1")["status"]
    assert status["observedGeneration"] == 1
    assert ready["observedGeneration"] == 1
    assert cluster.ready("mcpgatewayextensions", "mcp-gateway", ns=NS)["reason"] == "ValidMCPGatewayExtension"


async def test_invalid_prefix_is_ready_false_with_its_reason(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    cluster.create(route("bad-route", "bad"))
    cluster.create(registration("bad", "bad-route", "Bad Prefix!"))
    cluster.create(route("good-route", "good"))
    cluster.create(registration("good", "good-route", "good_"))
    async with running_controller(k8s.url, fast_settings()):
        ready = await eventually(_reason(cluster, "bad", "InvalidPrefix"))
        await eventually(_reason(cluster, "good", "ConfigWritten"))
        config = cluster.config()
    assert ready["status"] == "False"
    assert "Bad Prefix!" in ready["message"]
    assert config is not None and [s.name for s in config.servers] == ["mcp-test/good"]


async def test_route_created_later_turns_ready_true(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    cluster.create(registration("late", "late-route", "late_"))
    async with running_controller(k8s.url, fast_settings()):
        missing = await eventually(_reason(cluster, "late", "RouteNotFound"))
        assert missing["status"] == "False" and "mcp-test/late-route" in missing["message"]
        cluster.create(route("late-route", "late"))
        ready = await eventually(_reason(cluster, "late", "ConfigWritten"))
        config = await eventually(lambda: (c := cluster.config()) and c.server("mcp-test/late") and c)
    assert ready["status"] == "True"
    assert config.server("mcp-test/late") is not None


async def test_delete_removes_the_server_from_the_secret(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    for name in ("one", "two"):
        cluster.create(route(f"{name}-route", name))
        cluster.create(registration(name, f"{name}-route", f"{name}_"))
    async with running_controller(k8s.url, fast_settings()):
        await eventually(lambda: (c := cluster.config()) and len(c.servers) == 2)
        cluster.delete("mcpserverregistrations", "one")
        config = await eventually(lambda: (c := cluster.config()) and len(c.servers) == 1 and c)
    assert [s.name for s in config.servers] == ["mcp-test/two"]


async def test_missing_credential_secret_has_its_reason_and_value_never_leaks(
    k8s: EmulatorThread, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "Bearer s3cr3t-token-value"
    cluster.create_extension(extension())
    cluster.create(route("auth-route", "auth"))
    cluster.create(registration("auth", "auth-route", "auth_", credentialRef={"name": "auth-token"}))
    async with running_controller(k8s.url, fast_settings()):
        missing = await eventually(_reason(cluster, "auth", "CredentialSecretMissing"))
        assert "mcp-test/auth-token" in missing["message"]
        await trio.to_thread.run_sync(
            cluster.core.create_namespaced_secret, "mcp-test", credential_secret("auth-token", token, labelled=False)
        )
        unlabelled = await eventually(_reason(cluster, "auth", "CredentialSecretNotLabelled"))
        assert "mcp.kuadrant.io/secret=true" in unlabelled["message"]
        await trio.to_thread.run_sync(
            cluster.core.patch_namespaced_secret,
            "auth-token",
            "mcp-test",
            {"metadata": {"labels": {"mcp.kuadrant.io/secret": "true"}}},
        )
        await eventually(_reason(cluster, "auth", "ConfigWritten"))
        config = await eventually(lambda: (c := cluster.config()) and c.server("mcp-test/auth") and c)
    server = config.server("mcp-test/auth")
    assert server is not None and server.credential == token
    assert token not in str(cluster.registration("auth"))
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err


async def test_two_replicas_one_writer_and_failover(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    cluster.create(route("r1", "s1"))
    cluster.create(registration("s1", "r1", "s1_"))

    def writers() -> list[str]:
        found = []
        for request in list(k8s.emulator.requests):
            agent = request.headers.get("User-Agent", "")
            method = request.method.value if request.method is not None else ""
            kind = request.resource.plural if request.resource is not None else ""
            if "mcp-gateway-controller" in agent and method in ("POST", "PUT", "PATCH") and kind in (
                "secrets",
                "mcpserverregistrations",
                "mcpgatewayextensions",
            ):
                found.append(agent.split("(")[-1].rstrip(")"))
        return found

    replicas: dict[str, Any] = {}
    a_started = trio.Event()
    stop_a = trio.CancelScope()

    async def replica_a() -> None:
        with stop_a:
            async with running_controller(k8s.url, fast_settings("replica-a")) as controller:
                replicas["a"] = controller
                a_started.set()
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica_a)
        await a_started.wait()
        await eventually(lambda: replicas["a"].is_leader, what="replica-a leading")
        async with running_controller(k8s.url, fast_settings("replica-b")) as replica_b:
            await eventually(cluster.config, what="config Secret")
            await eventually(_reason(cluster, "s1", "ConfigWritten"))
            # Several of the standby's retry periods (an acquire attempt each): it stays quiet.
            await renew_periods(k8s, "replica-b", 3)
            assert not replica_b.is_leader
            assert set(writers()) == {"replica-a"}
            writes_before = len(writers())

            stop_a.cancel()  # the leader goes away and releases the Lease
            cluster.create(route("r2", "s2"))
            cluster.create(registration("s2", "r2", "s2_"))
            await eventually(lambda: (c := cluster.config()) and c.server("mcp-test/s2"), what="failover write")
            assert replica_b.is_leader
            after = writers()[writes_before:]
            assert after and set(after) == {"replica-b"}


async def test_discovered_tool_count_comes_from_the_brokers_status(k8s: EmulatorThread, cluster: Cluster) -> None:
    """The broker's /status over real HTTP (a stand-in answering with the broker's JSON shape)."""
    body = json.dumps(
        {"ready": True, "upstreams": [{"name": "mcp-test/counted", "state": "ready", "reason": None, "toolCount": 4}]}
    ).encode()

    async def answer(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.receive_some(65536)
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            await stream.send_all(head.encode() + body)
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        cluster.create_extension(extension())
        cluster.create(route("counted-route", "counted"))
        cluster.create(registration("counted", "counted-route", "cnt_"))
        settings = fast_settings(status_url=f"http://127.0.0.1:{port}/status")
        async with running_controller(k8s.url, settings):
            status = await eventually(
                lambda: (s := cluster.registration("counted").get("status", {})).get("discoveredTools") == 4 and s,
                what="discoveredTools",
            )
        assert [c["reason"] for c in status["conditions"]] == ["ConfigWritten", "ToolsDiscovered"]
        nursery.cancel_scope.cancel()


async def test_relist_after_410_catches_a_missed_delete(k8s: EmulatorThread, cluster: Cluster) -> None:
    """A delete the watch never reported (removed behind its back, history compacted): the
    watch's resume gets 410 Gone, the informer lists again, and the server leaves the config."""
    import kmock

    cluster.create_extension(extension())
    for name in ("kept", "missed"):
        cluster.create(route(f"{name}-route", name))
        cluster.create(registration(name, f"{name}-route", f"{name}_"))
    registrations = kmock.resource("mcp.kuadrant.io", "v1", "mcpserverregistrations")

    def delete_silently() -> None:
        k8s.emulator.objects[registrations, "mcp-test", "missed"].delete()
        k8s.emulator.compact(advance=True)

    async with running_controller(k8s.url, fast_settings()):
        await eventually(lambda: (c := cluster.config()) and len(c.servers) == 2)
        k8s.call(delete_silently)
        config = await eventually(lambda: (c := cluster.config()) and len(c.servers) == 1 and c, what="relist")
    assert [s.name for s in config.servers] == ["mcp-test/kept"]


async def test_secret_is_written_only_when_its_content_changes(k8s: EmulatorThread, cluster: Cluster) -> None:
    cluster.create_extension(extension())
    cluster.create(route("r", "s"))
    cluster.create(registration("s", "r", "s_"))
    async with running_controller(k8s.url, fast_settings()) as controller:
        await eventually(_reason(cluster, "s", "ConfigWritten"))
        writes, passes = controller.config_writes, controller.reconciles
        # An event that changes nothing the config depends on: a label on the registration.
        await trio.to_thread.run_sync(
            lambda: cluster.custom.patch_namespaced_custom_object(
                "mcp.kuadrant.io", "v1", "mcp-test", "mcpserverregistrations", "s", {"metadata": {"labels": {"team": "a"}}}
            )
        )
        await eventually(lambda: controller.reconciles > passes, what="a reconcile pass")
        assert controller.config_writes == writes
        # A change that matters is written.
        cluster.create(route("r2", "s2"))
        cluster.create(registration("s2", "r2", "t_"))
        await eventually(lambda: controller.config_writes > writes, what="a write")


async def test_base_configmap_settings_are_merged_and_followed(k8s: EmulatorThread, cluster: Cluster) -> None:
    """The operator's ConfigMap supplies everything but the servers; editing it rewrites the
    Secret with the new settings and the same discovered servers."""
    base = "gateway:\n  broker_listen: 0.0.0.0:8081\n  page_size: 50\n"
    cluster.core.create_namespaced_config_map(NS, {"metadata": {"name": "base"}, "data": {"config.yaml": base}})
    cluster.create_extension(extension())
    cluster.create(route("r", "s"))
    cluster.create(registration("s", "r", "s_"))
    async with running_controller(k8s.url, fast_settings(base_configmap="base")) as controller:
        config = await eventually(lambda: (c := cluster.config()) and c.servers and c, what="merged config")
        assert config.gateway.page_size == 50 and config.gateway.broker_listen == "0.0.0.0:8081"
        await trio.to_thread.run_sync(
            lambda: cluster.core.patch_namespaced_config_map(
                "base", NS, {"data": {"config.yaml": base.replace("page_size: 50", "page_size: 75")}}
            )
        )
        config = await eventually(lambda: (c := cluster.config()) and c.gateway.page_size == 75 and c, what="new base")
        assert [s.name for s in config.servers] == ["mcp-test/s"]
        # An invalid base is refused: the Secret keeps the last good config.
        passes = controller.reconciles
        await trio.to_thread.run_sync(
            lambda: cluster.core.patch_namespaced_config_map("base", NS, {"data": {"config.yaml": "gateway:\n  page_size: -1\n"}})
        )
        await eventually(lambda: controller.reconciles > passes, what="a pass over the invalid base")
        assert cluster.config().gateway.page_size == 75  # type: ignore[union-attr]


async def test_two_gateway_instances_split_the_servers_without_status_fights(
    k8s: EmulatorThread, cluster: Cluster
) -> None:
    import base64

    from mcp_gateway.config import parse_config

    def gateway_route(name: str, *gateways: str) -> dict[str, Any]:
        body = route(name, name)
        body["spec"]["parentRefs"] = [{"name": g, "namespace": "gateway-system"} for g in gateways]
        return body

    other = extension()
    other["metadata"]["namespace"] = "team-b"
    other["spec"]["targetRef"]["name"] = "gw-b"
    cluster.create_extension(extension())
    cluster.create_extension(other)
    cluster.create(gateway_route("mine", "mcp-gateway"))
    cluster.create(gateway_route("yours", "gw-b"))
    cluster.create(gateway_route("both", "mcp-gateway", "gw-b"))
    for name in ("mine", "yours", "both"):
        cluster.create(registration(name, name, f"{name}_"))

    def servers_in(namespace: str) -> list[str] | None:
        try:
            secret = cluster.core.read_namespaced_secret("mcp-gateway-config", namespace)
        except Exception:
            return None
        text = base64.b64decode(secret.data["config.yaml"]).decode()
        return [s.name for s in parse_config(text).servers]

    def status_patches_of_both() -> int:
        return sum(
            1
            for r in k8s.emulator.requests
            if r.method is not None and r.method.value == "PATCH" and r.name == "both" and r.subresource == "status"
        )

    async with (
        running_controller(k8s.url, fast_settings("a")),
        running_controller(k8s.url, fast_settings("b", namespace="team-b")),
    ):
        assert await eventually(lambda: servers_in(NS) == ["mcp-test/both", "mcp-test/mine"] or None)
        assert await eventually(lambda: servers_in("team-b") == ["mcp-test/both", "mcp-test/yours"] or None)
        await eventually(_reason(cluster, "both", "ConfigWritten"))
        # Each controller may write "both"'s status once as it settles, in either order, and
        # the second write can land after the condition shows: count from two renew periods of
        # each replica later (a pass takes one debounce), not from the first sight of it.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew_periods, k8s, "a", 2)
            nursery.start_soon(renew_periods, k8s, "b", 2)
        settled = status_patches_of_both()
        # A fight would show at once (each write triggers the other's pass): watch for five of
        # each replica's renew periods.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew_periods, k8s, "a", 5)
            nursery.start_soon(renew_periods, k8s, "b", 5)
        assert status_patches_of_both() == settled
    assert cluster.ready("mcpgatewayextensions", "mcp-gateway", ns="team-b")["reason"] == "ValidMCPGatewayExtension"
