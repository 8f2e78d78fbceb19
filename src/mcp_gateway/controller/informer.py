"""List-then-watch of one resource, in a worker thread, feeding a Trio channel.

The `kubernetes` client blocks, so each watch runs in `trio.to_thread` inside the controller's
nursery. The thread lists (which gives a collection resourceVersion), then watches from that
version with a server-side timeout, resuming from the last version it saw; a 410 Gone or any
error means a fresh list. Every list is delivered whole (`Relisted`), so a delete that happened
while the watch was down still disappears from the cache.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import trio
from kubernetes.client.exceptions import ApiException

from mcp_gateway.logs import get_logger

log = get_logger(__name__)


class _Stopped(Exception):
    """The Trio side is gone or asked the thread to stop."""


@dataclass(frozen=True)
class Relisted:
    kind: str
    objects: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Changed:
    kind: str
    event: str  # ADDED | MODIFIED | DELETED
    obj: Mapping[str, Any]


InformerEvent = Relisted | Changed


@dataclass(frozen=True)
class WatchSpec:
    """One list/watch: `list_fn(*args, **kwargs)` is a `kubernetes` client list method."""

    kind: str
    list_fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    label_selector: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class WatchTiming:
    timeout_seconds: int = 300  # server-side end of each watch; then resume from the last version
    retry_seconds: float = 2.0  # after an error, before listing again


def _list_raw(spec: WatchSpec) -> tuple[list[Mapping[str, Any]], str]:
    kwargs: dict[str, Any] = dict(spec.extra)
    if spec.label_selector:
        kwargs["label_selector"] = spec.label_selector
    response = spec.list_fn(*spec.args, _preload_content=False, _request_timeout=30, **kwargs)
    try:
        body = json.loads(response.data)
    finally:
        response.release_conn()
    items = [item for item in body.get("items") or [] if isinstance(item, Mapping)]
    return items, str((body.get("metadata") or {}).get("resourceVersion") or "")


def watch_blocking(
    spec: WatchSpec,
    deliver: Callable[[InformerEvent], None],
    stop: threading.Event,
    timing: WatchTiming,
) -> None:
    """Run until `stop` is set. `deliver` hands an event to the Trio side (it may block)."""
    while not stop.is_set():
        try:
            items, version = _list_raw(spec)
            deliver(Relisted(spec.kind, tuple(items)))
            while not stop.is_set():
                version = _watch_once(spec, version, deliver, stop, timing)
        except ApiException as err:
            if err.status != 410:
                log.warning("watch failed; listing again", kind=spec.kind, status=err.status, reason=err.reason)
                stop.wait(timing.retry_seconds)
        except (_Stopped, trio.RunFinishedError, trio.ClosedResourceError, trio.BrokenResourceError):
            return
        except Exception as err:  # a thread must not die silently: log, back off, list again
            log.warning("watch failed; listing again", kind=spec.kind, error=type(err).__name__, detail=str(err)[:200])
            stop.wait(timing.retry_seconds)


def _watch_once(
    spec: WatchSpec,
    version: str,
    deliver: Callable[[InformerEvent], None],
    stop: threading.Event,
    timing: WatchTiming,
) -> str:
    """One server-side-bounded watch from `version`; returns the version to resume from."""
    kwargs: dict[str, Any] = dict(spec.extra)
    if spec.label_selector:
        kwargs["label_selector"] = spec.label_selector
    watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    stream = watcher.stream(  # type: ignore[no-untyped-call]
        spec.list_fn,
        *spec.args,
        resource_version=version,
        timeout_seconds=timing.timeout_seconds,
        allow_watch_bookmarks=True,
        _request_timeout=(10, timing.timeout_seconds + 10),
        **kwargs,
    )
    for event in stream:
        raw = event.get("raw_object")
        if not isinstance(raw, Mapping):
            continue
        new_version = (raw.get("metadata") or {}).get("resourceVersion")
        if new_version:
            version = str(new_version)
        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            deliver(Changed(spec.kind, str(event["type"]), raw))
        if stop.is_set():
            watcher.stop()  # type: ignore[no-untyped-call]
            break
    return version


async def run_informer(
    spec: WatchSpec,
    send: trio.MemorySendChannel[InformerEvent],
    timing: WatchTiming,
) -> None:
    """The Trio side: run the blocking watch in a thread until this task is cancelled.

    Cancellation abandons the thread (it cannot be interrupted mid-read) and tells it to stop;
    it exits at its next event or at the server-side timeout, whichever comes first.
    """
    stop = threading.Event()
    token = trio.lowlevel.current_trio_token()

    def deliver(event: InformerEvent) -> None:
        if stop.is_set():
            raise _Stopped
        try:
            trio.from_thread.run(send.send, event, trio_token=token)
        except trio.Cancelled:
            raise _Stopped from None

    try:
        await trio.to_thread.run_sync(
            watch_blocking, spec, deliver, stop, timing, abandon_on_cancel=True
        )
    finally:
        stop.set()
