"""One watched signal: its reference, online detectors, test window, cooldown and alerts.

A signal is one field of a dataset (``dataset:support_tickets:first_response_minutes``)
or one measure of a model's results (``model:minilm:e2e_ms``), of one of three kinds:

* ``numeric``: values go through the reference's probability integral transform
  u in [0, 1]; ADWIN and Page-Hinkley watch u (location) and |2u - 1| (spread),
  and a binned KS test compares each full window with the reference;
* ``categorical``: the online detectors watch the share of categories the
  reference never saw (novelty); a chi-square test with PSI compares each
  window's category counts with the reference's;
* ``rate``: 0/1 indicators (a null, an error); the detectors watch the rate and
  the chi-square test compares it with the reference rate.

**One shift, one alert.** The first detector to fire raises the alert and all
online detectors of the signal restart on the new data; for ``cooldown`` values
after an alert, further detections of the signal are only counted
(``suppressed``). The window test alerts when a signal *enters* drift and stays
silent while it remains drifted; three clearly passing windows in a row
(p >= 0.01) clear the state.

A signal without a reference (no batch profile) takes its first ``warmup``
values as the reference and is silent until then.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processors.drift.online import OnlineParams, OnlineStream
from processors.drift.reference import (
    CategoricalReference,
    NumericReference,
    RateReference,
    Reference,
)
from processors.drift.twosample import TestResult, chi_square, ks_binned, psi

#: Version of the monitor's state layout; bump when ``state()`` changes shape.
STATE_VERSION = 1
_BLOCK = 64  # values per block of the "current" buffer
#: A drifted signal counts as recovered after this many windows in a row with p >= this.
RECOVERY_WINDOWS = 3
RECOVERY_P_VALUE = 0.01


@dataclass(frozen=True)
class SignalId:
    """What is watched: a dataset field or a model measure, and its kind."""

    subject_kind: str  # "dataset" or "model"
    subject: str
    name: str
    kind: str  # "numeric", "categorical" or "rate"

    @property
    def key(self) -> str:
        """Stable id: the key of the signal's state and of its alerts."""
        return f"{self.subject_kind}:{self.subject}:{self.name}"


@dataclass(frozen=True)
class Position:
    """Where a value came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def to_avro(self) -> dict[str, Any]:
        """The DriftAlert ``RecordPosition`` form."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
        }


@dataclass(frozen=True)
class MonitorParams:
    """Windows, thresholds and cooldown of every monitor (from DriftSettings)."""

    online: OnlineParams = field(default_factory=OnlineParams)
    warmup: int = 2000
    window: int = 1000
    alpha: float = 1e-4
    min_ks: float = 0.05
    min_psi: float = 0.1
    cooldown: int = 5000
    recent_blocks: int = 1


@dataclass
class _Block:
    start: Position
    values: list[Any] = field(default_factory=list)


