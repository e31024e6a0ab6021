"""The guard engine: PII redaction and prompt-injection scoring, without Kafka.

The guard processor (``processors/guard.py``, to come) wires it to topics:
``inspect_batch`` for prompts on ``inference.requests``, ``redact_batch`` for
model outputs on ``inference.responses``. Everything here is importable and
testable without a broker or a Triton server.
"""

from processors.guard.embedder import Embedder, EmbedderError, TritonEmbedder
from processors.guard.engine import GuardEngine, GuardItem, Inspection, items_for
from processors.guard.policy import Action, Entity, Policy, PolicyError, TenantPolicy
from processors.guard.settings import GuardSettings

__all__ = [
    "Action",
    "Embedder",
    "EmbedderError",
    "Entity",
    "GuardEngine",
    "GuardItem",
    "GuardSettings",
    "Inspection",
    "Policy",
    "PolicyError",
    "TenantPolicy",
    "TritonEmbedder",
    "items_for",
]
