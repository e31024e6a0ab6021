"""Guard's PII analysis in its own process against the same analysis in guard's thread.

Both engines are guard's own (``GuardEngine`` with the shipped policy, tenant
``default``: every entity, so NER runs); one holds ``PresidioAnalyzer`` in
process (``SLUICE_GUARD__ANALYZER_ISOLATION=thread``), the other an
``AnalysisWorker`` running it in a spawned child (``process``, the default).
The difference is the cost of isolation: pickling texts and detections through
a pipe, one progress message per text, and the child's scheduling.

Rounds alternate between the two (so load on a shared machine hits both
alike); each redacts the corpus in batches of ``--batch``. Printed: wall-clock
docs/s and docs per CPU second (guard's process plus, for the worker, the
child's CPU read from /proc), best and median of the rounds, and the ratios. The script
asserts both return the same texts and verdicts first. It also times a
worker's start (what a respawn costs).

    .venv/bin/python bench/guard_isolation.py [--batch 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processors.guard.analysis_worker import AnalysisWorker  # noqa: E402
from processors.guard.engine import GuardEngine, GuardItem, Inspection  # noqa: E402
from processors.guard.hashing import TenantHasher  # noqa: E402
from processors.guard.pii import PresidioAnalyzer  # noqa: E402
from processors.guard.policy import Policy  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"
POLICY = ROOT / "schemas" / "guard" / "policy.yaml"
SECRET = "bench-only-secret-0123456789"  # noqa: S105 (not a real secret)


def bench_key_id(tenant: str) -> str:
    """A fixed pseudonym key id per tenant (guard takes them from the tenant registry)."""
    return tenant.encode().hex().ljust(32, "0")


LIMIT = 630
TENANT = "default"


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def outcome(inspection: Inspection) -> tuple[object, ...]:
    """What guard decided about a text, without the moment it decided it."""
    verdict = inspection.verdict
    return (
        inspection.text,
        verdict.action,
        verdict.reason,
        verdict.entity_counts,
        [(f.entity_type, f.start, f.end, f.score, f.recognizer) for f in inspection.findings],
    )


def run(engine: GuardEngine, items: list[GuardItem], batch: int) -> list[Inspection]:
    out: list[Inspection] = []
    for start in range(0, len(items), batch):
        out.extend(engine.redact_batch(items[start : start + batch]))
    return out


def timed(
    engine: GuardEngine, items: list[GuardItem], batch: int, child: Callable[[], int | None]
) -> tuple[float, float, list[Inspection]]:
    """Wall seconds and CPU seconds (this process plus the child, if any) of one round."""
    pid = child()
    wall, cpu, child_cpu = time.perf_counter(), time.process_time(), cpu_of(pid)
    out = run(engine, items, batch)
    child_used = cpu_of(pid) - child_cpu
    return time.perf_counter() - wall, time.process_time() - cpu + child_used, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines() if line]
    texts = [row["text"] for row in rows * 2][:LIMIT]
    items = [GuardItem(str(i), TENANT, text) for i, text in enumerate(texts)]
    policy = Policy.load(POLICY)

    def engine(analyzer: object) -> GuardEngine:
        return GuardEngine(
            policy,
            analyzer,  # type: ignore[arg-type]
            TenantHasher(SECRET, bench_key_id),
            None,
            analyzer_timeout_s=600,
        )

    in_thread = engine(PresidioAnalyzer())
    started = time.perf_counter()
    worker = AnalysisWorker(functools.partial(PresidioAnalyzer), timeout_s=600)
    start_s = time.perf_counter() - started
    in_process = engine(worker)
    try:
        a, b = run(in_thread, items, args.batch), run(in_process, items, args.batch)
        if list(map(outcome, a)) != list(map(outcome, b)):
            raise SystemExit("the two analyses differ: nothing to compare")
        if any((i.verdict.reason or "").startswith("analyzer") for i in b):
            raise SystemExit("an analysis failed or timed out: nothing to compare")
        results: dict[str, list[tuple[float, float]]] = {"thread": [], "process": []}
        for _ in range(args.rounds):
            wall, cpu, _out = timed(in_thread, items, args.batch, lambda: None)
            results["thread"].append((wall, cpu))
            wall, cpu, _out = timed(in_process, items, args.batch, lambda: worker.pid)
            results["process"].append((wall, cpu))
    finally:
        in_process.close()
        in_thread.close()

    print(
        f"{len(items)} texts, batch {args.batch}, tenant {TENANT}, {args.rounds} alternating "
        f"rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"analysis process start (a respawn): {start_s:.1f} s")
    rates: dict[str, dict[str, float]] = {}
    for mode, samples in results.items():
        walls, cpus = [len(items) / w for w, _ in samples], [len(items) / c for _, c in samples]
        rates[mode] = {
            "best wall": max(walls),
            "median wall": statistics.median(walls),
            "best CPU": max(cpus),
            "median CPU": statistics.median(cpus),
        }
        print(
            f"{mode:8} docs/s wall: best {max(walls):6.1f} median {statistics.median(walls):6.1f}"
            f"   docs/CPU-s: best {max(cpus):6.1f} median {statistics.median(cpus):6.1f}"
        )
    print(
        "process / thread: "
        + ", ".join(f"{k} {rates['process'][k] / rates['thread'][k]:.3f}" for k in rates["thread"])
    )


if __name__ == "__main__":
    main()
