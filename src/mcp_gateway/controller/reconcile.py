"""The reconciler as a pure function: cluster state in, desired config and statuses out.

No I/O here. `reconcile()` decides, for every MCPServerRegistration, MCPVirtualServer and
MCPGatewayExtension, what the gateway config should hold and which Ready condition the object
should carry; `render_config()` turns that into the exact `config.yaml` text; `status_patch()`
says whether an object's status needs a write. The I/O layer (service.py) only feeds it and
applies the result, so every rule below is unit-tested without a cluster.

Registrations are judged oldest first (creationTimestamp, then namespace/name), so when two
claim the same prefix the one that was there first keeps it and the newcomer is told why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mcp_gateway.config import dump_config, parse_config
from mcp_gateway.controller.resources import (
    CREDENTIAL_LABELS,
    EXTENSION_KIND,
    EXTENSIONS,
    GATEWAY_API_GROUP,
    GROUP,
    REFERENCE_GRANT_VERSION,
    REGISTRATIONS,
    VIRTUAL_SERVERS,
    BackendRef,
    Extension,
    Gateway,
    ObjectKey,
    ReferenceGrant,
    Registration,
    Route,
    SecretRef,
    SecretView,
    UpstreamReport,
    VirtualServerSpec,
)

# Kuadrant's v1 pattern for `prefix`; the MCP tool-name alphabet allows more, but a prefix that
# passes here is valid on both, so a registration is portable between the two gateways.
PREFIX_PATTERN = re.compile(r"[a-z0-9][a-z0-9_]*")
PREFIX_MAX_LENGTH = 100

READY = "Ready"
DISCOVERED = "Discovered"
REASON_MAX = 500  # a broker's failure reason is cut to this many characters in a message


class Reason:
    """Condition reasons (CamelCase, stable: documented in docs/troubleshooting.md)."""

    CONFIG_WRITTEN = "ConfigWritten"
    DISABLED = "Disabled"
    INVALID_PREFIX = "InvalidPrefix"
    INVALID_TARGET_REF = "InvalidTargetRef"
    ROUTE_NOT_FOUND = "RouteNotFound"
    INVALID_ROUTE = "InvalidRoute"
    NO_GATEWAY_EXTENSION = "NoGatewayExtension"
    ROUTE_NOT_ATTACHED = "RouteNotAttached"
    CREDENTIAL_SECRET_MISSING = "CredentialSecretMissing"
    CREDENTIAL_SECRET_NOT_LABELLED = "CredentialSecretNotLabelled"
    CREDENTIAL_KEY_MISSING = "CredentialKeyMissing"
    CA_CERT_SECRET_MISSING = "CACertSecretMissing"
    CA_CERT_KEY_MISSING = "CACertKeyMissing"
    DUPLICATE_PREFIX = "DuplicatePrefix"
    PREFIX_OVERLAP = "PrefixOverlap"
    VALID_EXTENSION = "ValidMCPGatewayExtension"
    INVALID_EXTENSION = "InvalidMCPGatewayExtension"
    REFERENCE_GRANT_REQUIRED = "ReferenceGrantRequired"  # Kuadrant's reason, same spelling
    VIRTUAL_SERVER_PROGRAMMED = "Programmed"
    UNKNOWN_TOOL_PREFIX = "UnknownToolPrefix"
    # The Discovered condition, from the broker's /status (only with MCP_GATEWAY_STATUS_URL).
    TOOLS_DISCOVERED = "ToolsDiscovered"
    DEGRADED = "Degraded"
    UPSTREAM_FAILED = "UpstreamFailed"
    CONNECTING = "Connecting"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str


@dataclass(frozen=True)
class DesiredStatus:
    """The status one object should have. `extra` holds fields beside conditions."""

    plural: str
    key: ObjectKey
    generation: int
    conditions: tuple[Condition, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> Condition:
        return next(c for c in self.conditions if c.type == READY)


@dataclass(frozen=True)
class Snapshot:
    """What the informers hold right now (only the fields reconcile needs)."""

    registrations: Sequence[Registration] = ()
    routes: Mapping[ObjectKey, Route] = field(default_factory=dict)
    extensions: Sequence[Extension] = ()  # those in the controller's own namespace
    virtual_servers: Sequence[VirtualServerSpec] = ()
    secrets: Mapping[ObjectKey, SecretView] = field(default_factory=dict)  # labelled ones
    unlabelled_secrets: frozenset[ObjectKey] = frozenset()  # exist, but lack the label
    upstreams: Mapping[str, UpstreamReport] = field(default_factory=dict)  # the broker's view
    gateways: Mapping[ObjectKey, Gateway] = field(default_factory=dict)  # every namespace's
    reference_grants: Sequence[ReferenceGrant] = ()  # every namespace's
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by namespace


@dataclass(frozen=True)
class Desired:
    servers: tuple[Mapping[str, Any], ...]
    virtual_servers: tuple[Mapping[str, Any], ...]
    statuses: tuple[DesiredStatus, ...]
    # gateway.auth keys from our extension's spec.oauthProtectedResource; None: it has none.
    auth: Mapping[str, Any] | None = None

    def status_of(self, plural: str, key: ObjectKey) -> DesiredStatus | None:
        return next((s for s in self.statuses if s.plural == plural and s.key == key), None)


class _NotReady(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def server_name(key: ObjectKey) -> str:
    """The config name of a registration's server: `namespace/name`, as Kuadrant names it."""
    return f"{key.namespace}/{key.name}"