class SignalMonitor:
    """Detectors and windows of one signal; ``observe`` returns the alerts to publish."""

    def __init__(
        self, signal: SignalId, params: MonitorParams, reference: Reference | None = None
    ) -> None:
        self.signal = signal
        self.params = params
        self.reference: Reference | None = None
        self.warmup: list[Any] = []
        self.streams: dict[str, OnlineStream] = {}
        self.window: np.ndarray[Any, np.dtype[np.int64]] = np.zeros(0, dtype=np.int64)
        self.window_start: Position | None = None
        self.blocks: list[_Block] = []
        self.seen = 0  # values observed since the signal was first seen, across restarts
        self.cooldown_until = 0
        self.in_drift = False
        self.passing = 0  # test windows in a row that passed clearly, while in drift
        self.suppressed = 0
        self.alerts = 0
        # Names this monitor's life: alert ids stay unique after a reset or a new profile.
        self.epoch = uuid.uuid4().hex[:8]
        if reference is not None:
            self._start(reference)

    # -- setup ----------------------------------------------------------------------
    def _start(self, reference: Reference) -> None:
        self.reference = reference
        online = self.params.online
        if isinstance(reference, NumericReference):
            self.streams = {"location": OnlineStream(online), "spread": OnlineStream(online)}
            bins = len(reference.edges) + 1
        elif isinstance(reference, CategoricalReference):
            novel = float(reference.shares[-1])
            self.streams = {"novelty": OnlineStream(online, novel * (1 - novel))}
            bins = reference.bins
        else:
            rate = reference.rate
            self.streams = {"rate": OnlineStream(online, rate * (1 - rate))}
            bins = 2
        self.window = np.zeros(bins, dtype=np.int64)
        self.window_start = None
        self.warmup = []

    def _reference_from_warmup(self) -> Reference:
        kind = self.signal.kind
        if kind == "numeric":
            return NumericReference.from_values(self.warmup)
        if kind == "categorical":
            return CategoricalReference.from_values(self.warmup)
        return RateReference.from_values(self.warmup)

    # -- the hot path ---------------------------------------------------------------
    def observe(self, values: list[Any], positions: list[Position]) -> list[dict[str, Any]]:
        """Feed values (floats, category strings or 0/1) with where each came from."""
        alerts: list[dict[str, Any]] = []
        start = 0
        if self.reference is None:
            need = self.params.warmup - len(self.warmup)
            self.warmup.extend(values[:need])
            self._remember(values[:need], positions[:need])
            self.seen += min(need, len(values))
            if len(self.warmup) < self.params.warmup:
                return alerts
            self._start(self._reference_from_warmup())
            start = need
        if start >= len(values):
            return alerts
        values, positions = values[start:], positions[start:]
        bins, streams = self._transform(values)
        # Split at test-window boundaries: each segment ends a window or the batch.
        index = 0
        while index < len(values):
            if self.window_start is None:
                self.window_start = positions[index]
            room = self.params.window - int(self.window.sum())
            end = min(len(values), index + room)
            alerts += self._online(values, positions, streams, index, end)
            self.window += np.bincount(bins[index:end], minlength=len(self.window))
            if int(self.window.sum()) >= self.params.window:
                alert = self._window_test(positions[end - 1])
                if alert is not None:
                    alerts.append(alert)
            index = end
        return alerts

    def _transform(self, values: list[Any]) -> tuple[np.ndarray[Any, Any], dict[str, list[float]]]:
        """Reference bin of every value, and the value each online stream sees."""
        reference = self.reference
        if isinstance(reference, NumericReference):
            array = np.asarray(values, dtype=np.float64)
            u = reference.pit(array)
            return reference.bins(array), {
                "location": u.tolist(),
                "spread": np.abs(2 * u - 1).tolist(),
            }
        if isinstance(reference, CategoricalReference):
            bins = np.fromiter((reference.bin(v) for v in values), np.int64, len(values))
            novel = (bins == len(reference.categories)).astype(np.float64)
            return bins, {"novelty": novel.tolist()}
        indicators = np.asarray(values, dtype=np.float64)
        return indicators.astype(np.int64), {"rate": indicators.tolist()}

    def _online(
        self,
        values: list[Any],
        positions: list[Position],
        streams: dict[str, list[float]],
        start: int,
        end: int,
    ) -> list[dict[str, Any]]:
        """Run every stream over values[start:end], in order of the detections they make.

        Each stream runs ahead to its next detection; the earliest detection
        across streams is handled first: counted if the signal is cooling down,
        otherwise alerted, and then every stream restarts after that value.
        """
        alerts: list[dict[str, Any]] = []
        names = list(streams)
        position = dict.fromkeys(names, start)
        pending: dict[str, tuple[int, str]] = {}
        remembered = start
        while True:
            for name in names:
                if name not in pending and position[name] < end:
                    hit = self.streams[name].run(streams[name], position[name], end)
                    position[name] = end if hit is None else hit[0] + 1
                    if hit is not None:
                        pending[name] = hit
            if not pending:
                break
            name = min(pending, key=lambda n: (pending[n][0], names.index(n)))
            index, detector = pending.pop(name)
            seen_at = self.seen + index - start + 1
            if seen_at < self.cooldown_until:
                self.suppressed += 1
                continue
            self._remember(values[remembered : index + 1], positions[remembered : index + 1])
            remembered = index + 1
            seen_before, self.seen = self.seen, seen_at
            statistic, threshold = self.streams[name].statistic(detector)
            alerts.append(
                self._alert(name, detector, statistic, threshold, None, None, positions[index])
            )
            self.seen = seen_before
            for stream in self.streams.values():
                stream.restart()
            pending.clear()
            position = dict.fromkeys(names, index + 1)
        self._remember(values[remembered:end], positions[remembered:end])
        self.seen += end - start
        return alerts

    def _window_test(self, last: Position) -> dict[str, Any] | None:
        result = self._test(self.window)
        window, start = self.window, self.window_start
        self.window = np.zeros_like(self.window)
        self.window_start = None
        if not result.drifted:
            # Leave the drifted state only after several clearly passing windows: a drifted
            # signal's window can pass by chance, and flapping would re-alert the same shift.
            if result.p_value >= RECOVERY_P_VALUE:
                self.passing += 1
                if self.passing >= RECOVERY_WINDOWS:
                    self.in_drift = False
            else:
                self.passing = 0
            return None
        self.passing = 0
        was_drifted, self.in_drift = self.in_drift, True
        if was_drifted:
            return None
        if self.seen < self.cooldown_until:
            self.suppressed += 1
            return None
        threshold = self.params.alpha
        return self._alert(
            "window",
            result.detector,
            result.statistic,
            threshold,
            result,
            (start or last, int(window.sum())),
            last,
        )

    def _test(self, window: np.ndarray[Any, np.dtype[np.int64]]) -> TestResult:
        reference = self.reference
        if isinstance(reference, NumericReference):
            return ks_binned(
                window, reference.cdf, reference.count, self.params.alpha, self.params.min_ks
            )
        if isinstance(reference, CategoricalReference | RateReference):
            return chi_square(window, reference.counts, self.params.alpha, self.params.min_psi)
        raise RuntimeError("window test without a reference")

    # -- the "current" buffer: the last few blocks of values ------------------------
    def _remember(self, values: list[Any], positions: list[Position]) -> None:
        blocks, count, index = self.blocks, len(values), 0
        while index < count:
            if not blocks or len(blocks[-1].values) >= _BLOCK:
                blocks.append(_Block(positions[index]))
                if len(blocks) > self.params.recent_blocks + 1:
                    del blocks[0]
            last = blocks[-1].values
            take = min(_BLOCK - len(last), count - index)
            last.extend(values[index : index + take])
            index += take

    def current(self) -> tuple[dict[str, Any], Position | None, int]:
        """Summary of the recent values, where they start, and how many there are."""
        values = [v for block in self.blocks for v in block.values]
        start = self.blocks[0].start if self.blocks else None
        return summarize(self.signal.kind, values, self.reference), start, len(values)

    # -- alerts ---------------------------------------------------------------------
    def _alert(  # noqa: PLR0917 (private, called twice)
        self,
        stream: str,
        detector: str,
        statistic: float,
        threshold: float,
        test: TestResult | None,
        window: tuple[Position, int] | None,
        end: Position,
    ) -> dict[str, Any]:
        reference = self.reference
        assert reference is not None  # noqa: S101 (alerts only fire after the warm-up)
        current, recent_start, recent_size = self.current()
        start, size = window if window is not None else (recent_start or end, recent_size)
        reference_summary = reference.summary()
        self.alerts += 1
        alert = {
            "alert_id": f"{self.signal.key}#{self.epoch}#{self.seen}",
            "signal": self.signal.key,
            "subject_kind": self.signal.subject_kind,
            "subject": self.signal.subject,
            "signal_name": self.signal.name,
            "signal_kind": self.signal.kind,
            "stream": stream,
            "detector": detector,
            "statistic": _finite(statistic),
            "threshold": _finite(threshold),
            "p_value": None if test is None else _finite(test.p_value),
            "effect": None if test is None else _finite(test.effect),
            "window_start": start.to_avro(),
            "window_end": end.to_avro(),
            "window_size": size,
            "reference": _summary_avro(reference_summary),
            "current": _summary_avro(current),
            "severity": severity(self.signal.kind, reference_summary, current, reference),
            "values_seen": self.seen,
            "suppressed": self.suppressed,
            "reference_source": reference.source,
        }
        self.cooldown_until = self.seen + self.params.cooldown
        self.suppressed = 0
        # Whoever fired, the signal now differs from its reference: the window test stays
        # silent until it sees the signal recover.
        self.in_drift = True
        self.passing = 0
        return alert

    # -- checkpoint -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart as if nothing happened."""
        reference = self.reference
        return {
            "v": STATE_VERSION,
            "signal": [
                self.signal.subject_kind,
                self.signal.subject,
                self.signal.name,
                self.signal.kind,
            ],
            "reference": None if reference is None else reference.state(),
            "warmup": self.warmup,
            "streams": {name: s.state() for name, s in self.streams.items()},
            "window": self.window.tolist(),
            "window_start": None
            if self.window_start is None
            else _position_state(self.window_start),
            "blocks": [[_position_state(b.start), b.values] for b in self.blocks],
            "seen": self.seen,
            "cooldown_until": self.cooldown_until,
            "in_drift": self.in_drift,
            "passing": self.passing,
            "suppressed": self.suppressed,
            "alerts": self.alerts,
            "epoch": self.epoch,
        }

    @classmethod
    def from_state(cls, params: MonitorParams, state: dict[str, Any]) -> SignalMonitor:
        """Inverse of ``state``; raises ValueError on a layout this code does not know."""
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"monitor state version {state.get('v')!r}, expected {STATE_VERSION}")
        signal = SignalId(*state["signal"])
        monitor = cls(signal, params)
        raw = state["reference"]
        if raw is not None:
            monitor.reference = _reference_from_state(signal.kind, raw)
            monitor.streams = {
                name: OnlineStream.from_state(params.online, s)
                for name, s in state["streams"].items()
            }
        monitor.warmup = list(state["warmup"])
        monitor.window = np.asarray(state["window"], dtype=np.int64)
        ws = state["window_start"]
        monitor.window_start = None if ws is None else Position(*ws)
        monitor.blocks = [
            _Block(Position(*start), list(values)) for start, values in state["blocks"]
        ]
        monitor.seen = int(state["seen"])
        monitor.cooldown_until = int(state["cooldown_until"])
        monitor.in_drift = bool(state["in_drift"])
        monitor.passing = int(state["passing"])
        monitor.suppressed = int(state["suppressed"])
        monitor.alerts = int(state["alerts"])
        monitor.epoch = str(state.get("epoch") or monitor.epoch)  # added to layout 1 later
        return monitor


