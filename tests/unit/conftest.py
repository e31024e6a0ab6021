"""Fixtures shared by unit tests. The spaCy model loads once per session (about 2 s)."""

from __future__ import annotations

import pytest

from processors.guarding.pii import PresidioAnalyzer


@pytest.fixture(scope="session")
def analyzer() -> PresidioAnalyzer:
    return PresidioAnalyzer()