# --------------------------------------------------------------------------------------------
# the decision


def reconcile(snapshot: Snapshot, *, namespace: str, secret_name: str) -> Desired:
    """Desired config and statuses for the gateway instance in `namespace`.

    Several instances (one per namespace with an MCPGatewayExtension) may share a cluster. Each
    one sees every extension, so all agree which instance serves which Gateway: a registration
    whose route attaches to another instance's Gateway is that instance's business (no status
    from us, not in our config); problems found before that point (prefix, route, backend) are
    judged identically by every instance, so their status writes never disagree.
    """
    statuses: list[DesiredStatus] = []
    by_gateway, extension_statuses = _judge_extensions(snapshot, namespace, secret_name)
    statuses.extend(extension_statuses)
    ours = next((e for e in by_gateway.values() if e.key.namespace == namespace), None)

    servers: list[dict[str, Any]] = []
    admitted: list[tuple[str, Registration]] = []  # (prefix, registration) in admission order
    for registration in sorted(snapshot.registrations, key=lambda r: (r.created, r.key)):
        try:
            entry, owners = _server_entry(registration, snapshot, by_gateway, ours)
            if entry is None:
                continue  # served by another instance
            _check_prefix_free(entry["prefix"], admitted)
        except _NotReady as not_ready:
            statuses.append(_registration_status(registration, False, not_ready.reason, not_ready.message, snapshot))
            continue
        admitted.append((entry["prefix"], registration))
        servers.append(entry)
        if entry["state"] == "Disabled":
            statuses.append(
                _registration_status(
                    registration,
                    False,
                    Reason.DISABLED,
                    "spec.state is Disabled: the server stays in the config but the gateway does not "
                    "connect to it or list its tools",
                    snapshot,
                )
            )
        else:
            served_by = ", ".join(str(o.key) for o in owners)
            statuses.append(
                _registration_status(
                    registration,
                    True,
                    Reason.CONFIG_WRITTEN,
                    f"server {entry['name']} at {entry['url']} (prefix {entry['prefix']!r}) is in the "
                    f"config of the gateway of MCPGatewayExtension {served_by}",
                    snapshot,
                    # A server two instances serve has two brokers' views: report neither, so the
                    # instances never disagree on its status.
                    sole_owner=len(owners) == 1,
                )
            )

    virtual_servers, virtual_statuses = _judge_virtual_servers(snapshot.virtual_servers, snapshot.registrations)
    statuses.extend(virtual_statuses)
    servers.sort(key=lambda s: str(s["name"]))
    return Desired(tuple(servers), tuple(virtual_servers), tuple(statuses), _auth_of(ours))


