"""Lease leader election against the emulator, with each candidate's clock under test control."""

from __future__ import annotations

from typing import Any

import kubernetes

from mcp_gateway.controller.leader import LeaderElector, LeaseTiming


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def candidate(client: Any, identity: str, clock: Clock) -> LeaderElector:
    api = kubernetes.client.CoordinationV1Api(client)
    return LeaderElector(api, "mcp-system", "lease", identity, LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2), clock)


def test_holder_keeps_the_lease_until_it_expires_by_the_candidates_own_clock(client: Any) -> None:
    clock_a, clock_b = Clock(), Clock()
    a, b = candidate(client, "a", clock_a), candidate(client, "b", clock_b)
    assert a.try_acquire_or_renew()  # creates the Lease
    assert not b.try_acquire_or_renew()  # held, and b just started watching it
    clock_b.now += 14
    assert not b.try_acquire_or_renew()  # not yet a full lease duration without renewal
    assert a.try_acquire_or_renew()  # a renews: the record changes ...
    clock_b.now += 14
    assert not b.try_acquire_or_renew()  # ... so b's 15 s start again from when it saw that
    clock_b.now += 16
    assert b.try_acquire_or_renew()  # a stopped renewing: b takes over
    lease = kubernetes.client.CoordinationV1Api(client).read_namespaced_lease("lease", "mcp-system")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1
    assert not a.try_acquire_or_renew()  # a (back from a pause) sees b's fresh renewal


def test_two_candidates_racing_for_an_expired_lease_only_one_wins(client: Any) -> None:
    clocks = {name: Clock() for name in "abc"}
    a, b, c = (candidate(client, name, clocks[name]) for name in "abc")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    clocks["b"].now += 20
    clocks["c"].now += 20
    won = [b.try_acquire_or_renew(), c.try_acquire_or_renew()]
    assert won == [True, False]  # c read b's fresh renewal: not expired for c
    # And when the reads interleave, the API server's optimistic check decides (409 for the
    # stale writer): replace with the version c read before b's write.
    api = kubernetes.client.CoordinationV1Api(client)
    stale = api.read_namespaced_lease("lease", "mcp-system")
    assert b.try_acquire_or_renew()
    stale.spec.holder_identity = "c"
    try:
        api.replace_namespaced_lease("lease", "mcp-system", stale)
    except kubernetes.client.exceptions.ApiException as err:
        assert err.status == 409
    else:
        raise AssertionError("a stale Lease write was accepted")


def test_release_hands_over_at_once(client: Any) -> None:
    clock_a, clock_b = Clock(), Clock()
    a, b = candidate(client, "a", clock_a), candidate(client, "b", clock_b)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release_blocking()
    assert b.try_acquire_or_renew()  # no holder: no need to wait for expiry
