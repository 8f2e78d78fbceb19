"""The fault suite's figures, listed at the end of every run that collected them (`FIGURE ...`
lines are also printed as each test measures them, visible with `pytest -s`).

`make test` runs the suite on two pytest-xdist workers. The controller collects nothing, so
this directory's conftest is loaded only in the workers: the summary itself is the root
conftest's (tests/conftest.py), and a worker hands its figures over in `workeroutput`."""

from __future__ import annotations

import pytest

from tests.faults.harness import FIGURES


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["fault_figures"] = list(FIGURES)
