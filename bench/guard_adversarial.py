"""Guard against stock Presidio on the adversarial PII corpus: what each removes, same run.

The corpus is bench/adversarial_corpus.py's (generated from ``--seed``, or read from
``--corpus FILE``): values planted behind evasion tricks (invisible characters,
full-width and other digits, separators, spelled-out and bracketed e-mails,
lower-case IBANs and names, names in other scripts, credentials, private keys,
base64/hex), a ``plain`` control, and benign look-alikes.

The two sides, each over every text of the corpus:

* **Presidio**, used the default way: ``AnalyzerEngine`` with its default
  recognizers and the spaCy model guard uses (guard's NLP configuration, as in
  bench/guard_redaction.py), one text at a time, then ``AnonymizerEngine`` with its
  default operator (replace with ``<TYPE>``). It is asked for the entities of
  the tenant's policy that it knows (it has no API_KEY recognizer), at the
  policy's score threshold (``--presidio-threshold`` changes it);
* **guard**: ``GuardEngine.redact_batch`` for tenant ``default`` under
  schemas/guard/policy.yaml, in batches. ``redact_batch``, not ``inspect_batch``:
  this bench measures PII removal, and prompt-injection scoring would block
  texts for reasons that have nothing to do with PII. A text guard blocks (a PII
  rule whose action is ``block``, e.g. API_KEY) never reaches the model, so
  every value in it counts as removed; blocked records are also reported apart.

A planted value is **removed** when no substantial part of it remains in the
output text, as defined by ``adversarial_corpus.leaked`` (see that module's
docstring): the output is normalised (invisible characters deleted, NFKC,
Unicode digits as ASCII, case folded) and then, per type, no 5 consecutive digits
of a card or phone number (4 of an SSN) remain in a digit group, no 6
consecutive characters of an IBAN, no 3 consecutive octets of an IP address, no
letters-only part of an e-mail's local part as a word, neither the given name
nor the surname as a word (2 consecutive characters for Chinese and Japanese
names), no 8 consecutive characters of a secret, a private key's body or an
encoded token. A **benign** record is altered when the output differs from the
input (or guard blocked it).

Goals checked (printed; ``--check`` exits 1 when one is missed): guard removes at
least 97% of all planted values and at least 90% of each trick's, and alters at
most 5% of benign records.

    .venv/bin/python bench/guard_adversarial.py [--seed N | --corpus FILE] [--json FILE]
        [--by-variant] [--show-misses N] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tldextract  # noqa: E402
from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NlpEngineProvider  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402

from bench import adversarial_corpus as corpus  # noqa: E402
from processors.guard.engine import BLOCK, GuardEngine, items_for  # noqa: E402
from processors.guard.hashing import TenantHasher  # noqa: E402
from processors.guard.nlp import nlp_configuration  # noqa: E402
from processors.guard.pii import PresidioAnalyzer  # noqa: E402
from processors.guard.policy import Policy  # noqa: E402
from processors.guard.text_recognizer import LANGUAGE  # noqa: E402

POLICY = ROOT / "schemas" / "guard" / "policy.yaml"
TENANT = "default"
SECRET = "bench-only-secret-0123456789"  # noqa: S105 (not a real secret)


def bench_key_id(tenant: str) -> str:
    """A fixed pseudonym key id per tenant (guard takes them from the tenant registry)."""
    return tenant.encode().hex().ljust(32, "0")


BATCH = 128
GOAL_OVERALL, GOAL_PER_TRICK, GOAL_BENIGN = 0.97, 0.90, 0.05


@dataclass
class Side:
    """One redactor's outputs over the corpus, and what it cost."""

    name: str
    outputs: list[str]
    blocked: list[bool]
    cpu_s: float
    wall_s: float


@dataclass
class Tally:
    planted: int = 0
    removed: Counter[str] = field(default_factory=Counter)
    blocked: Counter[str] = field(default_factory=Counter)


