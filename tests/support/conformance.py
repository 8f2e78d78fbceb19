"""Run the pinned MCP conformance suite (server mode) and read what it found.

The suite is `@modelcontextprotocol/conformance` 0.1.16 under `.tools/` (installed by
`make node22`), run with the Node 22 from the same place (the system Node 20 cannot import it);
the 2026-07-28 scenarios come from a 0.2.0 alpha installed beside it as `conformance-next`.
Results are read from the per-scenario `checks.json` files the suite writes with `-o`, and
cross-checked against the `Total: X passed, Y failed` line it prints: a check passes when its
status is SUCCESS and fails when it is FAILURE (INFO and WARNING count as neither, as in the
suite's own summary).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from mcp_gateway.config import load_config
from tests.support.envoy import RunningEnvoy, running_envoy
from tests.support.processes import stop_process
from tests.support.redis import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / ".tools" / "node_modules"
NODE22 = TOOLS / "node" / "bin" / "node"
SUITE_PACKAGE = TOOLS / "@modelcontextprotocol" / "conformance"
SUITE_CLI = SUITE_PACKAGE / "dist" / "index.js"
SUITE_VERSION = "0.1.16"

# The server scenarios of suite 0.1.16, as `conformance list --server` names them. "active" is the
# suite's default selection; the two pending ones are excluded from it by the suite itself.
ACTIVE_SERVER_SCENARIOS: tuple[str, ...] = (
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
)
PENDING_SERVER_SCENARIOS: tuple[str, ...] = ("json-schema-2020-12", "server-sse-polling")
# SUCCESS checks the active scenarios produce when all pass (most have one; the SEP-1034 and
# SEP-1330 elicitation scenarios five each; multiple-streams and DNS rebinding two each).
ACTIVE_SERVER_CHECKS = 40

# The 2026-07-28 ("modern") scenarios: 0.1.16 has none, the 0.2.0 alphas do. tools/package.json
# installs one next to 0.1.16 under the npm alias `conformance-next`, so the active run above stays
# on the release it was measured with.
NEXT_SUITE_PACKAGE = TOOLS / "conformance-next"
NEXT_SUITE_CLI = NEXT_SUITE_PACKAGE / "dist" / "index.js"
NEXT_SUITE_VERSION = "0.2.0-alpha.12"
MODERN_REVISION = "2026-07-28"
# The server scenarios the 2026-07-28 requirement set scores (`list --server --requirements
# 2026-07-28`): they alone decide the suite's exit code.
MODERN_SCORED_SCENARIOS: tuple[str, ...] = (
    "server-stateless",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "tools-call-with-progress",
    "server-sse-multiple-streams",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "sep-2164-resource-not-found",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
    "caching",
    "input-required-result-basic-elicitation",
    "input-required-result-basic-sampling",
    "input-required-result-basic-list-roots",
    "input-required-result-request-state",
    "input-required-result-multiple-input-requests",
    "input-required-result-multi-round",
    "input-required-result-missing-input-response",
    "input-required-result-non-tool-request",
    "input-required-result-result-type",
    "input-required-result-unsupported-methods",
    "input-required-result-tampered-state",
    "input-required-result-capability-check",
    "input-required-result-ignore-extra-params",
    "input-required-result-validate-input",
)

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
_TOTAL_LINE = re.compile(r"^Total: (\d+) passed, (\d+) failed$", re.MULTILINE)
_SUITE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Check:
    id: str
    status: str  # SUCCESS | FAILURE | WARNING | INFO
    description: str
    error_message: str | None


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    checks: tuple[Check, ...]

    def count(self, status: str) -> int:
        return sum(1 for check in self.checks if check.status == status)

    @property
    def passed(self) -> int:
        return self.count("SUCCESS")

    @property
    def failed(self) -> int:
        return self.count("FAILURE")

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass(frozen=True)
class SuiteRun:
    url: str
    exit_code: int
    output: str
    scenarios: dict[str, ScenarioResult]

    @property
    def checks_passed(self) -> int:
        return sum(result.passed for result in self.scenarios.values())

    @property
    def checks_failed(self) -> int:
        return sum(result.failed for result in self.scenarios.values())

    @property
    def scenarios_passed(self) -> list[str]:
        return [name for name, result in self.scenarios.items() if result.ok]

    @property
    def reported_total(self) -> tuple[int, int] | None:
        """`Total: X passed, Y failed` as the suite printed it (suite runs only)."""
        match = _TOTAL_LINE.search(self.output)
        return (int(match[1]), int(match[2])) if match else None

    def failures(self) -> list[str]:
        """One line per failed check, for assertion messages."""
        return [
            f"{name}/{check.id}: {check.error_message or check.description}"
            for name, result in self.scenarios.items()
            for check in result.checks
            if check.status == "FAILURE"
        ]

    def flagged_checks(self) -> set[str]:
        """`<scenario>:<check-id>` (the baseline's entry format) of every check an
        `--expected-failures` baseline must list: conformance-next holds a WARNING (a SHOULD
        not met) to the baseline like a FAILURE."""
        return {
            f"{name}:{check.id}"
            for name, result in self.scenarios.items()
            for check in result.checks
            if check.status in ("FAILURE", "WARNING")
        }

    def warnings(self) -> list[str]:
        return [
            f"{name}/{check.id}: {check.error_message or check.description}"
            for name, result in self.scenarios.items()
            for check in result.checks
            if check.status == "WARNING"
        ]


def require_suite(package: Path = SUITE_PACKAGE, version: str = SUITE_VERSION) -> None:
    """Fail loudly (never skip) when the pinned suite or Node 22 is missing."""
    if not NODE22.exists() or not (package / "dist" / "index.js").exists():
        raise RuntimeError(f"conformance suite or Node 22 missing under {TOOLS}: run `make node22`")
    installed = json.loads((package / "package.json").read_text())["version"]
    if installed != version:
        raise RuntimeError(f"conformance suite {installed} installed, {version} pinned")


async def run_suite(url: str, *, suite: str = "active", scenario: str | None = None) -> SuiteRun:
    """Run the suite (or one scenario) against `url` and parse every scenario's checks."""
    require_suite()
    selection = ["--scenario", scenario] if scenario else ["--suite", suite]
    return await _run_cli(SUITE_CLI, url, selection)


async def run_requirements(
    url: str, revision: str = MODERN_REVISION, *, expected_failures: Path | None = None
) -> SuiteRun:
    """Run exactly what `revision` requires (conformance-next's `--requirements`), at that
    revision's wire; with `expected_failures`, a baseline of `<scenario>:<check-id>` entries the
    suite holds the run to (an unexpected failure or a stale entry is a non-zero exit)."""
    require_suite(NEXT_SUITE_PACKAGE, NEXT_SUITE_VERSION)
    selection = ["--requirements", revision]
    if expected_failures is not None:
        selection += ["--expected-failures", str(expected_failures)]
    return await _run_cli(NEXT_SUITE_CLI, url, selection)


async def _run_cli(cli: Path, url: str, selection: list[str]) -> SuiteRun:
    with tempfile.TemporaryDirectory(prefix="mcpgw-conformance-") as out_dir:
        command = [str(NODE22), str(cli), "server", "--url", url, *selection, "-o", out_dir]
        with trio.fail_after(_SUITE_TIMEOUT_SECONDS):
            completed = await trio.run_process(
                command,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=str(REPO_ROOT),
            )
        return SuiteRun(
            url=url,
            exit_code=completed.returncode,
            output=completed.stdout.decode(errors="replace"),
            scenarios=_read_results(Path(out_dir)),
        )


def _read_results(out_dir: Path) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    for entry in sorted(out_dir.iterdir()):
        match = _RESULT_DIR.match(entry.name)
        if match is None or not (entry / "checks.json").exists():
            continue
        raw = json.loads((entry / "checks.json").read_text())
        checks = tuple(
            Check(
                id=str(item["id"]),
                status=str(item["status"]),
                description=str(item.get("description", "")),
                error_message=item.get("errorMessage"),
            )
            for item in raw
        )
        results[match["scenario"]] = ScenarioResult(match["scenario"], checks)
    return results


@asynccontextmanager
async def running_fixture(transport: str = "http", *, modern: bool = False) -> AsyncIterator[str]:
    """Start our conformance fixture server as its own process; yield its URL
    (`http://…/mcp`, or `ws://…/mcp` for transport "websocket"). `modern`: the stateless
    2026-07-28 fixture of samples/conformance_2026.py instead (http only).

    It picks a free port itself and prints the URL as its only stdout line, so there is no
    probe-then-bind race. Its log (stderr) goes to a temporary file, shown if it fails to start.
    """
    with tempfile.TemporaryFile() as log:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "mcp_gateway.samples.conformance_fixture",
                "--port",
                "0",
                "--transport",
                transport,
                *(["--modern"] if modern else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            url = await _read_listening_url(process)
            if url is None:
                log.seek(0)
                raise RuntimeError(
                    "conformance fixture did not start:\n" + log.read().decode(errors="replace")
                )
            yield url
        finally:
            with trio.CancelScope(shield=True):
                await stop_process(process)


async def _read_listening_url(process: trio.Process) -> str | None:
    assert process.stdout is not None
    buffer = b""
    with trio.move_on_after(20):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                return None  # the process exited before it listened
            buffer += chunk
        match = re.search(rb"listening on ((?:http|ws)://\S+)", buffer)
        return match[1].decode() if match else None
    return None


# -- the whole gateway: `mcp-gateway serve` (broker + router) behind a real Envoy ---------------

GATEWAY_CLI = str(Path(sys.executable).with_name("mcp-gateway"))


@dataclass
class RunningGateway:
    url: str  # the client-facing endpoint: Envoy's /mcp
    envoy: RunningEnvoy
    broker_url: str
    admin_url: str  # /status, /metrics, /healthz, /readyz (gateway.admin_listen)
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@asynccontextmanager
async def running_gateway(
    servers: Sequence[Mapping[str, Any]], workdir: Path, **gateway: Any
) -> AsyncIterator[RunningGateway]:
    """`mcp-gateway serve --config FILE` as its own process, and Envoy in front of it.

    `servers` are config `servers:` entries; keyword arguments go to the `gateway:` section. The
    broker and router ports are chosen before the config is written (the CLI does not report
    them); Envoy binds port 0.
    """
    broker_port, router_port, admin_port = free_port(), free_port(), free_port()
    config_path = workdir / "gateway.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "servers": [dict(server) for server in servers],
                "gateway": {
                    "broker_listen": f"127.0.0.1:{broker_port}",
                    "router_listen": f"127.0.0.1:{router_port}",
                    "admin_listen": f"127.0.0.1:{admin_port}",
                    **gateway,
                },
            }
        )
    )
    config = load_config(str(config_path))
    log_path = workdir / "gateway.log"
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [GATEWAY_CLI, "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            broker_url = f"http://127.0.0.1:{broker_port}"
            admin_url = f"http://127.0.0.1:{admin_port}"
            await _wait_gateway_ready(process, admin_url, router_port, log_path)
            async with running_envoy(
                config, broker_port=broker_port, router_port=router_port, workdir=workdir
            ) as envoy:
                yield RunningGateway(envoy.url, envoy, broker_url, admin_url, log_path)
        finally:
            with trio.CancelScope(shield=True):
                await stop_process(process)


async def _wait_gateway_ready(
    process: trio.Process, admin_url: str, router_port: int, log_path: Path
) -> None:
    # Nothing to wait on but the answers: the broker's /readyz (upstreams discovered) and the
    # router's gRPC port accepting connections.
    async with httpx.AsyncClient(timeout=2) as client:
        with trio.move_on_after(30):
            while process.poll() is None:
                try:
                    ready = (await client.get(f"{admin_url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    ready = False
                if ready and await _accepts(router_port):
                    return
                await trio.sleep(0.05)
    log = await trio.Path(log_path).read_text(errors="replace")
    raise RuntimeError(f"mcp-gateway serve not ready (exit code {process.poll()}):\n{log[-4000:]}")


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


# -- npm @modelcontextprotocol/server-everything, on loopback ------------------------------------

EVERYTHING_ENTRY = TOOLS / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
# server-everything calls listen(PORT) with no host, i.e. on every interface. This preload (run
# with `node --require`) pins every listen() to 127.0.0.1 and reports the port actually bound.
_LOOPBACK_PRELOAD = """
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length && typeof args[0] === "object" && args[0] !== null) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (args.length && (typeof args[0] === "number" || typeof args[0] === "string")) {
    args = [args[0], "127.0.0.1", ...args.slice(1).filter((a) => typeof a === "function")];
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stdout.write(`MCPGW_LISTENING ${address.address}:${address.port}\\n`);
    }
  });
  return listen.apply(this, args);
};
"""


async def serve_everything(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run server-everything (Streamable HTTP) on a loopback ephemeral port until cancelled.

    `url = await nursery.start(serve_everything)`. Its stdout (a line per request) is drained
    for as long as it runs: Node writes to pipes synchronously and would stall on a full one.
    """
    require_suite()
    if not EVERYTHING_ENTRY.exists():
        raise RuntimeError(f"{EVERYTHING_ENTRY} missing: run `make node22`")
    with tempfile.TemporaryDirectory(prefix="mcpgw-everything-") as workdir:
        preload = Path(workdir) / "loopback.cjs"
        preload.write_text(_LOOPBACK_PRELOAD)
        process = await trio.lowlevel.open_process(
            [str(NODE22), "--require", str(preload), str(EVERYTHING_ENTRY), "streamableHttp"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "PORT": "0", "HOME": workdir},
        )
        try:
            assert process.stdout is not None
            buffer = b""
            with trio.fail_after(20):
                while (match := re.search(rb"MCPGW_LISTENING (\S+):(\d+)\n", buffer)) is None:
                    chunk = await process.stdout.receive_some(4096)
                    if not chunk:
                        raise RuntimeError("server-everything exited before listening")
                    buffer += chunk
            task_status.started(f"http://127.0.0.1:{int(match[2])}/mcp")
            async for _chunk in process.stdout:
                pass  # keep the pipe empty
            await trio.sleep_forever()  # stdout closed but the server may still run
        finally:
            with trio.CancelScope(shield=True):
                await stop_process(process)
