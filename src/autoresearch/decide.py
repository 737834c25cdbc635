"""The decision to keep a trial: a pure function of figures, the best, and the policy."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def better(value: float, best: float, minimize: bool, min_delta: float = 0.0) -> bool:
    """True iff `value` beats `best` by strictly more than `min_delta` in the goal's direction.
    Ties are not improvements."""
    gain = (best - value) if minimize else (value - best)
    return gain > min_delta


def noise(values: Sequence[float]) -> float:
    """Run-to-run noise of a metric: the sample standard deviation of repeated runs (0 if one)."""
    return statistics.stdev(values) if len(values) >= 2 else 0.0


def threshold(min_delta: float | str, measured_noise: float) -> float:
    """The bar a candidate must clear: the configured min_delta, or twice the noise for 'auto'."""
    if min_delta == "auto":
        return 2.0 * measured_noise
    return float(min_delta)
