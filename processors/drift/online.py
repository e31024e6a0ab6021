"""The online detectors of one value stream: ADWIN and river's Page-Hinkley, updated per value.

Each stream gets values in [0, 1] (a probability integral transform or an
indicator), so one set of thresholds fits every field, whatever its unit.

Page-Hinkley is river's own class. Its state is five plain attributes and a
running mean, which river keeps as ordinary Python attributes; they are
checkpointed by name, together with river's version. On restore, a detector is
rebuilt only if every attribute still exists; if river renamed one (a new
version), the restore fails loudly instead of silently running a detector with
half its state (pickle would not catch that, and may not load at all across
versions). ADWIN is ``processors.drift.adwin``: river runs it in Rust,
without a way to read its window back.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from river import drift, stats

from processors.drift.adwin import Adwin
from streams.errors import ConfigurationError

#: The river whose Page-Hinkley attributes a checkpoint holds.
RIVER_VERSION = version("river")

_PH_ATTRIBUTES = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")


class StateVersionError(ConfigurationError, ValueError):
    """A checkpoint was written by a detector layout this code cannot read."""


@dataclass(frozen=True)
class OnlineParams:
    """Thresholds of the online detectors (see DriftSettings for the reasoning)."""

    adwin_delta: float = 1e-4
    adwin_clock: int = 32
    ph_delta: float = 0.03
    ph_threshold: float = 20.0
    ph_alpha: float = 1.0
    ph_min_instances: int = 100


#: Variance of a uniform [0, 1] value: what a stream carries under no drift when its values
#: are a probability integral transform. Page-Hinkley's threshold is scaled by the stream's
#: variance relative to this, which keeps its false-alarm rate (a function of
#: 2·delta·threshold / variance) the same for 0/1 streams.
UNIFORM_VARIANCE = 1 / 12


def new_page_hinkley(params: OnlineParams, scale: float = 1.0) -> drift.PageHinkley:
    """A two-sided Page-Hinkley test on a [0, 1] stream whose variance is ``scale`` x 1/12."""
    return drift.PageHinkley(
        min_instances=params.ph_min_instances,
        delta=params.ph_delta,
        threshold=params.ph_threshold * scale,
        alpha=params.ph_alpha,
        mode="both",
    )


def page_hinkley_state(detector: drift.PageHinkley) -> dict[str, Any]:
    """The attributes of river's PageHinkley that carry its history."""
    mean = detector._x_mean
    return {
        "river": RIVER_VERSION,
        "n": mean.n,
        "mean": mean._mean,
        "detected": bool(detector.drift_detected),
        **{name: getattr(detector, name) for name in _PH_ATTRIBUTES},
    }


def page_hinkley_from_state(
    params: OnlineParams, state: dict[str, Any], scale: float
) -> drift.PageHinkley:
    """Rebuild river's PageHinkley from ``page_hinkley_state``."""
    detector = new_page_hinkley(params, scale)
    missing = [
        n for n in (*_PH_ATTRIBUTES, "_x_mean", "_drift_detected") if not hasattr(detector, n)
    ]
    if missing:
        raise StateVersionError(
            f"river {RIVER_VERSION}'s PageHinkley has no {', '.join(missing)} "
            f"(state written with river {state.get('river')}); drop the drift state "
            "(`sluice drift reset`) or pin the river version that wrote it"
        )
    mean = stats.Mean()
    mean.n = float(state["n"])
    mean._mean = float(state["mean"])
    detector._x_mean = mean
    detector._drift_detected = bool(state["detected"])
    for name in _PH_ATTRIBUTES:
        setattr(detector, name, float(state[name]))
    return detector


