"""Leader election on a coordination.k8s.io/v1 Lease, so two replicas never both write.

The algorithm is client-go's: a candidate takes the Lease only when the holder has not renewed
it for a full lease duration *as observed by the candidate's own clock* (no clock comparison
across machines), and every write is a PUT carrying the resourceVersion it read, so two
candidates racing for an expired Lease cannot both win: the API server answers 409 to the
second. The leader renews every `retry_period`; if it cannot renew within `renew_deadline`
(shorter than the lease duration) it steps down before anyone else may take over.

`kubernetes.leaderelection` is not used: its loop blocks its own thread and calls back from
there, outside our nursery, and it has no way to release the Lease on shutdown.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes
import trio
from kubernetes.client.exceptions import ApiException

from mcp_gateway.logs import get_logger

log = get_logger(__name__)


@dataclass
class LeaseTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Holds or waits for the Lease `namespace/name`; `is_leader` is true only while held."""

    def __init__(
        self,
        api: kubernetes.client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or LeaseTiming()
        self._clock = clock
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self.is_leader = False
        self._changes_send, self.changes = trio.open_memory_channel[bool](16)

    # -- one attempt (blocking; runs in a worker thread) -----------------------------------------

    def try_acquire_or_renew(self) -> bool:
        now = datetime.datetime.now(tz=datetime.UTC)
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=10)
        except ApiException as err:
            if err.status != 404:
                raise
            return self._create(now)
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        held_by_other = bool(spec.holder_identity) and spec.holder_identity != self.identity
        duration = spec.lease_duration_seconds or self.timing.lease_duration
        if held_by_other and self._clock() - self._observed_at < duration:
            return False
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.timing.lease_duration)
        lease.spec = spec
        try:
            self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=10)
        except ApiException as err:
            if err.status == 409:  # someone wrote the Lease since we read it
                return False
            raise
        return True

    def _create(self, now: datetime.datetime) -> bool:
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.timing.lease_duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._api.create_namespaced_lease(self.namespace, body, _request_timeout=10)
        except ApiException as err:
            if err.status == 409:  # another candidate created it first
                return False
            raise
        return True

    def release_blocking(self) -> None:
        """Give the Lease up on shutdown so a standby takes over at once, not after expiry."""
        lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)

    # -- the loop --------------------------------------------------------------------------------

    async def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("leadership changed", leader=leader, identity=self.identity, lease=f"{self.namespace}/{self.name}")
            await self._changes_send.send(leader)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                try:
                    held = await trio.to_thread.run_sync(self.try_acquire_or_renew)
                except Exception as err:  # API down: we cannot prove we still hold the Lease
                    log.warning("lease renewal failed", error=type(err).__name__, identity=self.identity)
                    held = False
                if held:
                    self._last_renew = self._clock()
                    await self._set_leader(True)
                elif self.is_leader and (
                    self._clock() - self._last_renew >= self.timing.renew_deadline
                    or (self._observed is not None and self._observed[0] not in (None, self.identity))
                ):
                    await self._set_leader(False)
                await trio.sleep(self.timing.retry_period)
        finally:
            was_leader = self.is_leader
            self.is_leader = False
            if was_leader:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 5) as cleanup:
                    try:
                        await trio.to_thread.run_sync(self.release_blocking)
                    except Exception as err:
                        log.warning("lease release failed", error=type(err).__name__)
                if cleanup.cancelled_caught:
                    log.warning("lease release timed out")