def run_presidio(texts: list[str], policy: Policy, threshold: float | None) -> Side:
    """Stock Presidio: default recognizers, one text at a time, default replace operator."""
    # Presidio's e-mail recognizer validates domains with tldextract's module-level
    # extractor, which downloads the public-suffix list on first use. Point it at the
    # snapshot inside the wheel (what guard uses): the same validation, no network.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(
        cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True
    )
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration()).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
    anonymizer = AnonymizerEngine()
    tenant = policy.for_tenant(TENANT)
    known = set(analyzer.get_supported_entities(LANGUAGE))
    entities = sorted(e.value for e in tenant.active if e.value in known)
    score = tenant.pii_score_threshold if threshold is None else threshold
    print(f"presidio: entities {', '.join(entities)}; score threshold {score}")

    def redact(text: str) -> str:
        found = analyzer.analyze(text, LANGUAGE, entities=entities, score_threshold=score)
        return anonymizer.anonymize(text, found).text

    for text in texts[:10]:  # warm up (lazy loads), not timed
        redact(text)
    return _timed("presidio", lambda: ([redact(t) for t in texts], [False] * len(texts)))


def run_guard(texts: list[str], policy: Policy) -> Side:
    """Guard's engine for tenant ``default``, in batches of BATCH texts."""
    engine = GuardEngine(
        policy, PresidioAnalyzer(), TenantHasher(SECRET, bench_key_id), None, analyzer_timeout_s=600
    )
    engine.redact_batch(items_for(texts[:10], TENANT))  # warm up, not timed

    def run() -> tuple[list[str], list[bool]]:
        inspections = []
        for start in range(0, len(texts), BATCH):
            inspections.extend(engine.redact_batch(items_for(texts[start : start + BATCH], TENANT)))
        failed = [
            i for i in inspections if i.verdict.reason in ("analyzer_error", "analyzer_timeout")
        ]
        if failed:
            raise SystemExit(f"guard failed closed on {len(failed)} texts; see the log")
        return [i.text for i in inspections], [i.verdict.action == BLOCK for i in inspections]

    try:
        return _timed("guard", run)
    finally:
        engine.close()


def _timed(name: str, run: Callable[[], tuple[list[str], list[bool]]]) -> Side:
    cpu, wall = time.process_time(), time.perf_counter()
    outputs, blocked = run()
    return Side(name, outputs, blocked, time.process_time() - cpu, time.perf_counter() - wall)


Misses = dict[str, list[tuple[corpus.Record, str]]]


def score(
    records: list[corpus.Record], sides: list[Side], key: Callable[[corpus.Record], str]
) -> tuple[dict[str, Tally], Misses]:
    """Per key (trick or variant): planted values, removed and blocked counts per side."""
    tallies: dict[str, Tally] = {}
    misses: Misses = {s.name: [] for s in sides}
    for index, record in enumerate(records):
        if record.benign:
            continue
        tally = tallies.setdefault(key(record), Tally())
        tally.planted += len(record.spans)
        for side in sides:
            if side.blocked[index]:
                tally.removed[side.name] += len(record.spans)
                tally.blocked[side.name] += len(record.spans)
                continue
            for span in record.spans:
                if corpus.leaked(span, side.outputs[index]):
                    misses[side.name].append((record, span.value))
                else:
                    tally.removed[side.name] += 1
    return tallies, misses


def pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {cpu}, load {load:.1f}, Python {platform.python_version()}"


def _cell(part: int, whole: int) -> str:
    return f"{part} ({pct(part, whole):.1f}%)"


