"""The Kubernetes resources the controller reads and writes, and plain-data views of them.

Objects arrive as the API server's JSON (dicts). The views below pick out only what the
reconciler needs, so reconcile.py never indexes raw dicts and a missing field has one default.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "mcp.kuadrant.io"
VERSION = "v1"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = "v1"

REGISTRATIONS = "mcpserverregistrations"
VIRTUAL_SERVERS = "mcpvirtualservers"
EXTENSIONS = "mcpgatewayextensions"
HTTPROUTES = "httproutes"

# Credential Secrets must opt in with one of these labels (current Kuadrant, then the older one):
# the controller only lists labelled Secrets, so it never holds unrelated secrets in memory.
CREDENTIAL_LABELS = ("mcp.kuadrant.io/secret", "mcp.kuadrant.io/credential")

DEFAULT_PATH = "/mcp"
DEFAULT_CREDENTIAL_KEY = "token"
DEFAULT_CA_KEY = "ca.crt"


@dataclass(frozen=True, order=True)
class ObjectKey:
    """namespace/name of a namespaced object."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


def _secret_ref(raw: Any, default_key: str) -> SecretRef | None:
    if not isinstance(raw, Mapping) or not raw.get("name"):
        return None
    return SecretRef(str(raw["name"]), str(raw.get("key") or default_key))


@dataclass(frozen=True)
class Registration:
    """An MCPServerRegistration."""

    key: ObjectKey
    generation: int
    created: str
    prefix: str | None  # None: neither `prefix` nor `toolPrefix` given
    prefix_conflict: bool  # `prefix` and its old name `toolPrefix` both given and different
    path: str
    state: str
    target_group: str
    target_kind: str
    target: ObjectKey
    credential: SecretRef | None
    ca_cert: SecretRef | None
    status: Mapping[str, Any]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Registration:
        key = key_of(obj)
        spec = _spec(obj)
        raw_target = spec.get("targetRef")
        target: Mapping[str, Any] = raw_target if isinstance(raw_target, Mapping) else {}
        prefix = spec.get("prefix")
        legacy = spec.get("toolPrefix")
        given = [str(p) for p in (prefix, legacy) if p is not None]
        status = obj.get("status")
        return cls(
            key=key,
            generation=int(_meta(obj).get("generation") or 0),
            created=str(_meta(obj).get("creationTimestamp") or ""),
            prefix=given[0] if given else None,
            prefix_conflict=len(set(given)) > 1,
            path=str(spec.get("path") or DEFAULT_PATH),
            state=str(spec.get("state") or "Enabled"),
            target_group=str(target.get("group") or GATEWAY_API_GROUP),
            target_kind=str(target.get("kind") or "HTTPRoute"),
            target=ObjectKey(str(target.get("namespace") or key.namespace), str(target.get("name") or "")),
            credential=_secret_ref(spec.get("credentialRef"), DEFAULT_CREDENTIAL_KEY),
            ca_cert=_secret_ref(spec.get("caCertSecretRef"), DEFAULT_CA_KEY),
            status=status if isinstance(status, Mapping) else {},
        )


@dataclass(frozen=True)
class BackendRef:
    group: str
    kind: str
    name: str
    namespace: str
    port: int | None


@dataclass(frozen=True)
class ParentRef:
    name: str
    namespace: str
    section: str | None


@dataclass(frozen=True)
class Route:
    """An HTTPRoute: its hostnames, parent Gateways and backends."""

    key: ObjectKey
    hostnames: tuple[str, ...]
    parents: tuple[ParentRef, ...]
    backends: tuple[BackendRef, ...]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Route:
        key = key_of(obj)
        spec = _spec(obj)
        parents = tuple(
            ParentRef(str(p.get("name") or ""), str(p.get("namespace") or key.namespace), p.get("sectionName"))
            for p in spec.get("parentRefs") or []
            if isinstance(p, Mapping)
        )
        backends: list[BackendRef] = []
        for rule in spec.get("rules") or []:
            if not isinstance(rule, Mapping):
                continue
            for ref in rule.get("backendRefs") or []:
                if not isinstance(ref, Mapping):
                    continue
                port = ref.get("port")
                backends.append(
                    BackendRef(
                        group=str(ref.get("group") or ""),
                        kind=str(ref.get("kind") or "Service"),
                        name=str(ref.get("name") or ""),
                        namespace=str(ref.get("namespace") or key.namespace),
                        port=int(port) if isinstance(port, int) else None,
                    )
                )
        hostnames = tuple(str(h) for h in spec.get("hostnames") or [])
        return cls(key, hostnames, parents, tuple(dict.fromkeys(backends)))


