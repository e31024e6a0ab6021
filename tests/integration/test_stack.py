"""`sluice up/status/down` on a second, private stack (the registry alone: it starts in seconds)."""

from __future__ import annotations

import os
import signal

import pytest

from streams.settings import Settings, StackSettings
from streams.stack import Stack
from tests.support.world import wait_for


@pytest.fixture
def private(tmp_path, stack) -> Settings:  # `stack` first: the shared download cache exists
    shared = stack.stack.root / "dist"
    state = tmp_path / "state"
    (state).mkdir()
    (state / "dist").symlink_to(shared)
    port = stack.stack.registry_port + 4  # a free pair inside the session stack's block
    return Settings(
        stack=StackSettings(state_dir=state, registry_port=port, registry_management_port=port + 1)
    )


def test_up_status_down_lifecycle(private: Settings):
    stack = Stack(private, only=["registry"])
    messages: list[str] = []
    stack.up(messages.append)
    assert any("healthy" in m for m in messages)
    [status] = stack.status()
    assert status.state == "healthy"
    assert status.address.endswith(f":{private.stack.registry_port}/apis/ccompat/v7")
    pid = status.pid

    messages.clear()
    stack.up(messages.append)
    assert any("already running" in m for m in messages), "a second up is a no-op"
    assert stack.status()[0].pid == pid

    os.kill(pid, signal.SIGKILL)
    process = stack.components[0].process
    wait_for(lambda: process.pid() is None, 10, "the registry to die")
    [dead] = stack.status()
    assert dead.state == "dead"
    assert dead.detail, "a dead component shows the tail of its log"

    stack.up(messages.append)
    assert stack.status()[0].state == "healthy", "up restarts a dead component"
    stack.down(messages.append)
    assert stack.status()[0].state == "stopped"
    assert (private.stack.root / "data" / "registry").exists(), "down keeps data"
    stack.down(messages.append, purge=True)
    assert not (private.stack.root / "data").exists()
