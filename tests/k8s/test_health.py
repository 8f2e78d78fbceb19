"""The controller's /healthz and /readyz, served by controller/health.py beside a real controller
running against the emulator: ready only once every watch has listed, leader and standby alike;
alive while its tasks run, not once the controller has stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.controller.health import serve_health
from mcp_gateway.controller.service import LOOP_STALL_FACTOR, LOOP_STALL_GRACE_SECONDS, Controller
from tests.k8s.harness import (
    Cluster,
    after_calls,
    extension,
    fast_settings,
    install_crds,
    lists_of,
    running_controller,
)
from tests.support.kmock_emulator import EmulatorThread


@asynccontextmanager
async def probes(controller: Controller) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_health, controller, "127.0.0.1:0")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            yield http
        nursery.cancel_scope.cancel()


async def answer(http: httpx.AsyncClient, path: str) -> tuple[int, Any]:
    response = await http.get(path)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


async def until(http: httpx.AsyncClient, path: str, status: int, within: float = 10.0) -> Any:
    with trio.move_on_after(within):
        while True:
            code, body = await answer(http, path)
            if code == status:
                return body
            await trio.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}")


async def test_not_ready_until_every_watch_has_listed_but_alive_meanwhile(k8s: EmulatorThread, client: Any) -> None:
    # Without the CRDs the MCP kinds cannot be listed (404): the caches never sync.
    async with running_controller(k8s.url, fast_settings()) as controller, probes(controller) as http:
        code, body = await answer(http, "/readyz")
        assert code == 503 and body["status"] == "syncing"
        await after_calls(k8s, lists_of("mcpserverregistrations"), 2, "two list retries")  # still missing
        code, body = await answer(http, "/readyz")
        assert (code, body["unsynced"]) == (503, ["MCPGatewayExtension", "MCPServerRegistration", "MCPVirtualServer"])
        assert await answer(http, "/healthz") == (200, {"status": "ok"})

        await trio.to_thread.run_sync(install_crds, client)
        assert await until(http, "/readyz", 200) == {"status": "ready", "role": "leader"}


async def test_leader_and_standby_are_both_ready(k8s: EmulatorThread, client: Any) -> None:
    install_crds(client)
    await trio.to_thread.run_sync(lambda: Cluster(client).create_extension(extension()))
    async with running_controller(k8s.url, fast_settings("a")) as first, probes(first) as first_http:
        await until(first_http, "/readyz", 200)
        async with running_controller(k8s.url, fast_settings("b")) as second, probes(second) as second_http:
            assert await until(second_http, "/readyz", 200) == {"status": "ready", "role": "standby"}
            assert await answer(first_http, "/readyz") == (200, {"status": "ready", "role": "leader"})


async def test_not_alive_once_the_controller_has_stopped(k8s: EmulatorThread, client: Any) -> None:
    install_crds(client)
    async with running_controller(k8s.url, fast_settings()) as controller:
        pass  # leaving the block stops the controller's tasks
    async with probes(controller) as http:
        assert await answer(http, "/healthz") == (503, {"status": "unhealthy", "reason": "controller not running"})
        code, body = await answer(http, "/readyz")
        assert code == 503 and body["status"] == "syncing"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/metrics", 404), ("GET", "/", 404), ("POST", "/healthz", 405), ("DELETE", "/readyz", 405)],
)
async def test_anything_else_gets_a_precise_json_error(
    k8s: EmulatorThread, client: Any, method: str, path: str, status: int
) -> None:
    install_crds(client)
    async with running_controller(k8s.url, fast_settings()) as controller, probes(controller) as http:
        response = await http.request(method, path)
        assert response.status_code == status
        assert "error" in response.json()
        if status == 405:
            assert response.headers["allow"] == "GET, HEAD"


async def test_head_answers_the_status_without_a_body(k8s: EmulatorThread, client: Any) -> None:
    install_crds(client)
    async with running_controller(k8s.url, fast_settings()) as controller, probes(controller) as http:
        await until(http, "/readyz", 200)
        response = await http.head("/readyz")
        assert response.status_code == 200 and response.content == b""


def controller_state(client: Any, *, informers_missing: int = 0, stalled_for: float = 0.0) -> Controller:
    """A Controller's health state as its tasks would leave it (the rule alone, no tasks run)."""
    controller = Controller(client, fast_settings())
    controller.running = True
    controller.live_informers = len(controller.watch_specs()) - informers_missing
    controller.synced = {spec.kind for spec in controller.watch_specs()}
    controller.last_loop = trio.current_time() - stalled_for
    return controller


async def test_liveness_rule(client: Any) -> None:
    settings = fast_settings()
    limit = LOOP_STALL_FACTOR * settings.resync_seconds + LOOP_STALL_GRACE_SECONDS
    assert controller_state(client).liveness_problem() is None
    assert controller_state(client, stalled_for=limit - 1).liveness_problem() is None
    stalled = controller_state(client, stalled_for=limit + 1).liveness_problem()
    assert stalled is not None and stalled.startswith("reconcile loop has not turned for")
    expected = len(controller_state(client).watch_specs())
    assert controller_state(client, informers_missing=1).liveness_problem() == (
        f"1 of {expected} watch tasks have stopped"
    )
    # Before the first sync the loop waits for events without a deadline: not a stall.
    syncing = controller_state(client, stalled_for=limit + 1)
    syncing.synced = set()
    assert syncing.liveness_problem() is None
