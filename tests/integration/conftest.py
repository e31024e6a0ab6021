"""The integration tier: the real local stack, brought up once per test session.

The stack runs on its own ports and state directory (``.sluice-test/``) so it
never touches a developer's ``sluice up``. Every test gets fresh topics,
subjects and consumer groups (a uuid suffix), so tests never see each
other's records.
"""

from __future__ import annotations

import os

import pytest

from streams.settings import PROJECT_ROOT, Settings
from streams.stack import Stack

TEST_ENV = {
    "SLUICE_STACK__STATE_DIR": str(PROJECT_ROOT / ".sluice-test"),
    "SLUICE_STACK__KAFKA_PORT": "19092",
    "SLUICE_STACK__KAFKA_CONTROLLER_PORT": "19093",
    "SLUICE_STACK__REGISTRY_PORT": "18081",
    "SLUICE_STACK__REGISTRY_MANAGEMENT_PORT": "19081",
    "SLUICE_METRICS__PORT": "0",
}
for _name in ("SLUICE_KAFKA__BOOTSTRAP_SERVERS", "SLUICE_REGISTRY__URL"):
    os.environ.pop(_name, None)
os.environ.update(TEST_ENV)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder talks to real services."""
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Kafka and the Schema Registry, started once (reused if already up)."""
    settings = Settings()
    local = Stack(settings, only=["kafka", "registry"])
    local.up(print)
    yield settings
    if not os.environ.get("SLUICE_TEST_KEEP_STACK"):
        local.down(print)