def _auth_of(extension: Extension | None) -> dict[str, Any] | None:
    """Kuadrant's `spec.oauthProtectedResource` as `gateway.auth` keys: what the gateway's RFC
    9728 metadata document says (resource, authorization servers, scopes). `resourceName` and
    `bearerMethodsSupported` have no key of ours: the document names the gateway and offers the
    header method only (docs/kubernetes.md, "Inbound OAuth")."""
    spec = extension.protected_resource if extension is not None else None
    if spec is None:
        return None
    auth: dict[str, Any] = {"authorization_servers": [str(s) for s in spec.get("authorizationServers") or []]}
    if spec.get("resource"):
        auth["resource"] = str(spec["resource"])
    if spec.get("scopesSupported"):
        auth["scopes_supported"] = [str(s) for s in spec["scopesSupported"]]
    return auth


def _judge_extensions(
    snapshot: Snapshot, namespace: str, secret_name: str
) -> tuple[dict[ObjectKey, Extension], list[DesiredStatus]]:
    """The valid extension of each extended Gateway, and statuses for those in `namespace`.

    An extension is valid when its Gateway exists (with the listener it names), a ReferenceGrant
    in the Gateway's namespace allows it if it lives elsewhere, and it is the oldest both in its
    namespace (it configures that namespace's gateway instance) and for its Gateway (so every
    route has one owner). Every instance computes the same answer from the same objects.
    """
    statuses: list[DesiredStatus] = []
    by_namespace: dict[str, Extension] = {}
    by_gateway: dict[ObjectKey, Extension] = {}
    for extension in sorted(snapshot.extensions, key=lambda e: (e.created, e.key)):
        problem = _target_problem(extension, snapshot)
        if problem is not None:
            condition = problem
        elif extension.key.namespace in by_namespace:
            condition = Condition(
                READY,
                "False",
                Reason.INVALID_EXTENSION,
                f"MCPGatewayExtension {by_namespace[extension.key.namespace].key} already configures "
                f"the gateway instance in namespace {extension.key.namespace} (one per namespace; the "
                "oldest wins)",
            )
        elif extension.gateway in by_gateway:
            condition = Condition(
                READY,
                "False",
                Reason.INVALID_EXTENSION,
                f"Gateway {extension.gateway} is already extended by MCPGatewayExtension "
                f"{by_gateway[extension.gateway].key} (one per Gateway; the oldest wins)",
            )
        else:
            by_namespace[extension.key.namespace] = by_gateway[extension.gateway] = extension
            listener = f" listener {extension.section}" if extension.section else ""
            condition = Condition(
                READY,
                "True",
                Reason.VALID_EXTENSION,
                f"serving Gateway {extension.gateway}{listener}; server config in Secret "
                f"{extension.key.namespace}/{secret_name}",
            )
        if extension.key.namespace == namespace:  # other instances report on their own
            statuses.append(DesiredStatus(EXTENSIONS, extension.key, extension.generation, (condition,)))
    return by_gateway, statuses


