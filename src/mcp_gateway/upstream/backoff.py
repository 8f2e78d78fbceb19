"""Capped exponential backoff with jitter, so a flapping upstream is retried without a storm."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays base, 2·base, 4·base … up to `cap`, each drawn from [(1-jitter)·d, d].

    Jitter spreads the reconnects of many upstreams that failed together (a network blip) so
    they do not retry in lockstep.
    """

    base: float = 0.25
    # Near a minute (as `gateway.upstream_retry.max_seconds`): a server down for the night is
    # asked about once a minute, not every few seconds.
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        # The exponent stops growing once the cap is reached: an upstream down for days must
        # not overflow a float (base·2**1024).
        ceiling = min(self.cap, self.base * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return ceiling * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


# A failure repeated is not news: the first one in a row is logged at warning (the change of
# state), then the 2nd, 4th, 8th ... 64th, then every 64th (about hourly at a one-minute cap).
_LOG_EVERY_AT_MOST = 64


def worth_logging(failures_in_a_row: int) -> bool:
    """Whether the n-th failure in a row is logged at warning level (the rest go to debug)."""
    n = failures_in_a_row
    if n <= _LOG_EVERY_AT_MOST:
        return n > 0 and n & (n - 1) == 0
    return n % _LOG_EVERY_AT_MOST == 0
