"""The fault suite's figures, listed at the end of every run that collected them (`FIGURE ...`
lines are also printed as each test measures them, visible with `pytest -s`)."""

from __future__ import annotations

from _pytest.terminal import TerminalReporter

from tests.faults.harness import FIGURES


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for name, text in FIGURES:
            terminalreporter.write_line(f"FIGURE {name}: {text}")
