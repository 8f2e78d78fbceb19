"""The controller's I/O: informers in, reconcile, config Secret and statuses out.

Everything long-lived runs in one nursery: one informer task per watched resource, the leader
elector, and the reconcile loop. The loop waits until every informer has listed once (so a
restart never writes an empty config), then reconciles after each burst of events (debounced)
and at least every `resync_seconds`. Only the leader writes; a standby keeps its caches warm so
it can take over at once.
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import kubernetes
import trio
from kubernetes.client.exceptions import ApiException

from mcp_gateway.config import ConfigError, parse_config
from mcp_gateway.controller.informer import (
    Changed,
    InformerEvent,
    Relisted,
    WatchSpec,
    WatchTiming,
    run_informer,
)
from mcp_gateway.controller.leader import LeaderElector, LeaseTiming
from mcp_gateway.controller.reconcile import (
    Desired,
    DesiredStatus,
    Snapshot,
    reconcile,
    render_config,
    status_patch,
)
from mcp_gateway.controller.resources import (
    CREDENTIAL_LABELS,
    EXTENSIONS,
    GATEWAY_API_GROUP,
    GATEWAY_API_VERSION,
    GATEWAYS,
    GROUP,
    HTTPROUTES,
    REFERENCE_GRANT_VERSION,
    REFERENCE_GRANTS,
    REGISTRATIONS,
    VERSION,
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
    key_of,
    namespace_labels,
    upstream_reports,
)
from mcp_gateway.logs import get_logger, register_secrets

log = get_logger(__name__)

CONFIG_KEY = "config.yaml"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mcp-gateway-controller"}

# Cache kinds: one per informer (credential Secrets come from one informer per accepted label).
KIND_REGISTRATIONS = "MCPServerRegistration"
KIND_VIRTUAL_SERVERS = "MCPVirtualServer"
KIND_EXTENSIONS = "MCPGatewayExtension"
KIND_ROUTES = "HTTPRoute"
KIND_GATEWAYS = "Gateway"
KIND_REFERENCE_GRANTS = "ReferenceGrant"
KIND_NAMESPACES = "Namespace"
KIND_CONFIG_SECRET = "ConfigSecret"
KIND_BASE_CONFIG = "BaseConfigMap"
KIND_CREDENTIALS = tuple(f"Secret[{label}]" for label in CREDENTIAL_LABELS)


@dataclass
class ControllerSettings:
    namespace: str
    identity: str
    secret_name: str = "mcp-gateway-config"
    leader_election: bool = True
    lease_name: str = "mcp-gateway-controller"
    resync_seconds: float = 60.0
    debounce_seconds: float = 0.05
    watch: WatchTiming = field(default_factory=WatchTiming)
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    # The broker's /status: per-server tool counts for status.discoveredTools (optional).
    status_url: str | None = None
    # A ConfigMap (key config.yaml) with everything but servers/virtualServers: the operator's
    # part of the config. Without one, the Secret's own non-controller sections are kept.
    base_configmap: str | None = None


# The loop turns at least every resync period once synced; a pass's API calls are each bounded
# (10 s), so several periods plus a grace without a turn means it is stuck.
LOOP_STALL_FACTOR = 3
LOOP_STALL_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class LeadershipChanged:
    leader: bool


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Controller:
    def __init__(self, api_client: kubernetes.client.ApiClient, settings: ControllerSettings) -> None:
        self.settings = settings
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            self.elector = LeaderElector(
                kubernetes.client.CoordinationV1Api(api_client),
                settings.namespace,
                settings.lease_name,
                settings.identity,
                settings.lease,
            )
        self.cache: dict[str, dict[ObjectKey, Mapping[str, Any]]] = {}
        self.synced: set[str] = set()
        self.reconciles = 0
        self.config_writes = 0
        self.upstreams: dict[str, UpstreamReport] = {}
        # What the health endpoints read (controller/health.py).
        self.running = False
        self.live_informers = 0
        self.last_loop: float | None = None  # trio.current_time() of the loop's latest turn

    # -- what is watched -------------------------------------------------------------------------

    def watch_specs(self) -> list[WatchSpec]:
        ns = self.settings.namespace
        specs = [
            WatchSpec(KIND_REGISTRATIONS, self.custom.list_cluster_custom_object, (GROUP, VERSION, REGISTRATIONS)),
            WatchSpec(KIND_VIRTUAL_SERVERS, self.custom.list_cluster_custom_object, (GROUP, VERSION, VIRTUAL_SERVERS)),
            # All namespaces: every instance must agree which one serves which Gateway.
            WatchSpec(KIND_EXTENSIONS, self.custom.list_cluster_custom_object, (GROUP, VERSION, EXTENSIONS)),
            WatchSpec(
                KIND_ROUTES,
                self.custom.list_cluster_custom_object,
                (GATEWAY_API_GROUP, GATEWAY_API_VERSION, HTTPROUTES),
            ),
            # Extensions are judged against their Gateway and, across namespaces, the
            # ReferenceGrants beside it (every namespace: every instance judges every extension).
            WatchSpec(
                KIND_GATEWAYS,
                self.custom.list_cluster_custom_object,
                (GATEWAY_API_GROUP, GATEWAY_API_VERSION, GATEWAYS),
            ),
            WatchSpec(
                KIND_REFERENCE_GRANTS,
                self.custom.list_cluster_custom_object,
                (GATEWAY_API_GROUP, REFERENCE_GRANT_VERSION, REFERENCE_GRANTS),
            ),
            # Namespace labels, for listeners that admit routes by a namespace selector.
            WatchSpec(KIND_NAMESPACES, self.core.list_namespace),
            WatchSpec(
                KIND_CONFIG_SECRET,
                self.core.list_namespaced_secret,
                (ns,),
                extra={"field_selector": f"metadata.name={self.settings.secret_name}"},
            ),
        ]
        if self.settings.base_configmap:
            specs.append(
                WatchSpec(
                    KIND_BASE_CONFIG,
                    self.core.list_namespaced_config_map,
                    (ns,),
                    extra={"field_selector": f"metadata.name={self.settings.base_configmap}"},
                )
            )
        specs += [
            WatchSpec(kind, self.core.list_secret_for_all_namespaces, label_selector=f"{label}=true")
            for kind, label in zip(KIND_CREDENTIALS, CREDENTIAL_LABELS, strict=True)
        ]
        return specs

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector is not None else True

    # -- health (read by controller/health.py) ---------------------------------------------------

    def unsynced(self) -> list[str]:
        """The watched kinds whose first list has not arrived yet."""
        return sorted({spec.kind for spec in self.watch_specs()} - self.synced)

    def liveness_problem(self) -> str | None:
        """Why the process should be restarted, or None while it works.

        Dead: not running, an informer task gone, or (once synced) a loop that has not turned
        for several resync periods, which only a pass stuck beyond every API timeout explains.
        """
        if not self.running:
            return "controller not running"
        expected = len(self.watch_specs())
        if self.live_informers < expected:
            return f"{expected - self.live_informers} of {expected} watch tasks have stopped"
        if self.last_loop is not None and not self.unsynced():
            stalled = trio.current_time() - self.last_loop
            if stalled > LOOP_STALL_FACTOR * self.settings.resync_seconds + LOOP_STALL_GRACE_SECONDS:
                return f"reconcile loop has not turned for {stalled:.0f}s"
        return None

    # -- lifetime --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[InformerEvent | LeadershipChanged](256)
        try:
            async with trio.open_nursery() as nursery:
                for spec in self.watch_specs():
                    nursery.start_soon(self._informer, spec, send.clone())
                if self.elector is not None:
                    await nursery.start(self.elector.run)
                    nursery.start_soon(self._forward_leadership, self.elector, send.clone())
                nursery.start_soon(self._loop, receive)
                log.info(
                    "controller started",
                    identity=self.settings.identity,
                    namespace=self.settings.namespace,
                    secret=self.settings.secret_name,
                    leader_election=self.settings.leader_election,
                )
                self.running = True
                task_status.started()
        finally:
            self.running = False

    async def _informer(self, spec: WatchSpec, send: trio.MemorySendChannel[InformerEvent]) -> None:
        self.live_informers += 1
        try:
            await run_informer(spec, send, self.settings.watch)
        finally:
            self.live_informers -= 1

    @staticmethod
    async def _forward_leadership(
        elector: LeaderElector, send: trio.MemorySendChannel[InformerEvent | LeadershipChanged]
    ) -> None:
        async for leader in elector.changes:
            await send.send(LeadershipChanged(leader))

    async def _loop(self, receive: trio.MemoryReceiveChannel[InformerEvent | LeadershipChanged]) -> None:
        expected = {spec.kind for spec in self.watch_specs()}
        while True:
            self.last_loop = trio.current_time()
            timeout = self.settings.resync_seconds if self.synced >= expected else math.inf
            with trio.move_on_after(timeout):
                self._apply(await receive.receive())
                # Let a burst (a relist, a kubectl apply of many objects) settle into one pass.
                while True:
                    with trio.move_on_after(self.settings.debounce_seconds) as quiet:
                        self._apply(await receive.receive())
                    if quiet.cancelled_caught:
                        break
            if self.synced >= expected and self.is_leader:
                await self.reconcile_once()

    def _apply(self, event: InformerEvent | LeadershipChanged) -> None:
        if isinstance(event, LeadershipChanged):
            return  # nothing to cache; the pass that follows writes if we now lead
        if isinstance(event, Relisted):
            self.cache[event.kind] = {key_of(obj): obj for obj in event.objects}
            self.synced.add(event.kind)
        elif isinstance(event, Changed):
            objects = self.cache.setdefault(event.kind, {})
            if event.event == "DELETED":
                objects.pop(key_of(event.obj), None)
            else:
                objects[key_of(event.obj)] = event.obj

    # -- one pass --------------------------------------------------------------------------------

    def snapshot(self, unlabelled: frozenset[ObjectKey] = frozenset()) -> Snapshot:
        secrets: dict[ObjectKey, SecretView] = {}
        for kind in KIND_CREDENTIALS:
            for key, obj in self.cache.get(kind, {}).items():
                secrets[key] = SecretView.from_object(obj)
        register_secrets(value for secret in secrets.values() for value in secret.values.values())
        return Snapshot(
            registrations=[Registration.from_object(o) for o in self.cache.get(KIND_REGISTRATIONS, {}).values()],
            routes={k: Route.from_object(o) for k, o in self.cache.get(KIND_ROUTES, {}).items()},
            extensions=[Extension.from_object(o) for o in self.cache.get(KIND_EXTENSIONS, {}).values()],
            virtual_servers=[
                VirtualServerSpec.from_object(o) for o in self.cache.get(KIND_VIRTUAL_SERVERS, {}).values()
            ],
            secrets=secrets,
            unlabelled_secrets=unlabelled,
            upstreams=dict(self.upstreams),
            gateways={k: Gateway.from_object(o) for k, o in self.cache.get(KIND_GATEWAYS, {}).items()},
            reference_grants=[
                ReferenceGrant.from_object(o) for o in self.cache.get(KIND_REFERENCE_GRANTS, {}).values()
            ],
            namespace_labels={k.name: namespace_labels(o) for k, o in self.cache.get(KIND_NAMESPACES, {}).items()},
        )

    async def reconcile_once(self) -> None:
        self.reconciles += 1
        if self.settings.status_url:
            await self._refresh_upstreams(self.settings.status_url)
        first = self.snapshot()
        unlabelled = await self._unlabelled_secrets(first)
        desired = reconcile(
            self.snapshot(unlabelled) if unlabelled else first,
            namespace=self.settings.namespace,
            secret_name=self.settings.secret_name,
        )
        if await self._write_config(desired):
            await self._write_statuses(desired)

    async def _refresh_upstreams(self, url: str) -> None:
        """Ask the broker how each server is doing; keep the last answer if it is down."""
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                response = await http.get(url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as err:
            log.debug("broker status unavailable", url=url, error=type(err).__name__)
            return
        self.upstreams = upstream_reports(document)

    async def _unlabelled_secrets(self, snapshot: Snapshot) -> frozenset[ObjectKey]:
        """Referenced Secrets missing from the labelled cache that do exist: a precise reason."""
        wanted = {
            ObjectKey(r.key.namespace, ref.name)
            for r in snapshot.registrations
            for ref in (r.credential, r.ca_cert)
            if ref is not None
        } - set(snapshot.secrets)
        found = set()
        for key in sorted(wanted):
            if await trio.to_thread.run_sync(self._secret_exists, key):
                found.add(key)
        return frozenset(found)

    def _secret_exists(self, key: ObjectKey) -> bool:
        try:
            response: Any = self.core.read_namespaced_secret(
                key.name, key.namespace, _preload_content=False, _request_timeout=10
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        response.release_conn()  # the body (the secret's data) is never read
        return True

    async def _write_config(self, desired: Desired) -> bool:
        """Write the config Secret if its content changes. False: not written, try again later."""
        ns, name = self.settings.namespace, self.settings.secret_name
        current = self.cache.get(KIND_CONFIG_SECRET, {}).get(ObjectKey(ns, name))
        existing = _decoded(current, CONFIG_KEY) if current is not None else None
        base, base_source = existing, f"Secret {ns}/{name}"
        if self.settings.base_configmap:
            base_source = f"ConfigMap {ns}/{self.settings.base_configmap}"
            configmap = self.cache.get(KIND_BASE_CONFIG, {}).get(ObjectKey(ns, self.settings.base_configmap))
            base = str(((configmap or {}).get("data") or {}).get(CONFIG_KEY) or "") or None
            if configmap is None:
                log.warning("base ConfigMap not found; writing servers onto default settings", configmap=base_source)
        if base:
            try:
                parse_config(base, source=base_source)
            except ConfigError as err:
                log.error(
                    "base config is invalid; not writing the config Secret",
                    source=base_source,
                    problems=[f"{p.path}: {p.message}" for p in err.problems][:20],
                )
                return False
        try:
            text = render_config(desired, base)
        except ConfigError as err:
            log.error("rendered config rejected", problems=[f"{p.path}: {p.message}" for p in err.problems][:20])
            return False
        if text == existing:
            return True
        encoded = base64.b64encode(text.encode()).decode()
        if not self.is_leader:
            return False  # lost the Lease while rendering
        try:
            if current is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY)},
                    "type": "Opaque",
                    "data": {CONFIG_KEY: encoded},
                }
                await trio.to_thread.run_sync(self._create_secret, body)
            else:
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": dict(current.get("metadata") or {}),
                    "type": current.get("type") or "Opaque",
                    "data": {**(current.get("data") or {}), CONFIG_KEY: encoded},
                }
                await trio.to_thread.run_sync(self._replace_secret, body)
        except ApiException as err:
            if err.status == 409:  # changed under us: the watch brings the new version, then we retry
                log.info("config Secret changed concurrently; retrying", secret=f"{ns}/{name}")
                return False
            log.error("config Secret write failed", secret=f"{ns}/{name}", status=err.status, reason=err.reason)
            return False
        self.config_writes += 1
        log.info(
            "config written",
            secret=f"{ns}/{name}",
            servers=len(desired.servers),
            virtual_servers=len(desired.virtual_servers),
        )
        return True

    def _create_secret(self, body: dict[str, Any]) -> None:
        # The client serialises plain dicts as they are; the models would only add a round trip.
        self.core.create_namespaced_secret(self.settings.namespace, cast(Any, body), _request_timeout=10)

    def _replace_secret(self, body: dict[str, Any]) -> None:
        self.core.replace_namespaced_secret(
            self.settings.secret_name, self.settings.namespace, cast(Any, body), _request_timeout=10
        )

    async def _write_statuses(self, desired: Desired) -> None:
        caches = {
            REGISTRATIONS: self.cache.get(KIND_REGISTRATIONS, {}),
            VIRTUAL_SERVERS: self.cache.get(KIND_VIRTUAL_SERVERS, {}),
            EXTENSIONS: self.cache.get(KIND_EXTENSIONS, {}),
        }
        now = _now()
        for status in desired.statuses:
            current = caches[status.plural].get(status.key)
            if current is None:
                continue
            patch = status_patch(current.get("status") or {}, status, now)
            if patch is None or not self.is_leader:
                continue
            try:
                await trio.to_thread.run_sync(self._patch_status, status, patch)
            except ApiException as err:
                if err.status != 404:  # 404: deleted meanwhile; nothing to report on
                    log.warning("status update failed", kind=status.plural, object=str(status.key), status=err.status)
                continue
            ready = status.ready
            log.info(
                "status updated",
                kind=status.plural,
                object=str(status.key),
                ready=ready.status,
                reason=ready.reason,
                message=ready.message,
            )

    def _patch_status(self, status: DesiredStatus, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, status.key.namespace, status.plural, status.key.name, patch, _request_timeout=10
        )


def _decoded(secret: Mapping[str, Any], key: str) -> str | None:
    encoded = (secret.get("data") or {}).get(key)
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded).decode()
    except ValueError:
        return None
