"""Config problems: each with its dotted path and, when known, its line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config. `path` is dotted (`servers[2].prefix`); "" = the file.
    `line` (1-based) is where that path is in the YAML text, when it is there at all."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot be used, with every problem found (never just the first)."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(
            f"{source}: {len(self.problems)} problem(s):\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )
