"""Summary statistics for results over tasks and seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean.

    With fewer than two values the half-width is NaN (no interval can be given).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan
    sem = float(data.std(ddof=1) / math.sqrt(data.size))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, data.size - 1) * sem)


def format_ci(mean: float, half: float, digits: int = 3) -> str:
    """'0.512 ± 0.034' (or just the mean when there is no interval)."""
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def mean_ci_by_step(
    curves: Sequence[Sequence[tuple[int, float]]], confidence: float = 0.95
) -> list[tuple[int, float, float, int]]:
    """Per-step mean and CI half-width over several learning curves (one per seed).

    Each curve is a list of (step, value) pairs (a step logged twice, as after a resume,
    counts with its last value); a step counts the curves that have it. Returns (step,
    mean, half-width, number of curves) in step order; the half-width is NaN where fewer
    than two curves reach the step.
    """
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in dict(curve).items():
            by_step.setdefault(int(step), []).append(float(value))
    return [
        (step, *mean_ci(by_step[step], confidence), len(by_step[step])) for step in sorted(by_step)
    ]


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (NaN if none is): a metric some tasks lack,
    such as the return of episodes that did not finish within an inner loop."""
    data = np.asarray(values, dtype=np.float64)
    kept = data[~np.isnan(data)]
    return float(kept.mean()) if kept.size else math.nan
