"""kmock's KubernetesEmulator, extended to behave like a real API server where a controller cares.

Plain kmock 0.8 answers 200 on create, has no PUT, no
resourceVersion/generation/uid, no status isolation, no optimistic concurrency, ignores
`resourceVersion`/`timeoutSeconds`/label selectors on watches and lists, and does not register
resources from CRDs. `RealisticEmulator` keeps kmock's HTTP server, request parsing, discovery,
error rendering, object store (`emulator.objects`) and request log (`emulator.requests`), and
replaces the object semantics for resource requests with the real API server's:

- create answers 201, fills namespace, uid, creationTimestamp, resourceVersion, generation;
  `generateName`; Secrets' `stringData` folds into base64 `data`; a CRD registers its resource;
- PUT replaces; PATCH merges (JSON merge patch; strategic merge treated the same);
- a stale `metadata.resourceVersion` on PUT/PATCH gets 409 Conflict;
- `generation` increases only when something outside metadata/status changes;
- resources with a status subresource: the main endpoint ignores `status`, `/status` only
  changes `status`;
- lists carry a real collection resourceVersion; equality/existence label selectors apply;
- watches honour `resourceVersion` (replay from the event log, 410 Gone once compacted),
  `timeoutSeconds` (the stream ends), label selectors, and send a BOOKMARK before ending when
  `allowWatchBookmarks` is set.

Not emulated (validated statically in tests instead): schema validation/defaulting, strategic
merge list semantics, server-side apply, field selectors, garbage collection. Pinned: kmock==0.8.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import gzip
import importlib.resources
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import dicts as kmock_dicts
from kmock._internal import rendering

CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
SECRETS = kmock.resource("", "v1", "secrets")
NAMESPACES = kmock.resource("", "v1", "namespaces")
NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/([^/]+))?/?")
MERGE_PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json",
)


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    resource: kmock.resource
    type: str
    obj: dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that bumps `generation`: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def parse_label_selector(selector: str) -> list[tuple[str, str, str | None]]:
    """`a=b,c!=d,e,!f` -> [(key, op, value)] with op in =, !=, exists, !exists."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "==" in raw:
            key, value = raw.split("==", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif "=" in raw:
            key, value = raw.split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!exists", None))
        else:
            terms.append((raw, "exists", None))
    return terms


def matches_labels(obj: Mapping[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    for key, op, value in parse_label_selector(selector):
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
    return True


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@attrs.define(kw_only=True)
class RealisticEmulator(kmock.KubernetesEmulator):
    """A KubernetesEmulator with the API server semantics a controller depends on."""

    event_log_size: int = 10_000
    _rv: int = attrs.field(default=0, init=False)
    _events: list[WatchEvent] = attrs.field(factory=list, init=False)
    _compacted_below: int = attrs.field(default=0, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    # Watch streams that have sent their initial events and now wait for changes: a test that
    # needs a watch to be live (not replaying history) waits for this, not for a while.
    live_watches: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's load_bundled() uses the deprecated importlib.resources.read_binary; same file.
        bundled = importlib.resources.files("kmock._internal").joinpath("resources.json.gz")
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))

    # -- public helpers for tests ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def requests(self) -> list[rendering.Request]:
        """Every request served so far, in arrival order (kmock's own log)."""
        return list(self._requests)

    def compact(self, *, advance: bool = False) -> None:
        """Forget the event history, like etcd compaction: older watches get 410 Gone.

        `advance` also moves the resourceVersion on, as if writes happened whose events are gone
        with the history: a watcher that was up to date must now list again.
        """
        if advance:
            self._rv += 1
        self._compacted_below = self._rv + 1
        self._events.clear()

    async def close_watches(self) -> None:
        """End every open watch stream (as an API server does on shutdown)."""
        self._closing = True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser reads /api/v1/namespaces[/NAME] as a namespace prefix without a
        # resource (and fails on the bare collection), so Namespace objects cannot be created or
        # read: parse those two paths here, as the API server does.
        match = NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode(errors="replace"),
            resource=NAMESPACES,
            namespace=None,
            name=match.group(1),
        )
        self._requests.append(request)
        return await self._handle(request)

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        # kmock answers /api/v1 with groupVersion "/v1"; kubectl then knows no core kind.
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and payload.get("groupVersion") == "/v1":
            payload["groupVersion"] = "v1"
        return payload

    # -- request dispatch ------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is not None and not resource.plural and resource.version and request.name is None:
            # `/api/v1/` (trailing slash, as the client's get_api_resources asks) is discovery
            # too; kmock's own route for it only matches the path without the slash.
            bare = attrs.evolve(request, resource=kmock.resource(group=resource.group, version=resource.version))
            return self._json(200, await self._serve_version(bare))
        if resource is None or resource.plural is None:
            return await super()._handle(request)
        if self._changed is None:
            self._changed = asyncio.Condition()
        try:
            if resource not in self.resources:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({resource.plural})")
            if request.params.get("watch") in ("true", "1"):
                return await self._watch(request)
            method = request.method.value if request.method is not None else "GET"
            if request.name is None:
                if method == "GET":
                    return self._json(200, self._list(request))
                if method == "POST":
                    return self._json(201, await self._create(request))
                raise ApiError(405, "MethodNotAllowed", f"{method} on a collection is not supported")
            if method == "GET":
                return self._json(200, self._fetch(request))
            if method == "PUT":
                return self._json(200, await self._replace(request))
            if method == "PATCH":
                return self._json(200, await self._patch(request))
            if method == "DELETE":
                return self._json(200, await self._delete(request))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
        except ApiError as err:
            return self._json(err.code, self._status(err, request))

    # -- responses -------------------------------------------------------------------------------

    @staticmethod
    def _json(code: int, body: Mapping[str, Any]) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response(dict(body), status=code)

    @staticmethod
    def _status(err: ApiError, request: rendering.Request) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if request.name:
            details["name"] = request.name
        if request.resource is not None and request.resource.plural:
            details["kind"] = request.resource.plural
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": err.message,
            "reason": err.reason,
            "details": details,
            "code": err.code,
        }

    # -- storage helpers -------------------------------------------------------------------------

    def _key(self, request: rendering.Request, name: str | None = None) -> tuple[Any, ...]:
        return (request.resource, request.namespace, name if name is not None else request.name)

    def _stored(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def _has_status_subresource(self, resource: kmock.resource) -> bool:
        return "status" in self.resources[resource].subresources

    def _kind(self, resource: kmock.resource) -> str:
        return self.resources[resource].kind or resource.plural.capitalize()

    def _api_version(self, resource: kmock.resource) -> str:
        return f"{resource.group}/{resource.version}" if resource.group else resource.version

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, resource: kmock.resource, type_: str, obj: dict[str, Any]) -> None:
        assert self._changed is not None
        rv = int(obj["metadata"]["resourceVersion"])
        self._events.append(WatchEvent(rv, resource, type_, copy.deepcopy(obj)))
        if len(self._events) > self.event_log_size:
            dropped = self._events.pop(0)
            self._compacted_below = dropped.resource_version + 1
        async with self._changed:
            self._changed.notify_all()

    @staticmethod
    def _check_rv(stored: Mapping[str, Any], body: Mapping[str, Any], name: str) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != stored["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )

    @staticmethod
    def _fold_string_data(obj: dict[str, Any]) -> None:
        string_data = obj.pop("stringData", None)
        if string_data:
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            self.resources[kmock.resource(spec["group"], version["name"], names["plural"])] = (
                kmock.ResourceInfo(
                    kind=names.get("kind"),
                    singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                    shortnames=set(names.get("shortNames", [])),
                    subresources=set((version.get("subresources") or {}).keys()),
                )
            )

    # -- verbs -----------------------------------------------------------------------------------

    def _fetch(self, request: rendering.Request) -> dict[str, Any]:
        stored = self._stored(self._key(request))
        if stored is None:
            raise ApiError(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        if request.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", f"subresource {request.subresource} not served")
        return stored

    def _selected(self, request: rendering.Request) -> Iterator[dict[str, Any]]:
        selector = request.params.get("labelSelector")
        for (resource, namespace, _name), obj in list(self.objects.items()):
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if matches_labels(obj.raw, selector):
                yield copy.deepcopy(obj.raw)

    def _list(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        items = sorted(
            self._selected(request),
            key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
        )
        return {
            "apiVersion": self._api_version(request.resource),
            "kind": f"{self._kind(request.resource)}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _create(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        if request.namespace is not None:
            if meta.get("namespace") not in (None, request.namespace):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = request.namespace
        key = self._key(request, meta["name"])
        if self._stored(key) is not None:
            raise ApiError(409, "AlreadyExists", f'{request.resource.plural} "{meta["name"]}" already exists')
        if self._has_status_subresource(request.resource):
            body.pop("status", None)
        if request.resource == SECRETS:
            self._fold_string_data(body)
        for field in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta["resourceVersion"] = self._next_rv()
        body.setdefault("apiVersion", self._api_version(request.resource))
        body.setdefault("kind", self._kind(request.resource))
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        if request.resource == CRDS:
            self._register_crd(body)
        await self._emit(request.resource, "ADDED", body)
        return body

    def _merge_new_version(
        self,
        request: rendering.Request,
        stored: dict[str, Any],
        proposed: dict[str, Any],
    ) -> dict[str, Any]:
        """Apply the status-subresource split, keep immutable metadata, bump generation."""
        assert request.resource is not None
        if self._has_status_subresource(request.resource):
            if request.subresource == "status":
                proposed = {**stored, "status": proposed.get("status")}
                if proposed["status"] is None:
                    proposed.pop("status")
            else:
                proposed = {k: v for k, v in proposed.items() if k != "status"}
                if "status" in stored:
                    proposed["status"] = stored["status"]
                proposed_meta = proposed.get("metadata") or {}
                proposed["metadata"] = {**proposed_meta}
        if request.resource == SECRETS:
            self._fold_string_data(proposed)
        meta = proposed.setdefault("metadata", {})
        for field in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if field in stored["metadata"]:
                meta[field] = stored["metadata"][field]
            else:
                meta.pop(field, None)
        if _spec_part(proposed) != _spec_part(stored):
            meta["generation"] = int(stored["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        proposed.setdefault("apiVersion", stored.get("apiVersion"))
        proposed.setdefault("kind", stored.get("kind"))
        return proposed

    async def _store_update(self, request: rendering.Request, new: dict[str, Any]) -> dict[str, Any]:
        assert request.resource is not None
        key = self._key(request)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            await self._emit(request.resource, "DELETED", new)
            return new
        self.objects[key].create(new)
        await self._emit(request.resource, "MODIFIED", new)
        return new

    async def _replace(self, request: rendering.Request) -> dict[str, Any]:
        stored = self._fetch(request)
        body = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if body is None:
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        if (body.get("metadata") or {}).get("name") not in (None, request.name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        self._check_rv(stored, body, request.name or "")
        new = self._merge_new_version(request, stored, body)
        return await self._store_update(request, new)

    async def _patch(self, request: rendering.Request) -> dict[str, Any]:
        stored = self._fetch(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type not in MERGE_PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"the emulator does not support {content_type}")
        if not isinstance(request.data, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        self._check_rv(stored, request.data, request.name or "")
        patched = kmock_dicts.patch_dict(copy.deepcopy(stored), copy.deepcopy(request.data))
        new = self._merge_new_version(request, stored, patched)
        return await self._store_update(request, new)

    async def _delete(self, request: rendering.Request) -> dict[str, Any]:
        assert request.resource is not None
        stored = self._fetch(request)
        if stored["metadata"].get("finalizers"):
            if not stored["metadata"].get("deletionTimestamp"):
                stored["metadata"]["deletionTimestamp"] = _now()
                stored["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[self._key(request)].create(stored)
                await self._emit(request.resource, "MODIFIED", stored)
            return stored
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[self._key(request)].delete()
        await self._emit(request.resource, "DELETED", stored)
        return stored

    # -- watch -----------------------------------------------------------------------------------

    def _watch_matches(self, request: rendering.Request, event: WatchEvent) -> bool:
        meta = event.obj.get("metadata", {})
        return (
            event.resource == request.resource
            and (request.namespace is None or meta.get("namespace") == request.namespace)
            and (request.name is None or meta.get("name") == request.name)
            and matches_labels(event.obj, request.params.get("labelSelector"))
        )

    async def _watch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert self._changed is not None and request._raw_request is not None
        timeout = float(request.params.get("timeoutSeconds") or 1800)
        since_param = request.params.get("resourceVersion", "")
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"

        if since_param in ("", "0"):
            # "Start at most recent": synthetic ADDED for every current object, then live.
            initial = [{"type": "ADDED", "object": obj} for obj in self._selected(request)]
            last_sent = self._rv
        else:
            last_sent = int(since_param)
            if last_sent + 1 < self._compacted_below:
                await response.prepare(request._raw_request)
                gone = ApiError(410, "Expired", f"too old resource version: {last_sent} ({self._compacted_below})")
                await self._write_event(response, {"type": "ERROR", "object": self._status(gone, request)})
                await response.write_eof()
                return response
            initial = []
        await response.prepare(request._raw_request)
        for event in initial:
            await self._write_event(response, event)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.live_watches += 1
        try:
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while True:
                    if last_sent + 1 < self._compacted_below:
                        # Events this stream has not sent are gone (compacted away): like etcd, end
                        # the watch with 410 so the client lists again instead of skipping them.
                        gone = ApiError(410, "Expired", f"too old resource version: {last_sent} ({self._compacted_below})")
                        await self._write_event(response, {"type": "ERROR", "object": self._status(gone, request)})
                        await response.write_eof()
                        return response
                    for event in [e for e in self._events if e.resource_version > last_sent]:
                        last_sent = event.resource_version
                        if self._watch_matches(request, event):
                            await self._write_event(response, {"type": event.type, "object": event.obj})
                    remaining = deadline - loop.time()
                    if remaining <= 0 or self._closing:
                        break
                    async with self._changed:
                        if not any(e.resource_version > last_sent for e in self._events):
                            await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            self.live_watches -= 1
        if request.params.get("allowWatchBookmarks") in ("true", "1") and request.resource is not None:
            bookmark = {
                "apiVersion": self._api_version(request.resource),
                "kind": self._kind(request.resource),
                # Up to where this stream has delivered every event, not the newest version:
                # what a bookmark promises.
                "metadata": {"resourceVersion": str(last_sent)},
            }
            with contextlib.suppress(ConnectionResetError):
                await self._write_event(response, {"type": "BOOKMARK", "object": bookmark})
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    async def _write_event(response: aiohttp.web.StreamResponse, event: Mapping[str, Any]) -> None:
        await response.write(json.dumps(event).encode() + b"\n")


class EmulatorThread:
    """Runs a RealisticEmulator behind kmock's HTTP server on its own asyncio loop in a thread.

    The `kubernetes` client is synchronous; a dedicated loop keeps the emulator serving while the
    test's Trio loop (or the controller's worker threads) block on HTTP calls.
    """

    def __init__(self) -> None:
        self.emulator = RealisticEmulator()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            await self.emulator.close_watches()

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None or not self.url:
            raise RuntimeError("the kmock emulator did not start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_live_watches(self, count: int, within: float = 10.0) -> None:
        """Block (a sync test's thread) until `count` watch streams are live: past their initial
        events, waiting for changes. Polled: the count lives on the emulator's thread."""
        deadline = time.monotonic() + within
        while self.emulator.live_watches < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} live watch(es) expected, {self.emulator.live_watches} live")
            time.sleep(0.01)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a sync function on the emulator's loop (e.g. `emulator.compact`)."""
        assert self._loop is not None

        async def _call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_call(), self._loop).result(10)


def api_client(url: str, user_agent: str = "mcp-gateway-tests") -> Any:
    """A real `kubernetes` ApiClient pointed at the emulator."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    configuration.host = url
    # As the controller's own client (controller/main.py): one kept connection per watch.
    configuration.connection_pool_maxsize = 32
    client = kubernetes.client.ApiClient(configuration)
    client.user_agent = user_agent
    return client
