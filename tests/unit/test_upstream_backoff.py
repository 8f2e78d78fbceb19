import random

from mcp_gateway.upstream.backoff import Backoff


def test_delays_double_until_the_cap_and_stay_within_the_jitter_band() -> None:
    backoff = Backoff(base=0.25, cap=3.0, factor=2.0, jitter=0.5, rng=random.Random(7))
    ceilings = [0.25, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling * 0.5 <= delay <= ceiling


def test_jitter_spreads_upstreams_that_failed_together() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=1.0, cap=60.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_an_upstream_down_for_days_keeps_the_capped_delay() -> None:
    backoff = Backoff(base=0.25, cap=3.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(100_000)]
    assert delays[-1] == 3.0