def _target_problem(extension: Extension, snapshot: Snapshot) -> Condition | None:
    """What is wrong with an extension's targetRef, checked in Kuadrant's order: a Gateway, that
    exists, has the listener named, whose allowedRoutes admit the extension's namespace, and
    (from another namespace) is granted by a ReferenceGrant.
    A problem found here does not claim the namespace or the Gateway for the extension."""
    if extension.target_kind != "Gateway" or not extension.gateway.name:
        return Condition(READY, "False", Reason.INVALID_EXTENSION, "spec.targetRef must name a Gateway")
    gateway = snapshot.gateways.get(extension.gateway)
    if gateway is None:
        return Condition(
            READY,
            "False",
            Reason.INVALID_EXTENSION,
            f"Gateway {extension.gateway} (spec.targetRef) not found",
        )
    if extension.section:
        listener = gateway.listeners.get(extension.section)
        if listener is None:
            listeners = ", ".join(sorted(gateway.listeners)) or "none"
            return Condition(
                READY,
                "False",
                Reason.INVALID_EXTENSION,
                f"listener {extension.section!r} (spec.targetRef.sectionName) not found on Gateway "
                f"{extension.gateway} (listeners: {listeners})",
            )
        # The gateway instance's own HTTPRoute lives in the extension's namespace and attaches to
        # this listener: a listener that would not admit it cannot carry MCP traffic to us.
        labels = snapshot.namespace_labels.get(extension.key.namespace, {})
        if not listener.admits(extension.key.namespace, extension.gateway.namespace, labels):
            return Condition(
                READY,
                "False",
                Reason.INVALID_EXTENSION,
                f"listener {extension.section!r} on Gateway {extension.gateway} does not allow routes "
                f"from namespace {extension.key.namespace} (spec.listeners[].allowedRoutes.namespaces: "
                f"from {listener.allowed_from})",
            )
    if extension.gateway.namespace != extension.key.namespace and not any(
        grant.allows_extension(extension.key, extension.gateway) for grant in snapshot.reference_grants
    ):
        return Condition(
            READY,
            "False",
            Reason.REFERENCE_GRANT_REQUIRED,
            f"Gateway {extension.gateway} is in another namespace: a ReferenceGrant "
            f"({GATEWAY_API_GROUP}/{REFERENCE_GRANT_VERSION}) is required in namespace "
            f"{extension.gateway.namespace} with from {{group: {GROUP}, kind: {EXTENSION_KIND}, "
            f"namespace: {extension.key.namespace}}} and to {{group: {GATEWAY_API_GROUP}, kind: Gateway}} "
            f"(optionally name: {extension.gateway.name}); none there allows it",
        )
    return None


def _server_entry(
    registration: Registration,
    snapshot: Snapshot,
    by_gateway: Mapping[ObjectKey, Extension],
    ours: Extension | None,
) -> tuple[dict[str, Any] | None, list[Extension]]:
    """The config entry for one registration and the extensions serving it; (None, owners) when
    only other instances serve it; _NotReady naming the first thing wrong."""
    prefix = _valid_prefix(registration)
    if registration.target_group != GATEWAY_API_GROUP or registration.target_kind != "HTTPRoute":
        raise _NotReady(
            Reason.INVALID_TARGET_REF,
            f"spec.targetRef must be a {GATEWAY_API_GROUP} HTTPRoute, not "
            f"{registration.target_group or 'core'} {registration.target_kind}",
        )
    route = snapshot.routes.get(registration.target)
    if route is None:
        raise _NotReady(Reason.ROUTE_NOT_FOUND, f"HTTPRoute {registration.target} not found")
    url = _backend_url(route, registration.path)
    if not by_gateway:
        if snapshot.extensions:  # there are some, but none is valid: point at them, not at "create"
            invalid = ", ".join(sorted(str(e.key) for e in snapshot.extensions))
            raise _NotReady(
                Reason.NO_GATEWAY_EXTENSION,
                f"no valid MCPGatewayExtension: {invalid} not Ready (its status says why)",
            )
        raise _NotReady(
            Reason.NO_GATEWAY_EXTENSION,
            "no valid MCPGatewayExtension exists: create one in the gateway's namespace targeting "
            "the Gateway your HTTPRoutes attach to",
        )
    serving = {by_gateway[g].key: by_gateway[g] for g in _parent_gateways(route) if g in by_gateway}
    owners = [serving[key] for key in sorted(serving)]
    if not owners:
        extended = ", ".join(sorted(str(g) for g in by_gateway))
        raise _NotReady(
            Reason.ROUTE_NOT_ATTACHED,
            f"HTTPRoute {route.key} has no parentRef to a Gateway an MCPGatewayExtension extends "
            f"({extended})",
        )
    if ours is None or ours.key not in serving:
        return None, owners
    entry: dict[str, Any] = {
        "name": server_name(registration.key),
        "url": url,
        "prefix": prefix,
        "state": "Disabled" if registration.state == "Disabled" else "Enabled",
    }
    if route.hostnames:
        entry["hostname"] = route.hostnames[0]
    if registration.credential is not None:
        entry["credential"] = _secret_value(
            registration, registration.credential, snapshot, "credential",
            (Reason.CREDENTIAL_SECRET_MISSING, Reason.CREDENTIAL_SECRET_NOT_LABELLED, Reason.CREDENTIAL_KEY_MISSING),
        )
    if registration.ca_cert is not None:
        entry["caCert"] = _secret_value(
            registration, registration.ca_cert, snapshot, "CA certificate",
            (Reason.CA_CERT_SECRET_MISSING, Reason.CA_CERT_SECRET_MISSING, Reason.CA_CERT_KEY_MISSING),
        )
    return entry, owners


