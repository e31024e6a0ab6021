"""Precision, recall and F1 of guard's prompt-injection scoring on a labelled prompt set.

Lives in bench/ rather than processors/: it measures the engine against data
and prints numbers, like the benchmarks; processors/ holds only what the
runner executes.

    .venv/bin/python bench/guard_eval.py --embedder none
    .venv/bin/python bench/guard_eval.py --embedder triton --triton-url 127.0.0.1:8001

``--embedder none`` scores with the patterns only; ``triton`` adds similarity
to the exemplars, with embeddings from the platform's Triton ``minilm`` model.
The default threshold is the ``default`` policy's injection threshold.

``--split dev`` keeps the odd-numbered prompts, ``--split test`` the even ones.
The patterns were revised by looking at errors on ``dev`` only; ``test``
numbers are the ones to quote (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processors.guard.embedder import Embedder, TritonEmbedder  # noqa: E402
from processors.guard.injection import (  # noqa: E402
    ExemplarSet,
    InjectionScore,
    InjectionScorer,
    PatternSet,
)
from processors.guard.policy import Policy  # noqa: E402
from processors.guard.settings import GuardSettings  # noqa: E402

DATA = ROOT / "tests" / "data" / "injection_eval.jsonl"
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Metrics:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def metrics(labels: list[bool], scores: list[float], threshold: float) -> Metrics:
    """Confusion counts with 'attack' as the positive class."""
    predicted = [s >= threshold and s > 0 for s in scores]
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    fn = sum(y and not p for p, y in zip(predicted, labels, strict=True))
    return Metrics(tp, fp, fn, len(labels) - tp - fp - fn)


def in_split(row_id: str, split: str) -> bool:
    """Dev holds odd-numbered ids (att-001, ben-003, ...), test the even ones."""
    if split == "all":
        return True
    odd = int(row_id.rsplit("-", 1)[1]) % 2 == 1
    return odd if split == "dev" else not odd


def load(path: Path) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    bad = [r["id"] for r in rows if r["label"] not in ("attack", "benign")]
    if bad:
        raise SystemExit(f"{path}: rows with a label other than attack/benign: {bad}")
    return rows


def build_scorer(args: argparse.Namespace, settings: GuardSettings) -> InjectionScorer:
    embedder: Embedder | None = None
    if args.embedder == "triton":
        embedder = TritonEmbedder(
            args.triton_url, args.triton_model, timeout_s=settings.triton_timeout_s
        )
    return InjectionScorer(
        PatternSet.load(settings.injection_patterns_path),
        ExemplarSet.load(settings.injection_exemplars_path),
        embedder,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embedder", choices=["none", "triton"], default="none")
    parser.add_argument("--triton-url", default="127.0.0.1:8001")
    parser.add_argument("--triton-model", default="minilm")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="default: the default policy's injection threshold",
    )
    parser.add_argument(
        "--split",
        choices=["all", "dev", "test"],
        default="all",
        help="dev: odd-numbered prompts (used to revise patterns); test: even",
    )
    parser.add_argument(
        "--show-errors", action="store_true", help="print the misclassified prompts"
    )
    args = parser.parse_args(argv)

    settings = GuardSettings()
    threshold = args.threshold
    if threshold is None:
        threshold = Policy.load(settings.policy_path).for_tenant("default").injection.threshold
    rows = [r for r in load(args.data) if in_split(r["id"], args.split)]
    scorer = build_scorer(args, settings)
    started = time.perf_counter()
    scored: list[InjectionScore] = scorer.score_batch([r["text"] for r in rows])
    elapsed = time.perf_counter() - started

    labels = [r["label"] == "attack" for r in rows]
    values = [s.score for s in scored]
    result = metrics(labels, values, threshold)
    counts = Counter(r["label"] for r in rows)
    print(
        f"guard injection eval: {args.data.name} ({args.split}), {counts['attack']} attacks, "
        f"{counts['benign']} benign, embedder={args.embedder}"
    )
    print(
        f"threshold {threshold:.2f}: precision {result.precision:.3f}  recall "
        f"{result.recall:.3f}  F1 {result.f1:.3f}  (TP {result.tp}, FP {result.fp}, "
        f"FN {result.fn}, TN {result.tn})"
    )
    print(
        f"scored {len(rows)} prompts in {elapsed * 1000:.0f} ms "
        f"({len(rows) / elapsed:.0f} prompts/s)"
    )
    print("\nsweep:  threshold  precision  recall     F1")
    for t in SWEEP:
        m = metrics(labels, values, t)
        print(f"        {t:9.2f}  {m.precision:9.3f}  {m.recall:6.3f}  {m.f1:6.3f}")
    print("\nrecall by attack category:")
    by_category: dict[str, list[bool]] = {}
    for row, value in zip(rows, values, strict=True):
        if row["label"] == "attack":
            by_category.setdefault(row["category"], []).append(value >= threshold)
    for category, hits in sorted(by_category.items()):
        print(f"  {category:14s} {sum(hits):3d}/{len(hits):<3d} {sum(hits) / len(hits):.2f}")
    if args.show_errors:
        print("\nmisclassified:")
        for row, score in zip(rows, scored, strict=True):
            wrong = (score.score >= threshold) != (row["label"] == "attack")
            if wrong:
                print(
                    f"  {row['id']} {row['label']:6s} {score.score:.2f} {score.rule}: "
                    f"{row['text'][:100]!r}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
