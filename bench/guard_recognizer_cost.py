"""What guard's script-name, detect-secrets, private-key and encoded-token recognizers cost.

Analyses the PII corpus (repeated to ``--texts`` texts) with the full registry and with
the registry less those recognizers, in the same process and on the same spaCy engine,
alternating the two a few times; prints the best time of each and their ratio, with and
without NER (a tenant whose policy has no PERSON).

    PYTHONPATH=. python bench/guard_recognizer_cost.py [--texts 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity

ROOT = Path(__file__).resolve().parents[1]
ADDED = frozenset(
    {
        "LowerCaseNameRecognizer",
        "FoldedNameRecognizer",
        "ScriptNameRecognizer",
        "DetectSecretsRecognizer",
        "StatedSecretRecognizer",
        "PemBlockRecognizer",
        "EncodedTokenRecognizer",
    }
)


def corpus(size: int) -> list[str]:
    """The PII corpus's texts, repeated to ``size``."""
    lines = (ROOT / "tests/data/pii_corpus.jsonl").read_text("utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line]
    return (texts * (size // len(texts) + 1))[:size]


def main() -> None:
    """Print seconds per configuration and the ratio of the full registry to the smaller one."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    texts = corpus(args.texts)
    full = PresidioAnalyzer()
    without = PresidioAnalyzer(full.nlp_engine)
    registry = without.engine.registry
    registry.recognizers = [r for r in registry.recognizers if r.name not in ADDED]
    full.analyze_batch(texts[:20], set(Entity), 0.4)  # warm spaCy and the caches
    for label, entities in (
        ("all entities", set(Entity)),
        ("without PERSON", set(Entity) - {Entity.PERSON}),
    ):
        best = {"before": float("inf"), "after": float("inf")}
        for _ in range(args.rounds):
            for name, analyzer in (("before", without), ("after", full)):
                started = time.perf_counter()
                analyzer.analyze_batch(texts, entities, 0.4)
                best[name] = min(best[name], time.perf_counter() - started)
        per_text = {k: v / len(texts) * 1000 for k, v in best.items()}
        print(
            f"{label:15s} before {per_text['before']:.2f} ms/text, "
            f"after {per_text['after']:.2f} ms/text, ratio {best['after'] / best['before']:.2f}"
        )


if __name__ == "__main__":
    main()
