"""Redacting a generation while it streams: release text only where no entity can cross.

A model's deltas split its output anywhere: ``maria.g@exa`` in one chunk and
``mple.com`` in the next. Redacting each delta alone would let both halves through,
so a ``StreamRedactor`` keeps the text it has not released yet (the pending text),
and on each delta analyses *context + pending* with guard's own output redaction
(``GuardEngine.redact_batch`` and ``GuardEngine.rewrite``: the same recognizers, the
same tenant policy, the same operators as ``inference.results``), where the context
is the tail of what it already released (so that a recognizer sees the words around
an entity as it would in the whole text). It then releases, redacted, only the
pending text that ends before a hold-back tail of ``hold_back`` characters, moved
back to the previous whitespace and back before any entity that would cross the
release point.

The bound, stated plainly: an entity shorter than ``hold_back`` characters is always
whole inside the window when the release point is chosen, so it is found as it would
be in the whole text and is never split. An entity *longer* than the hold-back can
be: its beginning may be released (in clear if the recognizer only matches it whole)
before its end arrives. Of guard's recognizers, those that can match such long values
are the secret ones (``API_KEY``: PEM blocks, JWTs and other high-entropy tokens from
``secrets.py`` and ``VendorSecretRecognizer``), encoded tokens (``encoded.py``:
base64/hex of PII), and, rarely, e-mail addresses (up to 254 characters). Raise
``SLUICE_GUARD__STREAM_HOLD_BACK_CHARS`` for tenants that stream such values; the
stored result on ``inference.results`` is redacted whole either way.

Also: an entity recognised only once later text arrives (a name whose cue word comes
after it, when the NER model changes its mind) can start in text already released;
the part still pending is redacted (the finding clipped to it), the released part
cannot be taken back. A text guard cannot analyse (too long for the tenant's
``max_input_chars``, analyzer error or timeout) withholds the rest of the stream:
one ``<WITHHELD:reason>`` placeholder, then nothing.

A run of text without whitespace is held until it exceeds ``max_pending_chars``,
and then released at the hold-back point (still never inside a found entity):
this caps what one stream buffers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from processors.guard.analysis_worker import ANALYZER_ERROR, ANALYZER_TIMEOUT
from processors.guard.engine import (
    BLOCK,
    INPUT_TOO_LONG,
    OUTPUT_FIELD,
    GuardEngine,
    GuardItem,
    withheld,
)
from streams.contracts.records import PiiFinding
from streams.errors import SluiceError

#: Verdict reasons under which guard gave back a placeholder instead of the text.
WITHHOLDING_REASONS = frozenset({ANALYZER_ERROR, ANALYZER_TIMEOUT, INPUT_TOO_LONG})


@dataclass(frozen=True)
class WindowAnalysis:
    """What guard found in one window of a stream.

    ``spans``: the entities' (start, end) offsets in the window, sorted and disjoint.
    ``render(start, end)``: the redacted text of ``window[start:end]``; a finding that
    crosses ``start`` or ``end`` is clipped to the slice, so no part of it is in clear.
    ``withheld``: the reason the window could not be analysed (then nothing is released).
    ``entity_types``: the entity type of each span, in the same order (for metrics).
    """

    spans: tuple[tuple[int, int], ...]
    render: Callable[[int, int], str]
    withheld: str | None = None
    entity_types: tuple[str, ...] = ()


#: Analyses one window (context + pending text) of a stream.
Analyse = Callable[[str], WindowAnalysis]


def engine_analysis(engine: GuardEngine, request_id: str, tenant_id: str) -> Analyse:
    """Windows analysed as guard analyses a model output of ``tenant_id`` (its policy)."""

    def analyse(window: str) -> WindowAnalysis:
        [inspection] = engine.redact_batch([GuardItem(request_id, tenant_id, window, OUTPUT_FIELD)])
        reason = inspection.verdict.reason
        if inspection.verdict.action == BLOCK and reason in WITHHOLDING_REASONS:
            return WindowAnalysis((), lambda _start, _end: "", withheld=reason)
        findings = sorted(inspection.findings, key=lambda f: f.start)

        def render(start: int, end: int) -> str:
            return engine.rewrite(window[start:end], _clipped(findings, start, end), tenant_id)

        return WindowAnalysis(
            tuple((f.start, f.end) for f in findings),
            render,
            entity_types=tuple(f.entity_type for f in findings),
        )

    return analyse


def _clipped(findings: list[PiiFinding], start: int, end: int) -> list[PiiFinding]:
    """The findings that touch ``[start, end)``, cut to it and made relative to ``start``."""
    out = []
    for f in findings:
        lo, hi = max(f.start, start), min(f.end, end)
        if lo < hi:
            out.append(dataclasses.replace(f, start=lo - start, end=hi - start))
    return out


class StreamClosedError(SluiceError):
    """A delta was fed to a stream that already finished (a caller's bug, not a record's)."""


class StreamRedactor:
    """One streamed generation's redaction: ``feed`` deltas, release what is safe, ``finish``.

    Not thread-safe; one per (request, attempt). ``on_redacted(entity_type)`` is told of
    each entity in the text it releases, once: where its first released character is,
    or, for one found only after its start was released, where its rest is.
    """

    def __init__(
        self,
        analyse: Analyse,
        *,
        hold_back: int = 64,
        max_pending_chars: int = 4096,
        on_redacted: Callable[[str], None] | None = None,
    ) -> None:
        if hold_back < 1 or max_pending_chars <= hold_back:
            raise ValueError("need 1 <= hold_back < max_pending_chars")
        self._analyse = analyse
        self._on_redacted = on_redacted
        # The last release cut through an entity (a long run of text): its rest, at the
        # start of the next window, is the same entity, already told.
        self._cut_entity = False
        self.hold_back = hold_back
        self.max_pending_chars = max_pending_chars
        self._context = ""  # the tail of the released text (original), for the recognizers
        self._pending = ""  # received, not released
        self.withheld: str | None = None
        self.finished = False

    @property
    def pending_chars(self) -> int:
        """How much text this stream holds back now."""
        return len(self._pending)

    def feed(self, delta: str, *, final: bool = False) -> str:
        """Take the next delta; the redacted text that is safe to release now (may be "").

        ``final``: this is the last delta; everything left is released (``finish``).
        """
        if self.finished:
            raise StreamClosedError("this stream already finished; start a new one")
        if self.withheld is not None:
            return ""
        self._pending += delta
        if final:
            return self.finish()
        if len(self._pending) <= self.hold_back:
            return ""
        window = self._context + self._pending
        analysis = self._analyse(window)
        if analysis.withheld is not None:
            return self._withhold(analysis.withheld)
        start = len(self._context)
        point = self._release_point(window, start, analysis.spans)
        if point <= start:
            return ""
        released = analysis.render(start, point)
        self._tell(analysis, start, point)
        self._context = window[max(0, point - self.hold_back) : point]
        self._pending = window[point:]
        return released

    def finish(self) -> str:
        """The redacted rest of the stream (the whole pending text); the stream is then closed."""
        if self.finished:
            return ""
        self.finished = True
        if self.withheld is not None or not self._pending:
            self._pending = ""
            return ""
        window = self._context + self._pending
        analysis = self._analyse(window)
        if analysis.withheld is not None:
            return self._withhold(analysis.withheld)
        released = analysis.render(len(self._context), len(window))
        self._tell(analysis, len(self._context), len(window))
        self._context = self._pending = ""
        return released

    def _tell(self, analysis: WindowAnalysis, start: int, end: int) -> None:
        """Tell ``on_redacted`` of the entities released with ``window[start:end]``."""
        cut = False
        for index, (span_start, span_end) in enumerate(analysis.spans):
            if span_end <= start or span_start >= end:
                continue
            cut = cut or span_end > end
            if span_start < start and self._cut_entity:
                continue  # the rest of the entity the last release cut
            if self._on_redacted is not None:
                types = analysis.entity_types
                self._on_redacted(types[index] if index < len(types) else "")
        self._cut_entity = cut

    def _withhold(self, reason: str) -> str:
        """Stop releasing this stream's text: once the placeholder, then nothing."""
        self.withheld = reason
        self._context = self._pending = ""
        return withheld(reason)

    def _release_point(self, window: str, start: int, spans: tuple[tuple[int, int], ...]) -> int:
        """Where to release up to: before the hold-back, after whitespace, outside entities."""
        cut = len(window) - self.hold_back
        point = _after_last_whitespace(window, start, cut)
        if point is None:
            # One unbroken run of text: held until it is too long to hold, then cut at the
            # hold-back point even inside an entity (its pieces are each redacted).
            return start if len(self._pending) <= self.max_pending_chars else cut
        # Spans are sorted and disjoint: moving back to one's start cannot land in another.
        for span_start, span_end in reversed(spans):
            if span_start < point < span_end:
                point = max(span_start, start)
                break
        return point


def _after_last_whitespace(text: str, start: int, end: int) -> int | None:
    """The offset just after the last whitespace in ``text[start:end]``, or None."""
    for index in range(end - 1, start - 1, -1):
        if text[index].isspace():
            return index + 1
    return None
