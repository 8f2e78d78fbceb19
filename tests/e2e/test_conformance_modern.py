"""The official MCP conformance suite's 2026-07-28 requirement set (conformance-next, a 0.2.0
alpha: 0.1.16 has no 2026-07-28 scenarios) through Envoy + the gateway, with the conformance
fixture federated under an empty prefix, the modern (stateless) fixture beside it under
`MODERN_PREFIX`, and `gateway.serve_discover` on (the scenarios speak 2026-07-28 only: without
discover there is nothing to find). The suite's multi-round-trip scenarios so run through both
of the gateway's paths: a legacy upstream's mid-call requests held as InputRequiredResult
rounds (sampling, roots, request state, tampered state, capabilities), and a modern upstream's
InputRequiredResult relayed with its state sealed (samples/conformance_2026.py says which).

What fails is listed, check by check with the reason, in conformance_2026_07_28_baseline.yaml,
and the suite itself holds the run to it (`--expected-failures`: exit 1 on a new failure or on
an entry that passes); the test also compares the failed checks with the baseline itself, so a
suite that stopped honouring it could not pass silently. Counts in README.md "Conformance".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcp_gateway.samples.conformance_2026 import MODERN_PREFIX
from tests.support.conformance import (
    MODERN_SCORED_SCENARIOS,
    run_requirements,
    running_fixture,
    running_gateway,
)

pytestmark = pytest.mark.integration

BASELINE = Path(__file__).with_name("conformance_2026_07_28_baseline.yaml")
# As README.md records them: the scored scenarios that pass (of 37), their checks passed and
# failed, and the checks of every scenario run (the unscored pending and extension ones too).
SCORED_PASSING = 37
SCORED_CHECKS = (118, 0)
CHECKS_PASSED = 163
CHECKS_FAILED = 29


def baseline() -> tuple[set[str], set[str]]:
    """(`scenario:check` entries, whole-scenario entries) of the baseline file."""
    entries = yaml.safe_load(BASELINE.read_text())["server"]
    return {e for e in entries if ":" in e}, {e for e in entries if ":" not in e}


async def test_the_2026_07_28_requirements_through_envoy_and_the_gateway(tmp_path: Path) -> None:
    servers = [{"name": "conformance", "prefix": ""}, {"name": "conformance-2026", "prefix": MODERN_PREFIX}]
    async with running_fixture() as fixture_url, running_fixture(modern=True) as modern_url, running_gateway(
        [{**servers[0], "url": fixture_url}, {**servers[1], "url": modern_url}], tmp_path, serve_discover=True
    ) as gateway:
        run = await run_requirements(gateway.url, expected_failures=BASELINE)

    checks, whole = baseline()
    failed = run.flagged_checks()
    # Exactly the baseline's checks fail (or warn), and the scenarios it names whole fail.
    assert {c for c in failed if c.split(":")[0] not in whole} == checks, run.failures()
    assert {c.split(":")[0] for c in failed if c.split(":")[0] in whole} == whole
    assert set(MODERN_SCORED_SCENARIOS) <= set(run.scenarios)
    scored_ok = [name for name in MODERN_SCORED_SCENARIOS if run.scenarios[name].ok]
    assert len(scored_ok) == SCORED_PASSING
    scored = [run.scenarios[name] for name in MODERN_SCORED_SCENARIOS]
    assert (sum(r.passed for r in scored), sum(r.failed for r in scored)) == SCORED_CHECKS
    # Fixed gateway bugs stay fixed: a modern client's resources/read carries its cache hints.
    for name in ("caching", "resources-read-text", "resources-read-binary", "resources-templates-read"):
        assert run.scenarios[name].ok, run.failures()
    assert (run.checks_passed, run.checks_failed) == (CHECKS_PASSED, CHECKS_FAILED)
    assert run.reported_total == (CHECKS_PASSED, CHECKS_FAILED)
    assert run.exit_code == 0, run.output[-3000:]
