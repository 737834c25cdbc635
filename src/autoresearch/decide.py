"""The decision to keep a trial: a pure function of figures, the best, and the policy."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from autoresearch.records import Status, Trial, stdev


def better(value: float, best: float, minimize: bool, min_delta: float = 0.0) -> bool:
    """True iff `value` beats `best` by strictly more than `min_delta` in the goal's direction.
    Ties are not improvements."""
    gain = (best - value) if minimize else (value - best)
    # a gain equal to the bar is not more than it, however the subtraction rounds
    # (0.4 - 0.3 = 0.10000000000000003, 0.5 - 0.4 = 0.09999999999999998)
    return gain > min_delta and not (min_delta > 0 and math.isclose(gain, min_delta, rel_tol=1e-9))


def why_not(value: float, best: float, bar: float, minimize: bool) -> str:
    """Why `value` is not kept against `best`, in a few words."""
    if value == best:
        return f"equal to the best ({best:.6g})"
    if better(best, value, minimize):
        return f"{value:.6g}, worse than the best {best:.6g}"
    return f"{value:.6g} vs best {best:.6g}: better by no more than the bar {bar:.3g}"


def noise(values: Sequence[float]) -> float:
    """Run-to-run noise of a metric: the sample standard deviation of repeated runs (0 if one)."""
    return stdev(list(values)) if len(values) >= 2 else 0.0


def pooled_noise(groups: Sequence[Sequence[float]]) -> float:
    """Run-to-run noise from several sets of repeated runs (each of one code at several seeds):
    the pooled standard deviation sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)); 0 with no repeats.
    Pooling gives the estimate more degrees of freedom than the baseline's runs alone, so that
    an unluckily small first estimate does not leave the bar near zero for long."""
    used = [g for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in used)
    if dof == 0:
        return 0.0
    try:
        return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in used) / dof)
    except OverflowError:  # (variances past float's end: pooled scaled to the largest deviation)
        devs = [stdev(list(g)) for g in used]
        top = max(devs)
        if not math.isfinite(top):
            return top
        return top * math.sqrt(sum((len(g) - 1) * (d / top) ** 2 for g, d in zip(used, devs, strict=True)) / dof)


def threshold(min_delta: float | str, measured_noise: float) -> float:
    """The bar a candidate must clear: the configured min_delta, or twice the noise for 'auto'."""
    if min_delta == "auto":
        return 2.0 * measured_noise
    return float(min_delta)


def noise_groups(trials: Iterable[Trial], metric: str) -> list[list[float]]:
    """The repeated runs the noise is pooled over: the baseline's and each kept trial's (the code
    later trials are measured against), not a discarded one's: a change that made the metric
    swing from seed to seed would raise the bar for the rest of the tag."""
    groups = [[r[metric] for r in t.repeats if metric in r] for t in trials if t.status is Status.KEEP]
    return [g for g in groups if len(g) > 1]