def _valid_prefix(registration: Registration) -> str:
    if registration.prefix_conflict:
        raise _NotReady(
            Reason.INVALID_PREFIX,
            "spec.prefix and spec.toolPrefix (its old name) are both set and differ; keep one",
        )
    prefix = registration.prefix or ""
    if prefix and (not PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > PREFIX_MAX_LENGTH):
        raise _NotReady(
            Reason.INVALID_PREFIX,
            f"prefix {prefix!r} must match ^[a-z0-9][a-z0-9_]*$ (lower-case letters, digits, "
            f"underscores) and be at most {PREFIX_MAX_LENGTH} characters",
        )
    return prefix


def _backend_url(route: Route, path: str) -> str:
    if not route.backends:
        raise _NotReady(Reason.INVALID_ROUTE, f"HTTPRoute {route.key} has no backendRefs")
    if len(route.backends) > 1:
        raise _NotReady(
            Reason.INVALID_ROUTE,
            f"HTTPRoute {route.key} has {len(route.backends)} different backendRefs; an MCP server's "
            "route must have exactly one backend",
        )
    backend = route.backends[0]
    if not path.startswith("/"):
        raise _NotReady(Reason.INVALID_ROUTE, f"spec.path {path!r} must start with /")
    if backend.kind == "Service" and backend.group in ("", "core"):
        if backend.port is None:
            raise _NotReady(
                Reason.INVALID_ROUTE, f"HTTPRoute {route.key}: backendRef to Service {backend.name} has no port"
            )
        return f"http://{backend.name}.{backend.namespace}.svc.cluster.local:{backend.port}{path}"
    if backend.kind == "Hostname":
        return _external_url(backend, path)
    raise _NotReady(
        Reason.INVALID_ROUTE,
        f"HTTPRoute {route.key}: backendRef kind {backend.kind} is not supported (Service or Hostname)",
    )


def _external_url(backend: BackendRef, path: str) -> str:
    """An Istio `Hostname` backend (an external server): TLS on 443, plain HTTP elsewhere."""
    if backend.port in (None, 443):
        return f"https://{backend.name}{path}"
    return f"http://{backend.name}:{backend.port}{path}"


def _parent_gateways(route: Route) -> set[ObjectKey]:
    """The Gateways a route names. Listeners are not compared: server routes usually attach to a
    wildcard listener (`*.mcp.local`) beside the public one an extension names, on the same
    port, and telling ports apart would need the Gateway itself."""
    return {ObjectKey(parent.namespace, parent.name) for parent in route.parents}


