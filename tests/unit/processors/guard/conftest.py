"""Fixtures of the guard's unit tests: the analyzer (spaCy loads once, about 2 s) and engines."""

from __future__ import annotations

import pytest

from processors.guard.engine import GuardEngine
from processors.guard.hashing import TenantHasher
from processors.guard.injection import ExemplarSet, InjectionScorer, PatternSet
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Policy
from tests.support.guard import GUARD_DIR, NOW, SECRET, EngineFactory, make_policy, unit_key_ids


@pytest.fixture(scope="session")
def analyzer() -> PresidioAnalyzer:
    return PresidioAnalyzer()


@pytest.fixture(scope="session")
def make_engine() -> EngineFactory:
    """Builds a guard engine: ``make_engine(analyzer, policy, embedder=..., timeout=...)``.

    The policy defaults to ``make_policy()``; tenants are hashed with ``SECRET``,
    injections scored with the shipped patterns and exemplars (and ``embedder``,
    if any), and every verdict is checked at ``NOW``.
    """

    def build(
        analyzer: object,
        policy: Policy | None = None,
        *,
        embedder: object = None,
        timeout: float = 30.0,
    ) -> GuardEngine:
        scorer = InjectionScorer(
            PatternSet.load(GUARD_DIR / "injection_patterns.yaml"),
            ExemplarSet.load(GUARD_DIR / "injection_exemplars.yaml"),
            embedder,  # type: ignore[arg-type]
        )
        return GuardEngine(
            policy or make_policy(),
            analyzer,  # type: ignore[arg-type]
            TenantHasher(SECRET, unit_key_ids),
            scorer,
            analyzer_timeout_s=timeout,
            clock=lambda: NOW,
        )

    return build
