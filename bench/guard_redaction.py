"""Guard's batched PII redaction against Presidio's one-text-at-a-time path, same run.

The baseline is how Presidio is used by default: ``AnalyzerEngine.analyze`` on
one text (which runs the whole spaCy pipeline on it), then
``AnonymizerEngine.anonymize``, text after text. It uses the same model, the
same recognizers, the same entities and threshold and the same operators as
guard, so the only difference is how the work is done:

* guard runs spaCy once per batch with ``nlp.pipe``;
* only the NER component runs, and only when the tenant's policy asks for an
  NER entity (PERSON); tokens and lemmas are made only for the texts whose
  findings the context enhancer actually looks at (see processors/guard/nlp.py).

Throughput is texts per CPU second of the process (best of three alternating
rounds; wall-clock docs/s are printed too): on a shared 2-core machine wall
time swings with other load, CPU time much less.

Before printing a ratio, the script asserts that guard produced every finding
of the baseline (type, start, end, score, recognizer) on every text. Guard may
find more: it analyses a normalised text (processors/guard/normalize.py), so a
value hidden by invisible characters or written in full-width or other digits
is found by guard only; such extra findings are counted and listed by type.

Corpora: ``pii`` is tests/data/pii_corpus.jsonl, where every text carries PII
(the worst case: most texts need lemmas for context scoring); ``tickets`` are
the bodies of the support-ticket sample dataset and ``prompts`` the labelled
prompts of tests/data/injection_eval.jsonl, closer to real traffic, where most
texts carry no PII.

    .venv/bin/python bench/guard_redaction.py [--corpora pii tickets prompts] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NlpEngineProvider  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402

from processors.guard.engine import GuardEngine, GuardItem  # noqa: E402
from processors.guard.hashing import TenantHasher  # noqa: E402
from processors.guard.nlp import nlp_configuration  # noqa: E402
from processors.guard.pii import PresidioAnalyzer, resolve_overlaps, to_detections  # noqa: E402
from processors.guard.policy import Policy  # noqa: E402
from processors.guard.recognizers import build_registry  # noqa: E402
from processors.guard.redaction import Redactor  # noqa: E402
from processors.guard.text_recognizer import LANGUAGE  # noqa: E402

CORPORA = {
    "pii": (ROOT / "tests" / "data" / "pii_corpus.jsonl", "text", 2),
    "tickets": (ROOT / "schemas" / "datasets" / "support_tickets" / "sample.jsonl", "body", 1),
    "prompts": (ROOT / "tests" / "data" / "injection_eval.jsonl", "text", 3),
}
LIMIT = 630
ROUNDS = 3
POLICY = ROOT / "schemas" / "guard" / "policy.yaml"
SECRET = "bench-only-secret-0123456789"  # noqa: S105 (not a real secret)


def bench_key_id(tenant: str) -> str:
    """A fixed pseudonym key id per tenant (guard takes them from the tenant registry)."""
    return tenant.encode().hex().ljust(32, "0")


Finding = tuple[int, str, int, int, float, str]


Run = Callable[[], set[Finding]]


def baseline(texts: list[str], tenant: str, policy: Policy) -> Run:
    """Presidio's default path, one text at a time; the run returns its findings."""
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration()).create_engine()
    analyzer = AnalyzerEngine(
        registry=build_registry().registry,
        nlp_engine=nlp_engine,
        supported_languages=[LANGUAGE],
    )
    anonymizer = AnonymizerEngine()
    tenant_policy = policy.for_tenant(tenant)
    operators = Redactor(TenantHasher(SECRET, bench_key_id)).operators(tenant_policy)
    wanted = sorted(e.value for e in tenant_policy.active)
    threshold = tenant_policy.pii_score_threshold
    for text in texts[:20]:  # warm up
        analyzer.analyze(text, LANGUAGE, entities=wanted, score_threshold=threshold)

    def run() -> set[Finding]:
        results = []
        for text in texts:
            found = analyzer.analyze(text, LANGUAGE, entities=wanted, score_threshold=threshold)
            anonymizer.anonymize(text, found, operators=operators)
            results.append(found)
        return {
            (i, d.entity_type, d.start, d.end, d.score, d.recognizer)
            for i, found in enumerate(results)
            for d in resolve_overlaps(to_detections(found))
        }

    return run