def _secret_value(
    registration: Registration,
    ref: SecretRef,
    snapshot: Snapshot,
    what: str,
    reasons: tuple[str, str, str],
) -> str:
    missing, not_labelled, key_missing = reasons
    secret_key = ObjectKey(registration.key.namespace, ref.name)
    secret = snapshot.secrets.get(secret_key)
    if secret is None:
        if secret_key in snapshot.unlabelled_secrets:
            raise _NotReady(
                not_labelled,
                f"Secret {secret_key} for the {what} exists but lacks the label "
                f"{CREDENTIAL_LABELS[0]}=true (the controller only reads labelled Secrets)",
            )
        raise _NotReady(missing, f"Secret {secret_key} for the {what} not found")
    if ref.key not in secret.values:
        keys = ", ".join(sorted(secret.values)) or "none"
        raise _NotReady(
            key_missing, f"Secret {secret_key} has no key {ref.key!r} for the {what} (keys: {keys})"
        )
    return secret.values[ref.key]


def _check_prefix_free(prefix: str, admitted: Sequence[tuple[str, Registration]]) -> None:
    """Same rule as the config file's: equal, both empty, or one a prefix of the other."""
    for other_prefix, other in admitted:
        if other_prefix == prefix:
            what = "no prefix" if not prefix else f"prefix {prefix!r}"
            raise _NotReady(
                Reason.DUPLICATE_PREFIX,
                f"{what} is already used by MCPServerRegistration {other.key} (older); tool names "
                "would be ambiguous",
            )
        if prefix and other_prefix and (prefix.startswith(other_prefix) or other_prefix.startswith(prefix)):
            raise _NotReady(
                Reason.PREFIX_OVERLAP,
                f"prefix {prefix!r} overlaps {other_prefix!r} of MCPServerRegistration {other.key} "
                "(older): a tool name could belong to either",
            )


def _registration_status(
    registration: Registration,
    ready: bool,
    reason: str,
    message: str,
    snapshot: Snapshot,
    *,
    sole_owner: bool = False,
) -> DesiredStatus:
    conditions = [Condition(READY, "True" if ready else "False", reason, message)]
    extra: dict[str, Any] = {}
    report = snapshot.upstreams.get(server_name(registration.key))
    if ready and sole_owner and report is not None:
        extra["discoveredTools"] = report.tools
        conditions.append(_discovered(report))
    return DesiredStatus(REGISTRATIONS, registration.key, registration.generation, tuple(conditions), extra)


def _discovered(report: UpstreamReport) -> Condition:
    """The broker's view of the server as a condition: is it connected, how many tools."""
    why = (report.reason or "")[:REASON_MAX]
    if report.state == "ready":
        return Condition(DISCOVERED, "True", Reason.TOOLS_DISCOVERED, f"{report.tools} tools listed by the gateway")
    if report.state == "degraded":
        return Condition(DISCOVERED, "True", Reason.DEGRADED, f"{report.tools} tools; partly wrong: {why}")
    if report.state == "failed":
        return Condition(DISCOVERED, "False", Reason.UPSTREAM_FAILED, f"the gateway cannot use the server: {why}")
    return Condition(DISCOVERED, "Unknown", Reason.CONNECTING, f"the gateway reports state {report.state}")