@dataclass(frozen=True)
class Extension:
    """An MCPGatewayExtension: which Gateway (and listener) this gateway instance serves."""

    key: ObjectKey
    generation: int
    created: str
    gateway: ObjectKey
    section: str | None
    target_kind: str
    status: Mapping[str, Any]
    # Kuadrant's spec.oauthProtectedResource (RFC 9728 metadata fields), as given; None if absent.
    protected_resource: Mapping[str, Any] | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Extension:
        key = key_of(obj)
        raw_target = _spec(obj).get("targetRef")
        target: Mapping[str, Any] = raw_target if isinstance(raw_target, Mapping) else {}
        status = obj.get("status")
        protected = _spec(obj).get("oauthProtectedResource")
        return cls(
            key=key,
            generation=int(_meta(obj).get("generation") or 0),
            created=str(_meta(obj).get("creationTimestamp") or ""),
            gateway=ObjectKey(str(target.get("namespace") or key.namespace), str(target.get("name") or "")),
            section=target.get("sectionName"),
            target_kind=str(target.get("kind") or "Gateway"),
            status=status if isinstance(status, Mapping) else {},
            protected_resource=protected if isinstance(protected, Mapping) else None,
        )


@dataclass(frozen=True)
class VirtualServerSpec:
    """An MCPVirtualServer."""

    key: ObjectKey
    generation: int
    tools: tuple[str, ...]
    prompts: tuple[str, ...]
    status: Mapping[str, Any]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> VirtualServerSpec:
        spec = _spec(obj)
        status = obj.get("status")
        return cls(
            key=key_of(obj),
            generation=int(_meta(obj).get("generation") or 0),
            tools=tuple(str(t) for t in spec.get("tools") or []),
            prompts=tuple(str(p) for p in spec.get("prompts") or []),
            status=status if isinstance(status, Mapping) else {},
        )


