"""Input limits, checked before any expensive work."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH_CEILING = 256


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1_048_576
    # Containers nested inside each other; the top-level object counts as depth 1. At most
    # MAX_DEPTH_CEILING, which keeps the C decoder far from Python's recursion limit.
    max_depth: int = 64
    max_batch: int = 100
    # Length in code points of any decoded string, object keys included.
    max_string_length: int = 1_048_576

    def __post_init__(self) -> None:
        for field in ("max_body_bytes", "max_depth", "max_batch", "max_string_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"Limits.{field} must be at least 1")
        if self.max_depth > MAX_DEPTH_CEILING:
            raise ValueError(f"Limits.max_depth must be at most {MAX_DEPTH_CEILING}")