class OnlineStream:
    """ADWIN and Page-Hinkley on one stream of values in [0, 1]."""

    __slots__ = ("adwin", "calibration", "page_hinkley", "params", "scale")

    def __init__(self, params: OnlineParams, variance: float = UNIFORM_VARIANCE) -> None:
        self.params = params
        self.scale = _scale(variance)
        self.adwin = Adwin(delta=params.adwin_delta, clock=params.adwin_clock)
        self.page_hinkley = new_page_hinkley(params, self.scale)
        #: [n, sum, sum of squares] of the values since a restart, until Page-Hinkley's
        #: threshold is set from them; None when calibrated.
        self.calibration: list[float] | None = None

    def update(self, value: float) -> str | None:
        """Feed one value; the name of the detector that fired, if one did."""
        if self.calibration is not None:
            self._calibrate(value)
        fired = None
        if self.adwin.update(value):
            fired = "adwin"
        page_hinkley = self.page_hinkley
        page_hinkley.update(value)  # type: ignore[no-untyped-call]
        if page_hinkley.drift_detected and fired is None:
            fired = "page_hinkley"
        return fired

    def run(self, series: list[float], start: int, end: int) -> tuple[int, str] | None:
        """Feed ``series[start:end]`` until a detector fires: (index, detector), or None.

        The same as calling ``update`` per value, in one tight loop: the drift
        processor feeds each stream a batch at a time.
        """
        index = start
        while index < end and self.calibration is not None:
            fired = self.update(series[index])
            if fired is not None:
                return index, fired
            index += 1
        adwin_update = self.adwin.update
        page_hinkley = self.page_hinkley
        ph_update = page_hinkley.update
        while index < end:
            value = series[index]
            if adwin_update(value):
                ph_update(value)  # type: ignore[no-untyped-call]
                return index, "adwin"
            ph_update(value)  # type: ignore[no-untyped-call]
            if page_hinkley._drift_detected:
                return index, "page_hinkley"
            index += 1
        return None

    def restart(self) -> None:
        """Forget the past: after an alert, the new regime is the baseline.

        The new regime's variance is not the reference's (a new category turns a
        0/1 stream that was always 0 into a noisy one), so Page-Hinkley's
        threshold is set again from the first values after the restart, before
        its first test (it tests only after ``min_instances`` values).
        """
        self.adwin = Adwin(delta=self.params.adwin_delta, clock=self.params.adwin_clock)
        self.page_hinkley = new_page_hinkley(self.params, self.scale)
        self.calibration = [0.0, 0.0, 0.0]

    def _calibrate(self, value: float) -> None:
        calibration = self.calibration
        assert calibration is not None  # noqa: S101 (called only while calibrating)
        calibration[0] += 1
        calibration[1] += value
        calibration[2] += value * value
        n = calibration[0]
        if n >= self.params.ph_min_instances:
            mean = calibration[1] / n
            self.scale = _scale(calibration[2] / n - mean * mean)
            self.page_hinkley.threshold = self.params.ph_threshold * self.scale
            self.calibration = None

    def statistic(self, detector: str) -> tuple[float, float]:
        """(statistic, threshold) of a detector that just fired, for the alert."""
        if detector == "adwin":
            cut = self.adwin.last_cut
            return (abs(cut[1] - cut[0]), cut[3]) if cut else (0.0, 0.0)
        ph = self.page_hinkley
        rise = ph._sum_increase - ph._min_increase
        fall = ph._max_decrease - ph._sum_decrease
        return max(rise, fall), self.params.ph_threshold * self.scale

    def state(self) -> dict[str, Any]:
        """JSON-ready state of both detectors."""
        return {
            "scale": self.scale,
            "calibration": self.calibration,
            "adwin": self.adwin.state(),
            "ph": page_hinkley_state(self.page_hinkley),
        }

    @classmethod
    def from_state(cls, params: OnlineParams, state: dict[str, Any]) -> OnlineStream:
        """Inverse of ``state``."""
        stream = cls(params, float(state["scale"]) * UNIFORM_VARIANCE)
        stream.adwin = Adwin.from_state(state["adwin"])
        stream.page_hinkley = page_hinkley_from_state(params, state["ph"], stream.scale)
        stream.calibration = state["calibration"]
        return stream


#: Smallest variance a stream is credited with. A 0/1 stream of a rare event (1% errors) has
#: almost no variance, and a threshold scaled to it would fire on two errors in a row; at
#: 0.05 the threshold needs about a dozen net events (measured: no false alarm in 2M values
#: of a 1% stream), and a new category at 15% still alerts within ~100 values.
MIN_VARIANCE = 0.05


def _scale(variance: float) -> float:
    return max(variance, MIN_VARIANCE) / UNIFORM_VARIANCE
