"""The analysis process: a stalled or crashed text is blocked alone, the rest goes on.

Real child processes (spawned, each loading spaCy: a few seconds), no Kafka.
The timeouts asserted are loose on purpose: a stall here is infinite, so any
bound proves the analysis was interrupted.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator

import pytest

from processors.guard.analysis_worker import (
    RESTARTS,
    AnalysisWorker,
    AnalysisWorkerError,
    Progress,
)
from processors.guard.engine import GuardEngine, GuardItem, withheld
from processors.guard.pii import PresidioAnalyzer
from processors.guard.policy import Entity
from tests.support.guard import SECRET, EngineFactory, read_jsonl, unit_key_ids
from tests.support.guard_analyzers import (
    CRASH,
    STALL,
    MarkerAnalyzer,
    RaisingAnalyzer,
    marked_presidio,
)

TIMEOUT_S = 2.0
#: Generous: the timeout, a respawn (imports and the spaCy model, slow on a loaded
#: machine) and the analysis; the stall itself never ends.
BOUND_S = 45.0
MAIL = "Write to maria.g@example.com or call +1 415-555-0132 please"

pytestmark = pytest.mark.timeout(300)


def restarts(reason: str) -> float:
    return RESTARTS.labels(reason)._value.get()


def alive(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until reaped: only a reaped one is gone for good.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@pytest.fixture(scope="module")
def worker() -> Iterator[AnalysisWorker]:
    """Guard's real analyzer in its process, plus a recognizer that obeys the markers."""
    analysis = AnalysisWorker(marked_presidio, timeout_s=TIMEOUT_S)
    yield analysis
    analysis.close()


@pytest.fixture(scope="module")
def engine(worker: AnalysisWorker, make_engine: EngineFactory) -> GuardEngine:
    return make_engine(worker, timeout=TIMEOUT_S)


def test_same_findings_as_in_process(worker: AnalysisWorker, analyzer: PresidioAnalyzer) -> None:
    texts = [row["text"] for row in read_jsonl("pii_corpus.jsonl")][:60]
    entities = list(Entity)
    assert worker.analyze_batch(texts, entities, 0.4) == analyzer.analyze_batch(
        texts, entities, 0.4
    )
    assert worker.max_length == analyzer.max_length


def test_stalled_text_is_blocked_alone_and_the_batch_goes_on(
    engine: GuardEngine, worker: AnalysisWorker, caplog: pytest.LogCaptureFixture
) -> None:
    first_pid, timeouts = worker.pid, restarts("timeout")
    items = [
        GuardItem("a", "acme", MAIL),
        GuardItem("b", "globex", f"my number is {STALL} 415-555-0199"),
        GuardItem("c", "globex", MAIL),
        GuardItem("d", "nonames", "Maria Gonzalez, maria.g@example.com"),
    ]
    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        results = engine.redact_batch(items)
    assert time.monotonic() - started < BOUND_S
    assert [r.request_id for r in results] == ["a", "b", "c", "d"]
    stalled = results[1]
    assert (stalled.verdict.action, stalled.verdict.reason) == ("block", "analyzer_timeout")
    assert stalled.text == withheld("analyzer_timeout") and stalled.findings == ()
    for result in (results[0], results[2]):
        assert result.verdict.action == "pass"
        assert result.verdict.entity_counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
        assert "maria.g@example.com" not in result.text and "555" not in result.text
    assert results[3].verdict.entity_counts == {"EMAIL_ADDRESS": 1}  # nonames: no PERSON
    assert restarts("timeout") == timeouts + 1
    assert worker.pid != first_pid and not alive(first_pid)
    assert "ANALYZER_TIMEOUT_S" in caplog.text and "415" not in caplog.text

    # The next batch does not wait for the stuck work: it was killed, not left running.
    started = time.monotonic()
    [after] = engine.redact_batch([GuardItem("e", "acme", MAIL)])
    assert time.monotonic() - started < BOUND_S
    assert after.verdict.entity_counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}


def test_the_phone_matcher_on_a_long_run_of_digits_is_interrupted(
    engine: GuardEngine, worker: AnalysisWorker
) -> None:
    """No marker: Presidio's own phone matcher takes seconds on separated digits."""
    timeouts = restarts("timeout")
    digits = "1 " * 49_000  # under the 100,000-character limit; ~4.5 s on an idle core
    items = [
        GuardItem("a", "nonames", MAIL),  # nonames: no PERSON, so no NER pass
        GuardItem("b", "nonames", digits),
        GuardItem("c", "nonames", MAIL),
    ]
    started = time.monotonic()
    results = engine.redact_batch(items)
    assert time.monotonic() - started < BOUND_S
    assert [r.verdict.reason for r in results] == [None, "analyzer_timeout", None]
    assert results[2].verdict.entity_counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert restarts("timeout") == timeouts + 1


def test_crash_mid_batch_blocks_only_the_text_in_progress(
    engine: GuardEngine, worker: AnalysisWorker
) -> None:
    crashes = restarts("crash")
    items = [
        GuardItem("a", "acme", MAIL),
        GuardItem("b", "acme", f"{CRASH} maria.g@example.com"),
        GuardItem("c", "globex", MAIL),
    ]
    started = time.monotonic()
    results = engine.inspect_batch(items)
    assert time.monotonic() - started < BOUND_S
    assert [r.verdict.reason for r in results] == [None, "analyzer_error", None]
    assert results[1].text == withheld("analyzer_error")
    assert all("maria.g@example.com" not in r.text for r in results)
    assert restarts("crash") == crashes + 1