def _judge_virtual_servers(
    virtual_servers: Sequence[VirtualServerSpec], registrations: Sequence[Registration]
) -> tuple[list[dict[str, Any]], list[DesiredStatus]]:
    """Every instance carries every virtual server. The check uses the prefixes of all
    registrations in the cluster, not just this instance's, so every instance reports the same."""
    entries: list[dict[str, Any]] = []
    statuses: list[DesiredStatus] = []
    prefixes = [r.prefix or "" for r in registrations if not r.prefix_conflict]
    for virtual in sorted(virtual_servers, key=lambda v: v.key):
        entry: dict[str, Any] = {"name": f"{virtual.key.namespace}/{virtual.key.name}", "tools": list(virtual.tools)}
        if virtual.prompts:
            entry["prompts"] = list(virtual.prompts)
        entries.append(entry)
        # Tool names are only known to the broker; what the controller can tell is a tool whose
        # name starts with no registered server's prefix when every server has one.
        orphans = (
            [t for t in virtual.tools if not any(t.startswith(p) for p in prefixes)]
            if prefixes and "" not in prefixes
            else []
        )
        if orphans:
            condition = Condition(
                READY,
                "False",
                Reason.UNKNOWN_TOOL_PREFIX,
                f"no registered server's prefix matches tools {', '.join(orphans)}; tool names "
                "must include their server's prefix",
            )
        else:
            condition = Condition(
                READY,
                "True",
                Reason.VIRTUAL_SERVER_PROGRAMMED,
                f"{len(virtual.tools)} tools exposed to sessions started with header "
                f"X-Mcp-Virtualserver: {entry['name']}",
            )
        statuses.append(DesiredStatus(VIRTUAL_SERVERS, virtual.key, virtual.generation, (condition,)))
    return entries, statuses


# --------------------------------------------------------------------------------------------
# applying the decision (still pure)


def render_config(desired: Desired, existing_text: str | None) -> str:
    """The `config.yaml` to write: `existing_text` (the base) with `servers` and `virtualServers`
    replaced.

    The controller owns those two keys; everything else (our `gateway:` section with listen
    addresses, origins, session store) is the operator's and is kept as it is. The result is
    validated by the same parser the gateway uses and dumped canonically, so an unchanged
    cluster renders the same bytes and the Secret is not rewritten.
    Raises config.ConfigError if the result would not load (the caller logs and keeps the old).
    """
    base: dict[str, Any] = {}
    if existing_text and existing_text.strip():
        base = yaml.safe_load(dump_config(parse_config(existing_text, source="existing Secret")))
    document = {
        **base,
        "servers": [dict(server) for server in desired.servers],
        "virtualServers": [dict(virtual) for virtual in desired.virtual_servers],
    }
    if desired.auth is not None:
        document["gateway"] = _with_auth(dict(base.get("gateway") or {}), desired.auth)
    return dump_config(parse_config(yaml.safe_dump(document), source="controller output"))


def _with_auth(gateway: dict[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The base's `gateway:` with the extension's metadata keys in `auth`. Auth is on when the
    gateway can check tokens itself: the base names the issuer and its key set (Kuadrant's field
    has neither: there an AuthPolicy checks them) and a resource is known. Otherwise it is left
    as the base has it, so a config that cannot validate tokens is never written."""
    auth = {**(gateway.get("auth") or {}), **wanted}
    resource_known = bool(auth.get("resource") or gateway.get("public_url"))
    if auth.get("issuer") and auth.get("jwks_url") and resource_known:
        auth["enabled"] = True
    gateway["auth"] = auth
    return gateway


def status_patch(current: Mapping[str, Any], desired: DesiredStatus, now: str) -> dict[str, Any] | None:
    """The merge patch that brings `current` status to `desired`, or None when it already is.

    lastTransitionTime moves only when a condition's status changes (Kubernetes convention).
    """
    old_conditions = {
        c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, Mapping)
    }
    conditions = []
    for condition in desired.conditions:
        old = old_conditions.get(condition.type)
        unchanged = old is not None and old.get("status") == condition.status and old.get("lastTransitionTime")
        conditions.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": desired.generation,
                "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else now,
            }
        )
    new: dict[str, Any] = {"observedGeneration": desired.generation, "conditions": conditions, **desired.extra}
    if desired.plural == REGISTRATIONS and "discoveredTools" not in desired.extra and "discoveredTools" in current:
        new["discoveredTools"] = None  # merge patch: drop a count that no longer applies
    settled = all(
        (k not in current) if v is None else current.get(k) == v for k, v in new.items()
    )
    return None if settled else {"status": new}
