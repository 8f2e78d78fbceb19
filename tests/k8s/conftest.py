from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.support.kmock_emulator import EmulatorThread, api_client


@pytest.fixture
def k8s() -> Iterator[EmulatorThread]:
    """A running RealisticEmulator (kmock) on its own loop; stopped after the test."""
    with EmulatorThread() as emulator_thread:
        yield emulator_thread


@pytest.fixture
def client(k8s: EmulatorThread) -> Iterator[Any]:
    """The real `kubernetes` ApiClient, as the tests' own user (not the controller)."""
    api = api_client(k8s.url)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def core(client: Any) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


@pytest.fixture
def custom(client: Any) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)
