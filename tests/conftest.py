import os
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

from tests.faults.harness import FIGURES

# CI runs every property with at least 500 examples; `dev` keeps local runs quick.
settings.register_profile(
    "ci", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: the fault figures a worker measured (tests/faults/conftest.py)."""
    FIGURES.extend(tuple(figure) for figure in getattr(node, "workeroutput", {}).get("fault_figures", []))


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    # Only where the run is summarised: the controller, or a run without workers.
    if FIGURES and not hasattr(terminalreporter.config, "workeroutput"):
        terminalreporter.section("fault suite figures")
        for name, text in FIGURES:
            terminalreporter.write_line(f"FIGURE {name}: {text}")
