"""The official MCP conformance suite's 2026-07-28 requirement set (conformance-next, a 0.2.0
alpha: 0.1.16 has no 2026-07-28 scenarios) through Envoy + the gateway, with the conformance
fixture federated under an empty prefix and `gateway.serve_discover` on (the scenarios speak
2026-07-28 only: without discover there is nothing to find).

What fails is listed, check by check with the reason, in conformance_2026_07_28_baseline.yaml,
and the suite itself holds the run to it (`--expected-failures`: exit 1 on a new failure or on
an entry that passes); the test also compares the failed checks with the baseline itself, so a
suite that stopped honouring it could not pass silently. Counts in README.md "Conformance".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
SCORED_PASSING = 26
SCORED_CHECKS = (95, 13)
CHECKS_PASSED = 128
CHECKS_FAILED = 50


def baseline() -> tuple[set[str], set[str]]:
    """(`scenario:check` entries, whole-scenario entries) of the baseline file."""
    entries = yaml.safe_load(BASELINE.read_text())["server"]
    return {e for e in entries if ":" in e}, {e for e in entries if ":" not in e}


async def test_the_2026_07_28_requirements_through_envoy_and_the_gateway(tmp_path: Path) -> None:
    async with running_fixture() as fixture_url, running_gateway(
        [{"name": "conformance", "prefix": "", "url": fixture_url}], tmp_path, serve_discover=True
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
