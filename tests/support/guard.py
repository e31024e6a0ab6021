"""Test doubles and data for the guard unit tests (no Kafka, no Triton)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from processors.guard.embedder import EmbedderError
from processors.guard.engine import GuardEngine
from processors.guard.pii import Detection
from processors.guard.policy import Entity, Policy
from processors.guard.replay import SeenIds

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
GUARD_DIR = ROOT / "schemas" / "guard"
SECRET = "unit-test-secret-0123456789abcdef"
#: The engines' clock: every verdict is checked at this moment.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def read_jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text("utf-8").splitlines() if line]


class FakeEmbedder:
    """Bag-of-words vectors hashed into 384 dimensions: equal texts get cosine 1.

    Unit tests only. Integration tests use the real Triton model.
    """

    dimension = 384

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dimension] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class FailingEmbedder:
    dimension = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise EmbedderError("Triton at 127.0.0.1:8001 is down")


class ExplodingAnalyzer:
    """An analyzer that crashes on every batch (and would leak its input if logged)."""

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        raise RuntimeError("spaCy crashed while reading Maria Gonzalez")


def make_policy(**entities: str) -> Policy:
    """Policy ``test-7``: every entity tagged unless ``entities`` say otherwise.

    Tenant ``flagger`` flags injections instead of blocking them; tenant
    ``nonames`` does not look for people's names.
    """
    rules = {e.value: "tag" for e in Entity}
    rules.update(entities)
    return Policy.from_mapping(
        {
            "version": "test-7",
            "default": {
                "pii_score_threshold": 0.4,
                "entities": rules,
                "injection": {"threshold": 0.7, "action": "block"},
            },
            "tenants": {
                "flagger": {"injection": {"action": "flag"}},
                "nonames": {"entities": {"PERSON": "off"}},
            },
        }
    )


class EngineFactory(Protocol):
    """The ``make_engine`` fixture: a guard engine over ``analyzer`` at the clock ``NOW``."""

    def __call__(
        self,
        analyzer: object,
        policy: Policy | None = None,
        *,
        embedder: object = None,
        timeout: float = 30.0,
    ) -> GuardEngine: ...


def unit_key_ids(tenant: str) -> str:
    """A fixed pseudonym key id per tenant, for engines built without a tenant registry.

    Guard takes these from the registry (random, made at registration); unit tests of
    redaction only need each tenant to have its own.
    """
    return hashlib.sha256(b"unit-test-pseudonym-key-id\x00" + tenant.encode()).hexdigest()[:32]


class MemoryView:
    """A request-id view without Kafka: what guard decided, held in a ``SeenIds``.

    ``ready`` and ``error`` play the consumer's states (catching up, dead) for the
    gate's fail-closed paths; ``remembered`` lists what the gate handed over.
    """

    def __init__(self, *, window_s: float = 3600.0, ready: bool = True) -> None:
        self.ids = SeenIds(window_s=window_s, max_per_tenant=1000, max_total=10_000)
        self.ready = ready
        self.error: BaseException | None = None
        self.closed = False
        self.remembered: list[tuple[tuple[str, str], int]] = []

    def wait_ready(self, timeout: float) -> bool:
        return self.ready

    def first_seen(self, key: tuple[str, str], now: datetime) -> int | None:
        return self.ids.first_seen(key, int(now.timestamp() * 1000))

    def remember(self, keys: Iterable[tuple[tuple[str, str], int]]) -> None:
        for key, at in keys:
            self.remembered.append((key, at))
            self.ids.add(key, at)

    def close(self) -> None:
        self.closed = True
