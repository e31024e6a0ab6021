"""PII analysis in a child process that guard can kill and replace.

Python cannot stop a thread: an analysis that stalls (Presidio's phone matcher
on a long run of separated digits, a pathological spaCy input) keeps running
and keeps the GIL. ``AnalysisWorker`` runs the analyzer in a child process
instead, so a stalled or crashed analysis is ended with SIGKILL and the child
replaced, and only the text it was working on is blocked.

How one call goes:

* the texts go to the child in one request; the child runs the analyzer's
  ``analyze_batch`` on all of them, so spaCy's ``nlp.pipe`` still batches the
  NER pass, and notes in shared memory each text Presidio's
  ``AnalyzerEngine.analyze`` starts on, and when (an index and a time, never
  text; no message, so the normal case costs guard no wake-up per text);
* guard gives each step its own deadline of ``timeout_s``: the batched NER
  pass (linear in the text, bounded by ``max_input_chars``), then each text's
  recognizers. It waits for the answer and, when a deadline passes, reads
  which step the child is on and since when;
* past a deadline, or when the child dies, the text in progress is the
  culprit: it is blocked (``analyzer_timeout`` or ``analyzer_error``), the
  child is killed and replaced, and the texts not yet returned are sent to the
  fresh child. Texts before the culprit are analysed again (their results
  were to come with the batch's one answer), which costs CPU only on this rare
  path;
* when no text was in progress (the NER pass stalled, or the analyzer has no
  ``engine.analyze`` to watch), the culprit is unknown, so the texts left are
  analysed one per request, each with its own deadline.

A deadline therefore never withholds another text, and delays the others by
about one ``timeout_s`` plus a respawn per culprit. A batch in the normal case
is one request and one answer: the child lives as long as guard.

The child is started with ``spawn``, not ``fork``: guard's process has Kafka
clients, their librdkafka threads and tracing exporters by then, and a forked
copy of a process with threads can inherit a lock held by one of them. A
spawned child is a fresh interpreter that imports only the analyzer; it holds
no credentials nor hash secret, only the texts it is given. ``forkserver``
would make a respawn cheaper (imports done once), at the cost of a second
long-lived process; a respawn costs 3-8 s on a busy 2-core machine (imports,
then about 1 s to load the spaCy model) and happens only on a timeout or a
crash, never per batch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from prometheus_client import Counter

from processors.guard.pii import Analyzer, Detection
from processors.guard.policy import Entity
from streams.errors import ConfigurationError, SluiceError

log = logging.getLogger("sluice.guard")

# Verdict reasons of a text whose analysis did not complete (GuardVerdict.reason).
ANALYZER_ERROR = "analyzer_error"
ANALYZER_TIMEOUT = "analyzer_timeout"

RESTARTS = Counter(
    "sluice_guard_analyzer_restarts_total",
    "PII analysis worker processes replaced, by reason (timeout: a text ran past "
    "SLUICE_GUARD__ANALYZER_TIMEOUT_S; crash: the process died).",
    ["reason"],
)

#: How often a child checks that guard is still there (it exits when not).
_ORPHAN_CHECK_S = 1.0
#: How long close() lets the child exit on its own before killing it.
_CLOSE_GRACE_S = 2.0


class AnalysisWorkerError(SluiceError):
    """The analysis worker could not be started (its analyzer failed to load)."""


class AnalyzerFactory(Protocol):
    """Builds the analyzer in the child; must be picklable (a class or module function)."""

    def __call__(self) -> Analyzer:
        """Return a ready analyzer (called once per child)."""
        ...


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one request to the child ended."""

    results: list[list[Detection]] | None = None  # every text analysed
    raised: str | None = None  # the analyzer raised (class name)
    failed: str | None = None  # ANALYZER_TIMEOUT or ANALYZER_ERROR (the child is gone)
    culprit: int | None = None  # index of the text in progress when it failed
    unavailable: bool = False  # no child could be started: every text fails
    overrun: bool = False  # the batch's deadline passed: every text left fails