@dataclass(frozen=True)
class SecretView:
    """A labelled Secret: its keys and decoded values. `repr` never shows the values."""

    key: ObjectKey
    values: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> SecretView:
        values: dict[str, str] = {}
        for name, encoded in (obj.get("data") or {}).items():
            try:
                values[str(name)] = base64.b64decode(str(encoded), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue  # not a text credential; treated as a missing key
        return cls(key_of(obj), values)


@dataclass(frozen=True)
class UpstreamReport:
    """What the broker's /status says about one server."""

    state: str  # connecting | ready | degraded | failed | disabled
    reason: str | None
    tools: int


def upstream_reports(document: Any) -> dict[str, UpstreamReport]:
    """`{"upstreams": [{"name", "state", "reason", "toolCount"}, ...]}` (the broker's /status)
    -> reports by server name; anything malformed is skipped."""
    reports: dict[str, UpstreamReport] = {}
    upstreams = document.get("upstreams") if isinstance(document, Mapping) else None
    for upstream in upstreams if isinstance(upstreams, list) else []:
        if not isinstance(upstream, Mapping):
            continue
        name, count = upstream.get("name"), upstream.get("toolCount")
        if not isinstance(name, str) or not isinstance(count, int) or isinstance(count, bool):
            continue
        reason = upstream.get("reason")
        reports[name] = UpstreamReport(
            state=str(upstream.get("state") or "unknown"),
            reason=reason if isinstance(reason, str) else None,
            tools=count,
        )
    return reports


GATEWAYS = "gateways"
REFERENCE_GRANTS = "referencegrants"
# ReferenceGrant is served as v1beta1 by every Gateway API release Kuadrant supports.
REFERENCE_GRANT_VERSION = "v1beta1"
EXTENSION_KIND = "MCPGatewayExtension"


@dataclass(frozen=True)
class Listener:
    """One Gateway listener: which namespaces it admits routes from (spec.allowedRoutes)."""

    name: str
    allowed_from: str  # All | Same | Selector | None (Gateway API; Same when not given)
    selector: Mapping[str, Any] | None  # the label selector when allowed_from is Selector

    def admits(self, namespace: str, gateway_namespace: str, labels: Mapping[str, str]) -> bool:
        """Gateway API semantics; an unknown `from` admits nothing (be strict about the new)."""
        if self.allowed_from == "All":
            return True
        if self.allowed_from == "Same":
            return namespace == gateway_namespace
        if self.allowed_from == "Selector":
            return self.selector is not None and selector_matches(self.selector, labels)
        return False


@dataclass(frozen=True)
class Gateway:
    """A Gateway API Gateway: that it exists, and its listeners by name."""

    key: ObjectKey
    listeners: Mapping[str, Listener]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Gateway:
        raw = _spec(obj).get("listeners")
        listeners: dict[str, Listener] = {}
        for listener in raw if isinstance(raw, list) else []:
            if not isinstance(listener, Mapping) or not listener.get("name"):
                continue
            allowed = listener.get("allowedRoutes")
            namespaces = allowed.get("namespaces") if isinstance(allowed, Mapping) else None
            namespaces = namespaces if isinstance(namespaces, Mapping) else {}
            selector = namespaces.get("selector")
            name = str(listener["name"])
            listeners[name] = Listener(
                name,
                str(namespaces.get("from") or "Same"),
                selector if isinstance(selector, Mapping) else None,
            )
        return cls(key_of(obj), listeners)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions, ANDed) against `labels`.
    A malformed selector matches nothing."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        return False
    if any(labels.get(str(k)) != str(v) for k, v in match_labels.items()):
        return False
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return False
        key, operator = str(expression.get("key") or ""), expression.get("operator")
        raw_values = expression.get("values")
        values = {str(v) for v in raw_values} if isinstance(raw_values, list) else set()
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            return False
        if not ok:
            return False
    return True


def namespace_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


@dataclass(frozen=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True)
class GrantTo:
    group: str
    kind: str
    name: str | None  # None: every object of the kind in the grant's namespace


@dataclass(frozen=True)
class ReferenceGrant:
    """A Gateway API ReferenceGrant: who (`from`) may refer to what (`to`) in its namespace."""

    key: ObjectKey
    sources: tuple[GrantFrom, ...]
    targets: tuple[GrantTo, ...]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ReferenceGrant:
        spec = _spec(obj)
        raw_from, raw_to = spec.get("from"), spec.get("to")
        sources = tuple(
            GrantFrom(str(f.get("group") or ""), str(f.get("kind") or ""), str(f.get("namespace") or ""))
            for f in (raw_from if isinstance(raw_from, list) else [])
            if isinstance(f, Mapping)
        )
        targets = tuple(
            GrantTo(str(t.get("group") or ""), str(t.get("kind") or ""), str(t["name"]) if t.get("name") else None)
            for t in (raw_to if isinstance(raw_to, list) else [])
            if isinstance(t, Mapping)
        )
        return cls(key_of(obj), sources, targets)

    def allows_extension(self, extension: ObjectKey, gateway: ObjectKey) -> bool:
        """Whether this grant lets MCPGatewayExtension `extension` target Gateway `gateway`
        (Kuadrant's rule: a `from` naming our group, kind and the extension's namespace, and a
        `to` naming Gateways, either all of them or this one by name)."""
        if self.key.namespace != gateway.namespace:
            return False
        source_ok = any(
            s.group == GROUP and s.kind == EXTENSION_KIND and s.namespace == extension.namespace
            for s in self.sources
        )
        target_ok = any(
            t.group == GATEWAY_API_GROUP and t.kind == "Gateway" and t.name in (None, gateway.name)
            for t in self.targets
        )
        return source_ok and target_ok
