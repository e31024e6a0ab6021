"""Windowed two-sample tests against a reference: KS for numbers, chi-square and PSI for categories.

Both tests work on counts per reference bin, never on raw values: a window is a
vector of at most a hundred integers, cheap to keep, to test and to checkpoint.

* **KS (binned).** The reference's bins are its distinct quantiles, with the
  exact reference CDF at each edge. The statistic is the largest gap between the
  window's CDF and the reference's at those edges, which is the two-sample KS
  statistic restricted to the edges: never larger than the exact one, so the
  p-value (Kolmogorov distribution, effective size n·m/(n+m)) is conservative.
  That is what makes it valid on discrete data such as 1-5 scores, where the
  usual KS p-value is wrong.
* **Chi-square + PSI.** A test of homogeneity between the reference's counts
  and the window's (both are samples). PSI smooths both with half a count per
  bin, so that a category never seen in the reference has a finite, large
  contribution instead of an infinite one.

An alert needs both a small p-value and a material effect (KS distance or PSI
above a floor): with large windows, a tiny, harmless difference is
"significant", and a detector that reports it cries wolf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

Counts = NDArray[np.int64]
Floats = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TestResult:
    """Outcome of one window test."""

    detector: str  # "ks" or "chi_square"
    statistic: float
    p_value: float
    effect: float  # KS distance, or PSI
    drifted: bool


def ks_binned(
    window: Counts, reference_cdf: Floats, reference_size: int, alpha: float, min_distance: float
) -> TestResult:
    """KS test of a window (counts per reference bin) against the reference CDF at the edges.

    ``window[k]`` counts values in (edge[k-1], edge[k]]; the last bin holds values
    above the reference maximum. ``reference_cdf[k]`` is F_ref(edge[k]).
    """
    n = int(window.sum())
    if n == 0:
        return TestResult("ks", 0.0, 1.0, 0.0, False)
    window_cdf = np.cumsum(window[:-1]) / n
    distance = float(np.max(np.abs(window_cdf - reference_cdf)))
    # Above the reference maximum the reference CDF is 1 and the window's is < 1.
    distance = max(distance, float(window[-1]) / n)
    effective = n * reference_size / (n + reference_size) if reference_size else float(n)
    p_value = float(special.kolmogorov(math.sqrt(effective) * distance)) if distance > 0 else 1.0
    return TestResult(
        "ks", distance, p_value, distance, p_value < alpha and distance >= min_distance
    )


def smoothed_shares(counts: Counts, pseudo: float = 0.5) -> Floats:
    """Shares with ``pseudo`` counts per bin, so that no bin has probability zero."""
    total = float(counts.sum()) + pseudo * len(counts)
    shares: Floats = ((counts + pseudo) / total).astype(np.float64)
    return shares


def psi(reference_shares: Floats, window: Counts) -> float:
    """Population stability index of a window against reference shares (both smoothed)."""
    current = smoothed_shares(window)
    return float(np.sum((current - reference_shares) * np.log(current / reference_shares)))


def chi_square(window: Counts, reference: Counts, alpha: float, min_psi: float) -> TestResult:
    """Chi-square test of homogeneity (reference counts vs window counts), PSI as the effect.

    A two-sample test, not goodness of fit: a reference learnt from a few
    thousand values is a sample too, and treating its shares as exact would
    make its noise look like drift.
    """
    n = int(window.sum())
    if n == 0 or int(reference.sum()) == 0:
        return TestResult("chi_square", 0.0, 1.0, 0.0, False)
    table = np.vstack([reference, window]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return TestResult("chi_square", 0.0, 1.0, 0.0, False)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    p_value = float(stats.chi2.sf(statistic, table.shape[1] - 1))
    index = psi(smoothed_shares(reference), window)
    return TestResult("chi_square", statistic, p_value, index, p_value < alpha and index >= min_psi)
