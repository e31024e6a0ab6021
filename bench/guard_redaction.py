"""Guard's batched PII redaction against Presidio's one-text-at-a-time path, same run.

The baseline is how Presidio is used by default: ``AnalyzerEngine.analyze`` on
one text (which runs the whole spaCy pipeline on it), then
``AnonymizerEngine.anonymize``, text after text. It uses the same model, the
same recognizers, the same entities and threshold and the same operators as
guard, so the only difference is how the work is done:

* guard runs spaCy once per batch with ``nlp.pipe``;
* only the NER component runs, and only when the tenant's policy asks for an
  NER entity (PERSON); tokens and lemmas are made only for the texts whose
  findings the context enhancer actually looks at (see processors/guarding/nlp.py).

Before printing a ratio, the script asserts that both paths produced exactly
the same findings (type, start, end, score, recognizer) on every text.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NlpEngineProvider  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402

from processors.guarding.engine import GuardEngine, GuardItem  # noqa: E402
from processors.guarding.hashing import TenantHasher  # noqa: E402
from processors.guarding.nlp import nlp_configuration  # noqa: E402
from processors.guarding.pii import PresidioAnalyzer, resolve_overlaps, to_detections  # noqa: E402
from processors.guarding.policy import Policy  # noqa: E402
from processors.guarding.recognizers import LANGUAGE, build_registry  # noqa: E402
from processors.guarding.redaction import Redactor  # noqa: E402

CORPORA = {
    "pii": (ROOT / "tests" / "data" / "pii_corpus.jsonl", "text", 2),
    "tickets": (ROOT / "schemas" / "datasets" / "support_tickets" / "sample.jsonl", "body", 1),
    "prompts": (ROOT / "tests" / "data" / "injection_eval.jsonl", "text", 3),
}
LIMIT = 630
ROUNDS = 2  # best of: the machine is shared and noisy
POLICY = ROOT / "schemas" / "guard" / "policy.yaml"
SECRET = "bench-only-secret-0123456789"  # noqa: S105 (not a real secret)
Finding = tuple[int, str, int, int, float, str]


def baseline(texts: list[str], tenant: str, policy: Policy) -> tuple[float, set[Finding]]:
    """Presidio's default path, one text at a time. Returns (seconds, findings)."""
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration()).create_engine()
    analyzer = AnalyzerEngine(
        registry=build_registry().registry, nlp_engine=nlp_engine,
        supported_languages=[LANGUAGE],
    )
    anonymizer = AnonymizerEngine()
    tenant_policy = policy.for_tenant(tenant)
    operators = Redactor(TenantHasher(SECRET)).operators(tenant_policy)
    wanted = sorted(e.value for e in tenant_policy.active)
    threshold = tenant_policy.pii_score_threshold
    for text in texts[:20]:  # warm up
        analyzer.analyze(text, LANGUAGE, entities=wanted, score_threshold=threshold)
    elapsed = float("inf")
    for _ in range(ROUNDS):
        results = []
        started = time.perf_counter()
        for text in texts:
            found = analyzer.analyze(text, LANGUAGE, entities=wanted, score_threshold=threshold)
            anonymizer.anonymize(text, found, operators=operators)
            results.append(found)
        elapsed = min(elapsed, time.perf_counter() - started)
    findings = {
        (i, d.entity_type, d.start, d.end, d.score, d.recognizer)
        for i, found in enumerate(results)
        for d in resolve_overlaps(to_detections(found))
    }
    return elapsed, findings


def guard(
    texts: list[str], tenant: str, policy: Policy, batch: int
) -> tuple[float, set[Finding]]:
    """Guard's engine over batches. Returns (seconds, findings)."""
    engine = GuardEngine(policy, PresidioAnalyzer(), TenantHasher(SECRET), None,
                         analyzer_timeout_s=600)
    items = [GuardItem(str(i), tenant, text) for i, text in enumerate(texts)]
    engine.redact_batch(items[:20])  # warm up
    elapsed = float("inf")
    for _ in range(ROUNDS):
        inspections = []
        started = time.perf_counter()
        for start in range(0, len(items), batch):
            inspections.extend(engine.redact_batch(items[start:start + batch]))
        elapsed = min(elapsed, time.perf_counter() - started)
    engine.close()
    if any(i.verdict.reason in ("analyzer_error", "analyzer_timeout") for i in inspections):
        raise SystemExit("guard failed closed during the bench; see the log")
    findings = {
        (int(f.request_id), f.entity_type, f.start, f.end, f.score, f.recognizer)
        for inspection in inspections
        for f in inspection.findings
    }
    return elapsed, findings


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
    parser.add_argument("--corpora", nargs="+", choices=sorted(CORPORA),
                        default=["pii", "tickets", "prompts"])
    parser.add_argument("--batch", type=int, default=256, help="texts per guard batch")
    parser.add_argument("--tenants", nargs="+", default=["default", "telemetry"],
                        help="tenants of schemas/guard/policy.yaml to bench")
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
        base_s, base_findings = baseline(texts, tenant, policy)
        guard_s, guard_findings = guard(texts, tenant, policy, batch)
        if base_findings != guard_findings:
            print(f"  {tenant}: FINDINGS DIFFER: {len(base_findings - guard_findings)} only in "
                  f"the baseline, {len(guard_findings - base_findings)} only in guard")
            status = 1
            continue
        ner = "NER + patterns" if tenant_policy.needs_ner else "patterns only (no PERSON)"
        print(f"  tenant {tenant!r} [{ner}]: findings equal ({len(guard_findings)})")
        print(f"    presidio one-by-one: {len(texts) / base_s:8.1f} docs/s  ({base_s:.2f} s)")
        print(f"    guard batched:       {len(texts) / guard_s:8.1f} docs/s  ({guard_s:.2f} s)")
        print(f"    speed-up:            {base_s / guard_s:8.2f}x")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