def _reference_from_state(kind: str, state: dict[str, Any]) -> Reference:
    if kind == "numeric":
        return NumericReference.from_state(state)
    if kind == "categorical":
        return CategoricalReference.from_state(state)
    return RateReference.from_state(state)


def _position_state(position: Position) -> list[Any]:
    return [position.topic, position.partition, position.offset, position.timestamp_ms]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e308


def summarize(kind: str, values: list[Any], reference: Reference | None) -> dict[str, Any]:
    """Count, mean, std and median (numbers and rates), or category shares."""
    if not values:
        return {"count": 0}
    if kind == "categorical":
        tally: dict[str, int] = {}
        for value in values:
            tally[value] = tally.get(value, 0) + 1
        top = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        return {"count": len(values), "top": {k: n / len(values) for k, n in top}}
    array = np.asarray(values, dtype=np.float64)
    result: dict[str, Any] = {"count": len(values), "mean": float(array.mean())}
    if kind == "numeric":
        result["std"] = float(array.std(ddof=1)) if len(values) > 1 else 0.0
        result["p50"] = float(np.median(array))
    return result


def severity(
    kind: str, reference: dict[str, Any], current: dict[str, Any], ref: Reference | None
) -> str:
    """``critical`` for a large effect, ``warning`` otherwise.

    Judged on the recent values (the last 65-128): numbers whose mean moved by at
    least half a reference standard deviation, or whose standard deviation grew or
    shrank by half; categories whose PSI is >= 0.25 (the usual "significant shift"
    line); rates that moved by >= 0.1.
    """
    if current.get("count", 0) == 0:
        return "warning"
    if kind == "numeric":
        std = reference.get("std") or 0.0
        moved = abs(current["mean"] - reference["mean"]) >= 0.5 * std if std > 0 else False
        ratio = (current.get("std") or 0.0) / std if std > 0 else 1.0
        return "critical" if moved or ratio >= 1.5 or ratio <= 1 / 1.5 else "warning"
    if kind == "categorical" and isinstance(ref, CategoricalReference):
        counts = np.zeros(ref.bins, dtype=np.int64)
        for name, share in current["top"].items():
            counts[ref.bin(name)] += round(share * current["count"])
        return "critical" if psi(ref.shares, counts) >= 0.25 else "warning"
    return "critical" if abs(current["mean"] - reference.get("mean", 0.0)) >= 0.1 else "warning"


def _summary_avro(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": int(summary.get("count", 0)),
        "mean": summary.get("mean"),
        "std": summary.get("std"),
        "p50": summary.get("p50"),
        "top": {k: float(v) for k, v in (summary.get("top") or {}).items()},
    }