class AnalysisWorker:
    """An ``Analyzer`` that runs another one in a child process it replaces when stuck.

    ``factory`` builds the real analyzer in the child (``PresidioAnalyzer``
    through its constructor, so whatever it does flows through unchanged).
    Starting waits until the child reports the analyzer loaded, so a missing
    model fails guard at start, not at the first prompt.
    """

    def __init__(
        self,
        factory: AnalyzerFactory,
        *,
        timeout_s: float,
        batch_timeout_s: float | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self._factory = factory
        self.timeout_s = timeout_s
        self.batch_timeout_s = batch_timeout_s
        self.start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._started_at = 0.0
        self._progress = Progress(None)
        self._max_length = 0
        self._requests = itertools.count(1)  # 0 is the shared memory before any request
        self._lock = threading.Lock()  # one request at a time: the child serves one
        self._start()
        self._await_ready(raise_on_failure=True)

    # -- the Analyzer protocol -----------------------------------------------------------
    @property
    def max_length(self) -> int:
        """The longest text the analyzer accepts, as the child reported it."""
        return self._max_length

    @property
    def pid(self) -> int | None:
        """The child's process id (None between a kill and the next start)."""
        return self._process.pid if self._process is not None else None

    def analyze_batch(
        self, texts: Sequence[str], entities: Collection[Entity], threshold: float
    ) -> list[list[Detection]]:
        """Detections per text; raises when any text could not be analysed."""
        out = self.analyze_isolated(texts, entities, threshold)
        failed = [o for o in out if isinstance(o, str)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(texts)} texts not analysed: {failed[0]}")
        return [o for o in out if not isinstance(o, str)]

    def batch_deadline(self) -> float | None:
        """When a batch starting now must be done (``time.monotonic``), if bounded."""
        if self.batch_timeout_s is None:
            return None
        return time.monotonic() + self.batch_timeout_s

    def analyze_isolated(
        self,
        texts: Sequence[str],
        entities: Collection[Entity],
        threshold: float,
        *,
        deadline: float | None = None,
    ) -> list[list[Detection] | str]:
        """Detections per text, or the reason that text could not be analysed.

        The reasons are ``analyzer_timeout`` (past its own deadline, or the texts
        still unanswered at ``deadline``, the batch's) and ``analyzer_error``
        (the analyzer raised on it alone, or its process died).
        """
        wanted = sorted(e.value for e in entities)
        out: list[list[Detection] | str | None] = [None] * len(texts)
        with self._lock:
            pending = list(range(len(texts)))
            one_by_one = False
            while pending:
                batch = pending[:1] if one_by_one else pending
                outcome = self._request([texts[i] for i in batch], wanted, threshold, deadline)
                if outcome.overrun:
                    log.error(
                        "PII analysis of a batch ran past SLUICE_GUARD__ANALYZER_BATCH_TIMEOUT_S "
                        "(%.1f s); blocking the %d texts not analysed yet",
                        self.batch_timeout_s or 0.0,
                        len(pending),
                    )
                    for index in pending:
                        out[index] = ANALYZER_TIMEOUT
                    pending = []
                elif outcome.results is not None:
                    for index, found in zip(batch, outcome.results, strict=True):
                        out[index] = found
                    pending = pending[len(batch) :]
                elif outcome.unavailable:
                    for index in pending:
                        out[index] = ANALYZER_ERROR
                    pending = []
                elif outcome.raised is not None and len(batch) > 1:
                    # Which text it raised on is unknown: ask again one text at a time.
                    one_by_one = True
                elif outcome.culprit is not None or len(batch) == 1:
                    culprit = batch[outcome.culprit or 0]
                    out[culprit] = outcome.failed or ANALYZER_ERROR
                    pending.remove(culprit)
                else:
                    one_by_one = True  # stalled or died with no text in progress
        return [o if o is not None else ANALYZER_ERROR for o in out]

    def close(self) -> None:
        """Stop the child: ask it to exit, kill it if it does not."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):  # already gone
                    self._conn.send(None)
            self._stop(grace_s=_CLOSE_GRACE_S)

    # -- one request -----------------------------------------------------------------------
    def _request(
        self, texts: list[str], entities: list[str], threshold: float, ends: float | None
    ) -> _Outcome:
        if ends is not None and time.monotonic() >= ends:
            return _Outcome(overrun=True)
        if self._process is None:  # closed: a call after close() starts a child again
            self._start()
        elif self._ready and wait([self._process.sentinel], 0):
            # Died while idle (killed from outside, OOM): replace it, no text to blame.
            log.error("PII analysis process %s died while idle; replacing it", self._process.pid)
            self._replace(ANALYZER_ERROR, None, "crash")
        if not self._ready and not self._await_ready(raise_on_failure=False):
            # No analyzer to ask: fail closed on every text, try a fresh child next call.
            return _Outcome(failed=ANALYZER_ERROR, unavailable=True)
        assert self._conn is not None and self._process is not None  # noqa: S101 (ready)
        request_id = next(self._requests)
        try:
            self._conn.send((request_id, texts, entities, threshold))
        except OSError:
            return self._replace(ANALYZER_ERROR, None, "crash")
        deadline = time.monotonic() + self.timeout_s
        while True:
            now = time.monotonic()
            if ends is not None and now >= ends:
                self._replace(ANALYZER_TIMEOUT, None, "timeout")
                return _Outcome(overrun=True)
            remaining = min(deadline, ends if ends is not None else deadline) - now
            if remaining <= 0:
                in_progress, started_at = self._progress.read(request_id, len(texts))
                if started_at + self.timeout_s > time.monotonic():
                    deadline = started_at + self.timeout_s  # a later step has its own time
                    continue
                log.error(
                    "PII analysis of a text ran past %.1f s; blocking it and replacing the "
                    "analysis process. Raise SLUICE_GUARD__ANALYZER_TIMEOUT_S or lower the "
                    "tenant's max_input_chars.",
                    self.timeout_s,
                )
                return self._replace(ANALYZER_TIMEOUT, in_progress, "timeout")
            if not wait([self._conn, self._process.sentinel], remaining):
                continue
            try:
                message = self._conn.recv() if self._conn.poll() else None
            except (EOFError, OSError):
                message = None
            if message is None:
                self._process.join(1.0)  # reap it, so its exit code (e.g. -9) can be logged
                log.error(
                    "PII analysis process %s died (exit code %s); blocking the text in progress",
                    self._process.pid,
                    self._process.exitcode,
                )
                in_progress, _ = self._progress.read(request_id, len(texts))
                return self._replace(ANALYZER_ERROR, in_progress, "crash")
            kind, answered, payload = message
            if answered != request_id:
                continue  # a late answer to an earlier request
            if kind == "done":
                return _Outcome(results=[[Detection(*d) for d in found] for found in payload])
            else:  # "raised": the class name only, messages may quote the input
                log.error("PII analyzer raised %s in the analysis process", payload)
                return _Outcome(raised=str(payload), failed=ANALYZER_ERROR, culprit=0)

    # -- the child's life ------------------------------------------------------------------
    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._progress = Progress(self._context.RawArray("d", 4))
        process = self._context.Process(
            target=serve,
            args=(self._factory, child, self._progress),
            name="guard-analysis",
            daemon=True,  # never outlives guard's interpreter, even without close()
        )
        process.start()
        child.close()  # so a dead child reads as end-of-file here, not as silence
        self._process, self._conn, self._ready = process, parent, False
        self._started_at = time.monotonic()

    def _await_ready(self, *, raise_on_failure: bool) -> bool:
        assert self._conn is not None and self._process is not None  # noqa: S101
        failure = f"did not report ready within {self.start_timeout_s:.0f} s"
        if wait([self._conn, self._process.sentinel], self.start_timeout_s):
            try:
                kind, _, payload = self._conn.recv()
            except (EOFError, OSError):
                kind, payload = "died", f"exit code {self._process.exitcode}"
            if kind == "ready":
                self._ready, self._max_length = True, int(payload)
                log.info(
                    "PII analysis process %s ready in %.1f s",
                    self._process.pid,
                    time.monotonic() - self._started_at,
                )
                return True
            failure = str(payload)
        self._stop(grace_s=0)
        if raise_on_failure:
            raise AnalysisWorkerError(f"the PII analysis process failed to start: {failure}")
        self._start()  # the next call tries a fresh child
        log.error("PII analysis process failed to start: %s", failure)
        return False

    def _replace(self, failed: str, culprit: int | None, reason: str) -> _Outcome:
        RESTARTS.labels(reason).inc()
        self._stop(grace_s=0)
        self._start()  # loads while the caller handles the outcome
        return _Outcome(failed=failed, culprit=culprit)

    def _stop(self, *, grace_s: float) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn, self._ready = None, None, False
        if process is not None:
            process.join(grace_s)
            if process.is_alive():
                process.kill()  # SIGKILL: a stalled analysis ignores anything gentler
                process.join()
            process.close()
        if conn is not None:
            conn.close()


# -- the child ---------------------------------------------------------------------------
def serve(factory: AnalyzerFactory, conn: Connection, progress: Progress) -> None:
    """The child's loop: build the analyzer once, then answer requests until told to stop."""
    # Ctrl-C (or a SIGTERM sent to the whole group) must not kill an analysis mid-batch
    # while guard finishes it: guard ends its child, which also exits once guard is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_when_orphaned(os.getppid())
    try:
        analyzer = factory()
    except Exception as exc:  # reported to the parent, which refuses to start
        message = str(exc) if isinstance(exc, ConfigurationError) else ""
        conn.send(("failed", None, f"{type(exc).__name__}: {message}".rstrip(": ")))
        return
    _watch(analyzer, progress)
    conn.send(("ready", None, int(getattr(analyzer, "max_length", 0))))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # guard is gone
            return
        if request is None:
            return
        request_id, texts, entities, threshold = request
        progress.begin(request_id)
        try:
            found = analyzer.analyze_batch(texts, [Entity(e) for e in entities], threshold)
        except Exception as exc:
            conn.send(("raised", request_id, type(exc).__name__))
            continue
        # Plain tuples: a fraction of the pickled size of dataclass instances.
        rows = [[(d.start, d.end, d.entity_type, d.score, d.recognizer) for d in f] for f in found]
        conn.send(("done", request_id, rows))


class Progress:
    """Which text of which request the child is on, and since when: in shared memory.

    Written by the child at each step, read by guard only when a deadline has
    passed, so the normal case costs no message and no wake-up per text.
    ``CLOCK_MONOTONIC`` is one clock for every process of the machine. The
    four numbers are guarded by a sequence counter (odd while the child
    writes) so a read never mixes two steps.
    """

    def __init__(self, shared: Any) -> None:
        self._shared = shared  # [sequence, request id, text index (-1: NER pass), since]
        self._next = 0

    def begin(self, request_id: int) -> None:
        """A request arrived: its batched NER pass starts now (child side)."""
        self._next = 0
        self._write(request_id, -1)

    def started(self) -> None:
        """The analyzer starts on the next text of the request (child side)."""
        self._write(self._shared[1], self._next)
        self._next += 1

    def _write(self, request_id: float, index: int) -> None:
        shared = self._shared
        shared[0] += 1
        shared[1], shared[2], shared[3] = request_id, index, time.monotonic()
        shared[0] += 1

    def read(self, request_id: int, texts: int) -> tuple[int | None, float]:
        """The text in progress (None: none, or unknown) and when its step started."""
        shared = self._shared
        for _ in range(1000):
            sequence = shared[0]
            request, index, since = shared[1], shared[2], shared[3]
            if sequence == shared[0] and not int(sequence) % 2:
                break
            time.sleep(0.0001)  # mid-write: the child finishes it in a moment
        else:  # the child is writing at every attempt: assume nothing is known
            return None, 0.0
        if int(request) != request_id:
            return None, 0.0  # the child has not reached this request
        # An index past the request means analyzer calls do not map to texts: unknown.
        return (int(index) if 0 <= index < texts else None), since


def _watch(analyzer: Analyzer, progress: Progress) -> None:
    """Report progress each time Presidio's ``AnalyzerEngine.analyze`` starts on a text.

    ``PresidioAnalyzer.analyze_batch`` runs the NER pass for the whole batch,
    then ``engine.analyze`` once per text, in order; the calls are what tell
    which text a stall belongs to. An analyzer without ``engine.analyze`` gets
    no progress, and a stall is then resolved one text per request.
    """
    engine = getattr(analyzer, "engine", None)
    analyze: Callable[..., Any] | None = getattr(engine, "analyze", None)
    if analyze is None:
        return

    def watched(*args: Any, **kwargs: Any) -> Any:
        progress.started()
        return analyze(*args, **kwargs)

    engine.analyze = watched  # type: ignore[union-attr]


def _exit_when_orphaned(parent: int) -> None:
    """End the child when guard's process is gone (kill -9 leaves no stray analysis)."""

    def check() -> None:
        while os.getppid() == parent:
            time.sleep(_ORPHAN_CHECK_S)
        os._exit(1)

    threading.Thread(target=check, name="orphan-check", daemon=True).start()
