"""The `mcp-gateway` front door: usage errors are argparse's precise messages, never tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from mcp_gateway.cli import CONFIG_ENV, SAMPLE_DESCRIPTIONS, build_parser

SCRIPT = Path(sys.executable).parent / "mcp-gateway"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_with_env(*args)


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "up", "controller", "sample-server", "check-config"):
        assert command in result.stdout


def test_usage_errors_exit_2_with_a_message() -> None:
    for args, fragment in [
        ((), "the following arguments are required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("check-config",), "check-config needs a FILE (or $MCP_GATEWAY_CONFIG)"),
    ]:
        result = run(*args)
        assert result.returncode == 2, args
        assert fragment in result.stderr
        assert "Traceback" not in result.stderr


def run_with_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", CONFIG_ENV)}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environment, **env},
    )


def test_version_is_the_installed_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mcp-gateway {version('mcp-gateway')}"


def test_every_option_of_every_command_has_help_text() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = {"mcp-gateway": parser, **commands.choices}
    for name, command in parsers.items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        assert command.description, name


def test_sample_server_help_lists_every_sample() -> None:
    from mcp_gateway.samples import SAMPLES

    assert tuple(SAMPLE_DESCRIPTIONS) == SAMPLES
    result = run("sample-server", "--help")
    assert result.returncode == 0
    for name in SAMPLES:
        assert f"\n  {name} " in result.stdout


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for command in ("serve", "up"):
        result = run(command, "--config", str(tmp_path / "nonexistent.yaml"))
        assert result.returncode == 2, command
        assert result.stderr == f"mcp-gateway {command}: {tmp_path / 'nonexistent.yaml'}: no such file\n"
        assert result.stdout == ""


def test_an_invalid_config_is_one_line_naming_the_first_problem_and_check_config(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  - name: a\n    url: ftp://x\n  - name: a\n    prefx: 1\n")
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mcp-gateway serve: {bad}: servers[0].url: scheme must be http or https")
    assert f"`mcp-gateway check-config {bad}` lists them" in line


def test_mcp_gateway_config_is_the_default_config() -> None:
    result = run_with_env("check-config", MCP_GATEWAY_CONFIG=str(EXAMPLES / "replicas.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLES / 'replicas.yaml'}: valid")
    result = run_with_env("serve", MCP_GATEWAY_CONFIG="/nonexistent/gateway.yaml")
    assert result.stderr == "mcp-gateway serve: /nonexistent/gateway.yaml: no such file\n"


def test_log_level_is_checked_in_the_environment_and_accepted_after_the_command() -> None:
    result = run_with_env("check-config", str(EXAMPLES / "config.yaml"), LOG_LEVEL="loud")
    assert result.returncode == 2
    assert "$LOG_LEVEL is 'loud'; use one of debug, info, warning, error" in result.stderr
    after = run_with_env("check-config", str(EXAMPLES / "config.yaml"), "--log-level", "DEBUG")
    assert after.returncode == 0, after.stderr


def _sample_server_log(*args: str, **env: str) -> list[dict[str, object]]:
    """Start the echo sample, wait for its ready line, stop it; its JSON log lines."""
    environment = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    process = subprocess.Popen(
        [str(SCRIPT), "sample-server", "echo", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environment, "MCP_GATEWAY_LOG_FORMAT": "json", **env},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("mcp-sample listening on http://127.0.0.1:")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    return [json.loads(line) for line in stderr.splitlines()]


def test_hypercorn_logs_through_structlog_at_the_level_of_the_environment() -> None:
    lines = _sample_server_log(LOG_LEVEL="info")
    (running,) = [line for line in lines if line["logger"] == "hypercorn.error"]
    assert str(running["event"]).startswith("Running on http://127.0.0.1:")
    assert running["level"] == "info" and "timestamp" in running


def test_log_level_after_the_command_beats_the_environment() -> None:
    lines = _sample_server_log("--log-level", "warning", LOG_LEVEL="debug")
    assert not [line for line in lines if line["level"] in ("debug", "info")]
