"""`mcp-gateway controller`: connect to the cluster, run the controller until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import uuid

import kubernetes
import trio

from mcp_gateway.controller.health import (
    DEFAULT_HEALTH_LISTEN,
    HEALTH_LISTEN_ENV,
    HealthListenError,
    serve_health,
)
from mcp_gateway.controller.service import Controller, ControllerSettings
from mcp_gateway.logs import get_logger

log = get_logger(__name__)

USER_AGENT = "mcp-gateway-controller/0.1"
# Each watch holds a connection for minutes (ten watches), beside the Lease renewals, status
# patches and Secret writes; the client's default pool (5 per CPU) would drop and reopen them.
CONNECTION_POOL_SIZE = 32


def api_client_for(kubeconfig: str | None, identity: str) -> kubernetes.client.ApiClient:
    """In-cluster service account when running in a pod, else the kubeconfig (given or default)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    client = kubernetes.client.ApiClient(configuration)
    # The identity in the User-Agent lets an audit log (and our tests) tell replicas apart.
    client.user_agent = f"{USER_AGENT} ({identity})"
    return client


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def health_listen(args: argparse.Namespace) -> str:
    """host:port of the probe endpoints: `--health-listen` if the CLI has it, else the
    environment, else the default (the port deploy/base/controller.yaml probes)."""
    return getattr(args, "health_listen", None) or os.environ.get(HEALTH_LISTEN_ENV) or DEFAULT_HEALTH_LISTEN


async def serve_until_signalled(controller: Controller, listen: str = DEFAULT_HEALTH_LISTEN) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            # The probes first: an address that cannot be bound stops us before any API write.
            await nursery.start(serve_health, controller, listen)
            await nursery.start(controller.run)
            async for signum in signals:
                log.info("shutting down", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _first_leaf(group: BaseExceptionGroup[HealthListenError]) -> HealthListenError:
    """Nurseries nest the error in groups; the first actual error."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def run_controller(args: argparse.Namespace) -> int:
    identity = args.identity or default_identity()
    try:
        client = api_client_for(args.kubeconfig, identity)
    except (kubernetes.config.ConfigException, OSError) as err:
        log.error("cannot reach the cluster: no usable kubeconfig or in-cluster account", error=str(err))
        return 2
    settings = ControllerSettings(
        namespace=args.namespace,
        identity=identity,
        secret_name=args.secret_name,
        leader_election=args.leader_election,
        status_url=os.environ.get("MCP_GATEWAY_STATUS_URL") or None,
        base_configmap=os.environ.get("MCP_GATEWAY_BASE_CONFIGMAP") or None,
    )
    failed: HealthListenError | None = None
    try:
        trio.run(serve_until_signalled, Controller(client, settings), health_listen(args))
    except* HealthListenError as group:
        failed = _first_leaf(group)
    finally:
        client.close()  # type: ignore[no-untyped-call]
    if failed is not None:
        log.error("cannot serve the health endpoints", error=str(failed), env=HEALTH_LISTEN_ENV)
        return 2
    return 0
