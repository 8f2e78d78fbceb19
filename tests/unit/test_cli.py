"""The `mcp-gateway` front door: usage errors are argparse's precise messages, never tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "mcp-gateway"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "up", "controller", "sample-server", "check-config"):
        assert command in result.stdout


def test_usage_errors_exit_2_with_a_message() -> None:
    for args, fragment in [
        ((), "the following arguments are required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("check-config",), "the following arguments are required: file"),
    ]:
        result = run(*args)
        assert result.returncode == 2, args
        assert fragment in result.stderr
        assert "Traceback" not in result.stderr
