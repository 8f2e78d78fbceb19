"""Hypothesis properties of the pure reconcile (docs/invariants.md style): whatever the cluster
holds, the config it renders loads, no credential reaches a status, admitted prefixes never
collide, every registration gets exactly one verdict, and the order of the input does not matter."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import parse_config
from mcp_gateway.controller.reconcile import Snapshot, reconcile, render_config
from mcp_gateway.controller.resources import (
    REGISTRATIONS,
    Extension,
    Gateway,
    ObjectKey,
    ReferenceGrant,
    Registration,
    Route,
    SecretView,
)

PREFIXES = st.sampled_from(["a_", "a_b_", "a_", "a_b_", "b_", None, "", "ab_", "Bad", "x y", "_z"])
SECRET_VALUES = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=12, max_size=20).map(lambda s: "tok-" + s)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Snapshot, list[str]]:
    count = draw(st.integers(min_value=0, max_value=6))
    registrations: list[Registration] = []
    routes: dict[ObjectKey, Route] = {}
    secrets: dict[ObjectKey, SecretView] = {}
    values: list[str] = []
    for index in range(count):
        spec: dict[str, Any] = {"targetRef": {"name": f"r{index}"}}
        prefix = draw(PREFIXES)
        if prefix is not None:
            spec["prefix"] = prefix
        if draw(st.booleans()):
            spec["state"] = "Disabled"
        if draw(st.sampled_from([False, False, True])):
            spec["credentialRef"] = {"name": f"s{index}"}
            if draw(st.booleans()):
                value = draw(SECRET_VALUES)
                values.append(value)
                key = draw(st.sampled_from(["token", "other"]))
                secrets[ObjectKey("apps", f"s{index}")] = SecretView.from_object(
                    {"metadata": {"name": f"s{index}", "namespace": "apps"}, "data": {key: base64.b64encode(value.encode()).decode()}}
                )
        created = f"2026-01-0{draw(st.integers(1, 9))}T00:00:00Z"
        registrations.append(
            Registration.from_object({"metadata": {"name": f"m{index}", "namespace": "apps", "creationTimestamp": created}, "spec": spec})
        )
        # Mostly well-formed, so that many registrations are admitted and can collide.
        if draw(st.sampled_from([True, True, True, False])):
            backends = [{"name": f"svc{index}", "port": 8000 + index}] * draw(st.sampled_from([1, 1, 1, 0, 2]))
            parents = [{"name": draw(st.sampled_from(["gw", "gw", "gw", "other"])), "namespace": "gateway-system"}]
            route = Route.from_object(
                {
                    "metadata": {"name": f"r{index}", "namespace": "apps"},
                    "spec": {"parentRefs": parents, "hostnames": [f"h{index}.mcp.local"], "rules": [{"backendRefs": backends}]},
                }
            )
            routes[route.key] = route
    extensions = []
    if draw(st.sampled_from([True, True, True, False])):
        extensions.append(
            Extension.from_object(
                {"metadata": {"name": "ext", "namespace": "mcp-system"}, "spec": {"targetRef": {"name": "gw", "namespace": "gateway-system", "sectionName": "mcp"}}}
            )
        )
    gateway = Gateway.from_object(
        {"metadata": {"name": "gw", "namespace": "gateway-system"}, "spec": {"listeners": [{"name": "mcp", "allowedRoutes": {"namespaces": {"from": "All"}}}]}}
    )
    grant = ReferenceGrant.from_object(
        {
            "metadata": {"name": "allow", "namespace": "gateway-system"},
            "spec": {
                "from": [{"group": "mcp.kuadrant.io", "kind": "MCPGatewayExtension", "namespace": "mcp-system"}],
                "to": [{"group": "gateway.networking.k8s.io", "kind": "Gateway"}],
            },
        }
    )
    # Usually the Gateway and its grant exist; sometimes not (the extension is then invalid).
    present = draw(st.sampled_from([True, True, True, False]))
    return (
        Snapshot(
            registrations=registrations,
            routes=routes,
            extensions=extensions,
            secrets=secrets,
            gateways={gateway.key: gateway} if present else {},
            reference_grants=[grant] if present else [],
        ),
        values,
    )


@given(clusters())
def test_rendered_config_always_loads(cluster: tuple[Snapshot, list[str]]) -> None:
    snapshot, _ = cluster
    desired = reconcile(snapshot, namespace="mcp-system", secret_name="cfg")
    config = parse_config(render_config(desired, None))
    assert [s.name for s in config.servers] == [str(s["name"]) for s in desired.servers]


@given(clusters())
def test_no_credential_value_in_any_status(cluster: tuple[Snapshot, list[str]]) -> None:
    snapshot, values = cluster
    desired = reconcile(snapshot, namespace="mcp-system", secret_name="cfg")
    text = repr(desired.statuses)
    assert not any(value in text for value in values)


@given(clusters())
def test_admitted_prefixes_never_collide(cluster: tuple[Snapshot, list[str]]) -> None:
    snapshot, _ = cluster
    prefixes = [str(s["prefix"]) for s in reconcile(snapshot, namespace="mcp-system", secret_name="cfg").servers]
    for i, first in enumerate(prefixes):
        for second in prefixes[i + 1 :]:
            assert first != second
            assert not (first and second and (first.startswith(second) or second.startswith(first)))


@given(clusters())
def test_every_registration_gets_exactly_one_verdict(cluster: tuple[Snapshot, list[str]]) -> None:
    snapshot, _ = cluster
    desired = reconcile(snapshot, namespace="mcp-system", secret_name="cfg")
    verdicts = [s.key for s in desired.statuses if s.plural == REGISTRATIONS]
    assert sorted(verdicts) == sorted(r.key for r in snapshot.registrations)
    ready = {s.key for s in desired.statuses if s.plural == REGISTRATIONS and s.ready.status == "True"}
    written = {ObjectKey(*str(s["name"]).split("/")) for s in desired.servers}
    assert ready <= written  # Ready True only for what is in the config


@given(clusters(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(cluster: tuple[Snapshot, list[str]], random: Any) -> None:
    snapshot, _ = cluster
    shuffled = list(snapshot.registrations)
    random.shuffle(shuffled)
    again = dataclasses.replace(snapshot, registrations=shuffled)
    first = reconcile(snapshot, namespace="mcp-system", secret_name="cfg")
    second = reconcile(again, namespace="mcp-system", secret_name="cfg")
    assert first.servers == second.servers
    assert sorted(first.statuses, key=lambda s: (s.plural, s.key)) == sorted(second.statuses, key=lambda s: (s.plural, s.key))
