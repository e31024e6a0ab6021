"""The integration tier: the real local stack, brought up once per test session.

The stack runs on its own ports and state directory (``.sluice-test/``) so it
never touches a developer's ``sluice up``. Every test gets fresh topics,
subjects and consumer groups (a uuid suffix), so tests never see each
other's records.

The stack's environment (``TEST_ENV``) is in ``os.environ`` only while this
folder's tests run (the processes they start inherit it); importing this file
changes nothing, so unit tests in the same session see the usual defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from streams.settings import PROJECT_ROOT, Settings
from streams.stack import Stack

# One port block per checkout (SLUICE_TEST_PORT_BASE, default 19000), so that
# several checkouts can run their suites on one machine.
_BASE = int(os.environ.get("SLUICE_TEST_PORT_BASE", "19000"))
TEST_ENV = {
    "SLUICE_STACK__STATE_DIR": str(PROJECT_ROOT / ".sluice-test"),
    "SLUICE_STACK__KAFKA_PORT": str(_BASE + 92),
    "SLUICE_STACK__KAFKA_CONTROLLER_PORT": str(_BASE + 93),
    "SLUICE_STACK__REGISTRY_PORT": str(_BASE + 81),
    "SLUICE_STACK__REGISTRY_MANAGEMENT_PORT": str(_BASE + 82),
    "SLUICE_STACK__TRITON_HTTP_PORT": str(_BASE + 0),
    "SLUICE_STACK__TRITON_GRPC_PORT": str(_BASE + 1),
    "SLUICE_STACK__TRITON_METRICS_PORT": str(_BASE + 2),
    # The Triton venv (torch, ~6 GB) is shared with the checkout's own stack: built once.
    "SLUICE_STACK__TRITON_VENV": os.environ.get(
        "SLUICE_TEST_TRITON_VENV", str(PROJECT_ROOT / ".sluice" / "venvs" / "triton")
    ),
    "SLUICE_STACK__CONNECT_PORT": str(_BASE + 83),
    "SLUICE_METRICS__PORT": "0",
    # Processors (`sluice run`) and the shared Connect worker act as the operator here, not
    # as their own principals (the default): every test makes a sandbox on the fly, with
    # its own topic and group prefixes, and its processors would be refused everything
    # until that sandbox's ACLs were applied and reached the broker; the one Connect worker
    # writes into every sandbox's raw topics. Applying (and removing) a full set of bindings
    # per test would slow every test and test the ACLs everywhere but nowhere in
    # particular. Least privilege is proven where it is the subject:
    # test_processor_principals.py applies a sandbox's ACLs and runs processors under
    # their own principals (SLUICE_STACK__PROCESSOR_PRINCIPALS=true for those processes).
    "SLUICE_STACK__PROCESSOR_PRINCIPALS": "false",
}
#: Client addresses and Kafka credentials a developer may have set: the stack decides them
#: instead (every client of the tests acts as the stack's operator, sluice-operator).
CLEARED = (
    "SLUICE_KAFKA__BOOTSTRAP_SERVERS",
    "SLUICE_KAFKA__OPTIONS",
    "SLUICE_KAFKA__SASL_PASSWORD",
    "SLUICE_REGISTRY__URL",
    "SLUICE_CONNECT__URL",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder talks to real services."""
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="package", autouse=True)
def stack_environment() -> Iterator[None]:
    """The stack's environment while this folder's tests run; the previous one afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name in CLEARED:
            patch.delenv(name, raising=False)
        for name, value in TEST_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="package")
def stack(stack_environment: None) -> Iterator[Settings]:
    """Kafka and the Schema Registry, started once (reused if already up).

    The settings are read after ``up``: a first ``up`` makes the Kafka credentials
    that the settings then pick up (the operator's).
    """
    local = Stack(Settings(), only=["kafka", "registry"])
    local.up(print)
    settings = Settings()
    yield settings
    # A test that traced through the SDK left a Kafka span exporter in this process: flush
    # and close it while the broker is still up, not at interpreter exit.
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    if not os.environ.get("SLUICE_TEST_KEEP_STACK"):
        local.down(print)


@pytest.fixture(scope="package")
def triton(stack: Settings) -> Iterator[Settings]:
    """Triton serving the platform's models, started once (the first time builds its venv)."""
    local = Stack(stack, only=["triton"])
    local.up(print)
    yield stack
    if not os.environ.get("SLUICE_TEST_KEEP_STACK"):
        local.down(print)


@pytest.fixture(scope="package")
def connect_worker(stack: Settings) -> Iterator[Settings]:
    """The Kafka Connect worker on the session's stack (started on first use)."""
    worker = Stack(stack, only=["connect"])
    worker.up(print)
    yield stack
    if not os.environ.get("SLUICE_TEST_KEEP_STACK"):
        worker.down(print)
