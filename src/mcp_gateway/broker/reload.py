"""What the config watcher knows, for /status: the file, the last good load, the last problem."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReloadState:
    path: str | None = None
    loaded_at: float = field(default_factory=time.time)
    reloads: int = 0
    last_error: str | None = None  # the problems of the newest file, when it was refused
    last_error_at: float | None = None

    def accepted(self) -> None:
        self.loaded_at = time.time()
        self.reloads += 1
        self.last_error = None
        self.last_error_at = None

    def refused(self, problems: str) -> None:
        self.last_error = problems
        self.last_error_at = time.time()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "loadedAt": self.loaded_at,
            "reloads": self.reloads,
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at,
        }
