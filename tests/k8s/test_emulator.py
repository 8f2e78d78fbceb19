"""The test-support extension of kmock behaves like a real API server where a controller cares.

Each test drives RealisticEmulator through the real `kubernetes` client and checks one property
that plain kmock 0.8 lacks (listed in tests/support/kmock_emulator.py).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from tests.support.kmock_emulator import EmulatorThread, matches_labels

GROUP, VERSION, PLURAL = "example.test", "v1", "widgets"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {"kind": "Widget", "plural": PLURAL, "singular": "widget", "listKind": "WidgetList"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": {"status": {}},
            }
        ],
    },
}


def widget(name: str, size: int = 1, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"size": size},
    }


@pytest.fixture
def widgets(client: Any, custom: kubernetes.client.CustomObjectsApi) -> kubernetes.client.CustomObjectsApi:
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(WIDGET_CRD)
    return custom


def test_crd_create_registers_its_resource_and_empty_list_is_served(
    widgets: kubernetes.client.CustomObjectsApi,
) -> None:
    listed = widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL)
    assert listed["items"] == []
    assert int(listed["metadata"]["resourceVersion"]) >= 1


def test_unknown_resource_is_404(custom: kubernetes.client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object("nope.test", "v1", "ns1", "things")
    assert err.value.status == 404


def test_create_answers_201_with_server_filled_metadata(widgets: kubernetes.client.CustomObjectsApi) -> None:
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a"))
    meta = created["metadata"]
    assert meta["namespace"] == "ns1"
    assert meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    with pytest.raises(ApiException) as err:
        widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a"))
    assert err.value.status == 409


def test_generate_name(core: kubernetes.client.CoreV1Api) -> None:
    body = {"metadata": {"generateName": "cm-"}, "data": {"k": "v"}}
    created = core.create_namespaced_config_map("ns1", body)
    assert created.metadata.name.startswith("cm-") and len(created.metadata.name) > 3


def test_put_replaces_and_stale_resource_version_is_refused(widgets: kubernetes.client.CustomObjectsApi) -> None:
    first = widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a", size=1))
    first["spec"] = {"size": 2}
    second = widgets.replace_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a", first)
    assert second["spec"] == {"size": 2}
    assert second["metadata"]["generation"] == 2
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    first["spec"] = {"size": 3}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        widgets.replace_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a", first)
    assert err.value.status == 409
    assert widgets.get_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a")["spec"] == {"size": 2}


def test_lease_replace_is_optimistic(client: Any) -> None:
    leases = kubernetes.client.CoordinationV1Api(client)
    body = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    lease = leases.create_namespaced_lease("ns1", body)
    lease.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("l", "ns1", lease)
    assert renewed.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # stale: based on the first version
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("l", "ns1", lease)
    assert err.value.status == 409


def test_status_is_isolated_and_does_not_bump_generation(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, {**widget("a"), "status": {"x": 1}})
    stored = widgets.get_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a")
    assert "status" not in stored  # status on create is dropped
    patched = widgets.patch_namespaced_custom_object_status(
        GROUP, VERSION, "ns1", PLURAL, "a", {"status": {"ready": True}, "spec": {"size": 99}}
    )
    assert patched["status"] == {"ready": True}
    assert patched["spec"] == {"size": 1}
    assert patched["metadata"]["generation"] == 1
    main = widgets.patch_namespaced_custom_object(
        GROUP, VERSION, "ns1", PLURAL, "a", {"status": {"ready": False}, "spec": {"size": 5}}
    )
    assert main["status"] == {"ready": True}
    assert main["spec"] == {"size": 5}
    assert main["metadata"]["generation"] == 2
    labelled = widgets.patch_namespaced_custom_object(
        GROUP, VERSION, "ns1", PLURAL, "a", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 2


def test_secret_string_data_folds_into_data(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_secret("ns1", {"metadata": {"name": "s"}, "stringData": {"token": "abc"}})
    secret = core.read_namespaced_secret("s", "ns1")
    assert secret.data == {"token": base64.b64encode(b"abc").decode()}
    assert secret.string_data is None


def test_label_selectors_on_list(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a", tier="x"))
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("b", tier="y"))
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns2", PLURAL, widget("c", tier="x"))
    names = lambda listing: sorted(o["metadata"]["name"] for o in listing["items"])  # noqa: E731
    assert names(widgets.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="tier=x")) == ["a", "c"]
    assert names(widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, label_selector="tier!=x")) == ["b"]
    assert names(widgets.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="!tier")) == []


def test_label_selector_parser() -> None:
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}}}
    assert matches_labels(obj, "a=1,b==2,a,!c")
    assert not matches_labels(obj, "a=1,b!=2")
    assert not matches_labels(obj, "c")


def _watch(widgets: kubernetes.client.CustomObjectsApi, **kwargs: Any) -> list[tuple[str, str]]:
    stream = kubernetes.watch.Watch().stream(
        widgets.list_namespaced_custom_object, GROUP, VERSION, "ns1", PLURAL, _request_timeout=10, **kwargs
    )
    return [(event["type"], event["object"]["metadata"]["name"]) for event in stream]


def test_watch_honours_resource_version_and_timeout(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("old"))
    listing = widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL)
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("new"))
    widgets.create_namespaced_custom_object(GROUP, VERSION, "other", PLURAL, widget("elsewhere"))
    widgets.delete_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "old")
    started = time.monotonic()
    events = _watch(widgets, resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=1)
    assert events == [("ADDED", "new"), ("DELETED", "old")]
    assert 0.9 <= time.monotonic() - started < 5  # the server ended the stream at timeoutSeconds


def test_watch_without_resource_version_starts_from_current_state(
    widgets: kubernetes.client.CustomObjectsApi,
) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a"))
    widgets.delete_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a")
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("b"))
    assert _watch(widgets, timeout_seconds=1) == [("ADDED", "b")]


def test_watch_with_label_selector(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a", tier="x"))
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("b", tier="y"))
    assert _watch(widgets, timeout_seconds=1, label_selector="tier=y") == [("ADDED", "b")]


def test_watch_of_compacted_history_is_410_gone(
    k8s: EmulatorThread, widgets: kubernetes.client.CustomObjectsApi
) -> None:
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a"))
    widgets.patch_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "a", {"spec": {"size": 2}})
    k8s.call(k8s.emulator.compact)
    with pytest.raises(ApiException) as err:
        _watch(widgets, resource_version=created["metadata"]["resourceVersion"], timeout_seconds=1)
    assert err.value.status == 410


def test_watch_bookmark_carries_latest_resource_version(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("a"))
    listing = widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL)
    stream = kubernetes.watch.Watch().stream(
        widgets.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "ns1",
        PLURAL,
        resource_version=listing["metadata"]["resourceVersion"],
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _request_timeout=10,
    )
    events = list(stream)
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == listing["metadata"]["resourceVersion"]


def test_live_watch_sees_changes_made_after_it_started(
    k8s: EmulatorThread, widgets: kubernetes.client.CustomObjectsApi
) -> None:
    import threading

    listing = widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL)
    seen: list[tuple[str, str]] = []
    watcher = threading.Thread(
        target=lambda: seen.extend(
            _watch(widgets, resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=2)
        )
    )
    watcher.start()
    k8s.wait_for_live_watches(1)  # the change below reaches a live watch, not its replay
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("late"))
    watcher.join(10)
    assert seen == [("ADDED", "late")]


def test_live_watch_ends_with_410_when_unsent_history_is_compacted(
    k8s: EmulatorThread, widgets: kubernetes.client.CustomObjectsApi
) -> None:
    import threading

    listing = widgets.list_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL)
    failures: list[int] = []

    def watch() -> None:
        try:
            _watch(widgets, resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=5)
        except ApiException as err:
            failures.append(err.status)

    watcher = threading.Thread(target=watch)
    watcher.start()
    k8s.wait_for_live_watches(1)  # compacted under a live watch, not before it started
    k8s.call(lambda: k8s.emulator.compact(advance=True))  # writes whose events are gone
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, widget("after"))
    watcher.join(10)
    assert failures == [410]


def test_delete_waits_for_finalizers(widgets: kubernetes.client.CustomObjectsApi) -> None:
    body = widget("held")
    body["metadata"]["finalizers"] = ["example.test/cleanup"]
    widgets.create_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, body)
    widgets.delete_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "held")
    marked = widgets.get_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "held")
    assert marked["metadata"]["deletionTimestamp"]
    widgets.patch_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "held", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        widgets.get_namespaced_custom_object(GROUP, VERSION, "ns1", PLURAL, "held")
    assert err.value.status == 404


def test_namespaces_are_objects_and_core_discovery_names_its_group_version(
    core: kubernetes.client.CoreV1Api, client: Any
) -> None:
    core.create_namespace({"metadata": {"name": "team-a"}})
    assert core.read_namespace("team-a").metadata.name == "team-a"
    assert [n.metadata.name for n in core.list_namespace().items] == ["team-a"]
    resources = core.get_api_resources()
    assert resources.group_version == "v1"
    assert "namespaces" in {r.name for r in resources.resources}
