"""Unit tests' embedded ClickHouse keeps the rows they insert, whatever their dates."""

from __future__ import annotations

import pytest

from streams.warehouse import migrations
from tests.support.warehouse import migrate_without_ttl_merges


@pytest.fixture(autouse=True)
def _no_ttl_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "migrate", migrate_without_ttl_merges)