def guard(texts: list[str], tenant: str, policy: Policy, batch: int) -> Run:
    """Guard's engine over batches; the run returns its findings."""
    engine = GuardEngine(
        policy, PresidioAnalyzer(), TenantHasher(SECRET, bench_key_id), None, analyzer_timeout_s=600
    )
    items = [GuardItem(str(i), tenant, text) for i, text in enumerate(texts)]
    engine.redact_batch(items[:20])  # warm up

    def run() -> set[Finding]:
        inspections = []
        for start in range(0, len(items), batch):
            inspections.extend(engine.redact_batch(items[start : start + batch]))
        if any(i.verdict.reason in ("analyzer_error", "analyzer_timeout") for i in inspections):
            raise SystemExit("guard failed closed during the bench; see the log")
        return {
            (int(f.request_id), f.entity_type, f.start, f.end, f.score, f.recognizer)
            for inspection in inspections
            for f in inspection.findings
        }

    return run


def timed(run: Run) -> tuple[float, float, set[Finding]]:
    """CPU seconds of this process (all threads), wall seconds, findings."""
    cpu, wall = time.process_time(), time.perf_counter()
    findings = run()
    return time.process_time() - cpu, time.perf_counter() - wall, findings


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpora", nargs="+", choices=sorted(CORPORA), default=["pii", "tickets", "prompts"]
    )
    parser.add_argument("--batch", type=int, default=256, help="texts per guard batch")
    parser.add_argument(
        "--tenants",
        nargs="+",
        default=["default", "telemetry"],
        help="tenants of schemas/guard/policy.yaml to bench",
    )
    args = parser.parse_args(argv)
    policy = Policy.load(POLICY)
    print(f"guard redaction bench, batch {args.batch}, best of {ROUNDS} rounds; {machine()}")
    status = 0
    for corpus in args.corpora:
        path, field, repeat = CORPORA[corpus]
        lines = path.read_text(encoding="utf-8").splitlines()
        texts = (_texts(lines, field) * repeat)[:LIMIT]
        print(f"corpus {corpus}: {len(texts)} texts from {path.relative_to(ROOT)}")
        status |= bench_corpus(texts, args.tenants, policy, args.batch)
    return status


def _texts(lines: list[str], field: str) -> list[str]:
    """The text field of each JSON line; lines that are not JSON objects are skipped.

    (The support-ticket sample deliberately holds broken records for the
    contract tests.)
    """
    texts = []
    for line in lines:
        try:
            value = json.loads(line).get(field)
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, str) and value:
            texts.append(value)
    return texts


def bench_corpus(texts: list[str], tenants: list[str], policy: Policy, batch: int) -> int:
    status = 0
    for tenant in tenants:
        tenant_policy = policy.for_tenant(tenant)
        runs = {
            "presidio": baseline(texts, tenant, policy),
            "guard": guard(texts, tenant, policy, batch),
        }
        # Alternate the two, best of ROUNDS each. Throughput is counted in CPU time of
        # this process: the machine is shared, and wall time swings with its load.
        best = {name: float("inf") for name in runs}
        wall = {name: float("inf") for name in runs}
        found: dict[str, set[Finding]] = {}
        for _ in range(ROUNDS):
            for name, run in runs.items():
                cpu_s, wall_s, found[name] = timed(run)
                best[name] = min(best[name], cpu_s)
                wall[name] = min(wall[name], wall_s)
        base_s, guard_s = best["presidio"], best["guard"]
        base_findings, guard_findings = found["presidio"], found["guard"]
        missed = base_findings - guard_findings
        extra = guard_findings - base_findings
        if missed:
            print(
                f"  {tenant}: GUARD MISSES {len(missed)} baseline findings "
                f"({len(extra)} only in guard)"
            )
            status = 1
            continue
        ner = "NER + patterns" if tenant_policy.needs_ner else "patterns only (no PERSON)"
        print(
            f"  tenant {tenant!r} [{ner}]: guard has every baseline finding "
            f"({len(base_findings)}); {len(extra)} more{_by_type(extra)}"
        )
        for label, name in (("presidio one-by-one", "presidio"), ("guard batched", "guard")):
            print(
                f"    {label:20s} {len(texts) / best[name]:8.1f} docs/s per CPU second "
                f"({best[name]:.2f} s CPU, {len(texts) / wall[name]:.1f} docs/s wall)"
            )
        print(f"    speed-up (CPU):      {base_s / guard_s:8.2f}x")
    return status


def _by_type(findings: set[Finding]) -> str:
    """`` (CREDIT_CARD 2, ...)``: extra findings by entity type, or nothing."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding[1]] = counts.get(finding[1], 0) + 1
    listed = ", ".join(f"{entity} {count}" for entity, count in sorted(counts.items()))
    return f" ({listed})" if listed else ""


if __name__ == "__main__":
    raise SystemExit(main())