def test_child_killed_while_idle_is_replaced_without_blocking(
    engine: GuardEngine, worker: AnalysisWorker
) -> None:
    pid, crashes = worker.pid, restarts("crash")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    results = engine.redact_batch([GuardItem("a", "acme", MAIL), GuardItem("b", "t", "hello")])
    assert [r.verdict.reason for r in results] == [None, None]
    assert results[0].verdict.entity_counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert restarts("crash") == crashes + 1 and worker.pid != pid


def test_without_progress_a_stall_is_found_one_text_at_a_time() -> None:
    worker = AnalysisWorker(MarkerAnalyzer, timeout_s=1.0)
    try:
        texts = ["one", f"two {STALL}", "three", f"four {CRASH}", "five"]
        started = time.monotonic()
        out = worker.analyze_isolated(texts, list(Entity), 0.4)
        assert time.monotonic() - started < 2 * BOUND_S
        assert out == [[], "analyzer_timeout", [], "analyzer_error", []]
    finally:
        worker.close()


def test_a_raising_text_is_blocked_alone_and_its_process_kept(
    caplog: pytest.LogCaptureFixture, make_engine: EngineFactory
) -> None:
    worker = AnalysisWorker(RaisingAnalyzer, timeout_s=TIMEOUT_S)
    engine = make_engine(worker, timeout=TIMEOUT_S)
    try:
        pid = worker.pid
        with caplog.at_level(logging.ERROR):
            results = engine.redact_batch(
                [
                    GuardItem("a", "t", "fine"),
                    GuardItem("b", "t", "boom Maria"),
                    GuardItem("c", "t", "ok"),
                ]
            )
        assert [r.verdict.reason for r in results] == [None, "analyzer_error", None]
        assert worker.pid == pid  # an exception is an answer: no respawn
        assert "ValueError" in caplog.text and "Maria" not in caplog.text
    finally:
        engine.close()


def test_close_leaves_no_child_process(make_engine: EngineFactory) -> None:
    worker = AnalysisWorker(MarkerAnalyzer, timeout_s=TIMEOUT_S)
    engine = make_engine(worker)
    pid = worker.pid
    assert alive(pid)
    engine.close()
    assert not alive(pid) and worker.pid is None
    assert not [p for p in multiprocessing.active_children() if p.pid == pid]


def test_a_model_that_cannot_load_fails_at_start() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    factory = functools.partial(PresidioAnalyzer, model_name="no_such_spacy_model")
    with pytest.raises(AnalysisWorkerError, match=r"ModelNotInstalledError.*no_such_spacy_model"):
        AnalysisWorker(factory, timeout_s=TIMEOUT_S)
    assert {p.pid for p in multiprocessing.active_children()} <= before


def test_engine_runs_analysis_in_a_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_GUARD__HASH_SECRET", SECRET)
    monkeypatch.setenv("SLUICE_GUARD__EMBEDDER", "none")
    engine = GuardEngine.from_settings(pseudonym_key_ids=unit_key_ids)
    try:
        assert isinstance(engine.analyzer, AnalysisWorker)
        [result] = engine.inspect_batch([GuardItem("1", "acme", "mail a@example.com")])
        assert result.verdict.entity_counts == {"EMAIL_ADDRESS": 1}
    finally:
        engine.close()
    monkeypatch.setenv("SLUICE_GUARD__ANALYZER_ISOLATION", "thread")
    engine = GuardEngine.from_settings(pseudonym_key_ids=unit_key_ids)
    assert isinstance(engine.analyzer, PresidioAnalyzer)
    engine.close()


def test_progress_names_the_text_in_progress_of_the_current_request_only() -> None:
    progress = Progress([0.0] * 4)
    assert progress.read(1, 3) == (None, 0.0)  # nothing begun (ids start at 1)
    progress.begin(7)
    index, since = progress.read(7, 3)
    assert index is None and since > 0  # the batch's NER pass: no text yet
    assert progress.read(6, 3) == (None, 0.0)  # another request's state means nothing
    for expected in (0, 1, 2):
        progress.started()
        assert progress.read(7, 3)[0] == expected
    progress.started()  # more analyzer calls than texts: calls do not map to texts
    assert progress.read(7, 3)[0] is None


def test_a_batch_past_its_own_deadline_blocks_what_is_left() -> None:
    worker = AnalysisWorker(MarkerAnalyzer, timeout_s=600, batch_timeout_s=TIMEOUT_S)
    try:
        started = time.monotonic()
        deadline = worker.batch_deadline()
        out = worker.analyze_isolated(["one", STALL, "three"], list(Entity), 0.4, deadline=deadline)
        assert time.monotonic() - started < BOUND_S  # the text alone would have had 600 s
        assert out == ["analyzer_timeout"] * 3
        assert worker.analyze_isolated(["four"], list(Entity), 0.4) == [[]]
    finally:
        worker.close()