def table(tallies: dict[str, Tally], label: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    """A Markdown table of planted/removed/blocked per key, with an ``all`` row; and its data."""
    total = Tally()
    for t in tallies.values():
        total.planted += t.planted
        total.removed.update(t.removed)
        total.blocked.update(t.blocked)
    rows = {**tallies, "**all**": total}
    width = max(len(label), *(len(name) for name in rows))
    lines = [
        f"| {label:<{width}} | planted | Presidio removed | guard removed | guard blocked |",
        f"| {'-' * width} | ------: | ---------------: | ------------: | ------------: |",
    ]
    out: dict[str, dict[str, int]] = {}
    for name, t in rows.items():
        p, g, b = t.removed["presidio"], t.removed["guard"], t.blocked["guard"]
        lines.append(
            f"| {name:<{width}} | {t.planted:7d} | {_cell(p, t.planted):>16} "
            f"| {_cell(g, t.planted):>13} | {b:13d} |"
        )
        out["all" if t is total else name] = {
            "planted": t.planted,
            "presidio_removed": p,
            "guard_removed": g,
            "guard_blocked": b,
        }
    return lines, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    source.add_argument("--corpus", type=Path, help="JSONL from bench/adversarial_corpus.py")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--by-variant", action="store_true", help="also a table per variant")
    parser.add_argument(
        "--show-misses", type=int, default=0, metavar="N", help="print N of guard's misses"
    )
    parser.add_argument(
        "--presidio-threshold", type=float, help="Presidio's score threshold (default: policy's)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)

    records = corpus.read_jsonl(args.corpus) if args.corpus else corpus.generate(args.seed)
    texts = [r.text for r in records]
    benign = [i for i, r in enumerate(records) if r.benign]
    origin = str(args.corpus) if args.corpus else f"seed {args.seed}"
    print(f"guard adversarial bench; {machine()}")
    print(
        f"corpus ({origin}): {len(records)} records, "
        f"{sum(len(r.spans) for r in records)} planted values, {len(benign)} benign"
    )
    policy = Policy.load(POLICY)
    sides = [run_presidio(texts, policy, args.presidio_threshold), run_guard(texts, policy)]

    tallies, misses = score(records, sides, lambda r: r.trick)
    lines, by_trick = table(tallies, "trick")
    print()
    print("\n".join(lines))
    result: dict[str, object] = {
        "machine": machine(),
        "corpus": {"source": origin, "records": len(records), "benign": len(benign)},
        "policy_version": policy.version,
        "tricks": by_trick,
    }
    if args.by_variant:
        variant_tallies, _ = score(records, sides, lambda r: f"{r.trick}/{r.variant}")
        variant_lines, result["variants"] = table(variant_tallies, "trick/variant")
        print()
        print("\n".join(variant_lines))

    print()
    print("| side     | benign altered | CPU s | wall s |")
    print("| -------- | -------------: | ----: | -----: |")
    timing: dict[str, object] = {}
    altered: dict[str, int] = {}
    for side in sides:
        altered[side.name] = sum(side.blocked[i] or side.outputs[i] != texts[i] for i in benign)
        print(
            f"| {side.name:<8} | {_cell(altered[side.name], len(benign)):>14} "
            f"| {side.cpu_s:5.1f} | {side.wall_s:6.1f} |"
        )
        timing[side.name] = {
            "benign_altered": altered[side.name],
            "cpu_s": round(side.cpu_s, 2),
            "wall_s": round(side.wall_s, 2),
        }
    result["sides"] = timing

    overall = by_trick["all"]
    goals = {
        "overall_removed": pct(overall["guard_removed"], overall["planted"]) >= 100 * GOAL_OVERALL,
        "every_trick_removed": all(
            pct(t.removed["guard"], t.planted) >= 100 * GOAL_PER_TRICK for t in tallies.values()
        ),
        "benign_altered": pct(altered["guard"], len(benign)) <= 100 * GOAL_BENIGN,
    }
    result["goals"] = goals
    print()
    print(
        f"goals (guard): >= {GOAL_OVERALL:.0%} removed overall: {_ok(goals['overall_removed'])}; "
        f">= {GOAL_PER_TRICK:.0%} per trick: {_ok(goals['every_trick_removed'])}; "
        f"<= {GOAL_BENIGN:.0%} benign altered: {_ok(goals['benign_altered'])}"
    )
    if args.show_misses:
        print(f"\nguard misses (first {args.show_misses} of {len(misses['guard'])}):")
        for record, value in misses["guard"][: args.show_misses]:
            print(f"  {record.id} {record.trick}/{record.variant}: {value!r}")
        changed = [i for i in benign if sides[1].blocked[i] or sides[1].outputs[i] != texts[i]]
        for i in changed[: args.show_misses]:
            print(f"  benign altered {records[i].id} {records[i].variant}: {sides[1].outputs[i]!r}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 1 if args.check and not all(goals.values()) else 0


def _ok(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    raise SystemExit(main())
