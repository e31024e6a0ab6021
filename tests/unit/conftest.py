"""Unit tests see no local stack, and their embedded ClickHouse keeps every row they insert."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.warehouse import migrations
from tests.support.warehouse import migrate_without_ttl_merges


@pytest.fixture(autouse=True)
def _no_ttl_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "migrate", migrate_without_ttl_merges)


@pytest.fixture(autouse=True)
def _no_local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty state directory, unless a test names its own.

    Settings pick up the Kafka credentials of a local stack (``sluice up``) found in
    the state directory; a developer's ``.sluice/`` must not change what unit tests see.
    """
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path / "no-local-stack"))
