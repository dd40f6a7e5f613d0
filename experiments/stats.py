"""Summary statistics for results over tasks and seeds: Student-t means and CIs, paired
differences, and rliable's IQM and probability of improvement."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


LOWER_IS_BETTER = frozenset({"auc", "loss", "error", "train_error"})
"""Figures for which a smaller value is better (everything else: larger is better)."""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` (`auc`, `accuracy`, `loss`, ...) is better."""
    return metric not in LOWER_IS_BETTER


def paired_difference(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Mean of the pairwise differences `values - reference` and the half-width of its
    Student-t confidence interval (the paired t interval): pairing each task's two
    figures removes the task-difficulty variance an unpaired comparison carries."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired figures need the same shape, got {a.shape} and {b.shape}")
    return mean_ci((a - b).tolist(), confidence)


def interquartile_mean(scores: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """The interquartile mean (IQM): the mean of the middle 50% of the scores, a 25%
    trimmed mean (Agarwal et al., NeurIPS 2021, "Deep RL at the Edge of the Statistical
    Precipice"; scipy's `trim_mean(x, 0.25)` over the flattened scores when `axis` is
    None). Over `axis` (a tuple of axes: flattened together) for batched bootstraps."""
    data = np.asarray(scores, dtype=np.float64)
    if axis is None:
        data, axis = data.reshape(-1), 0
    if isinstance(axis, tuple):
        keep = [d for d in range(data.ndim) if d not in axis]
        data = data.transpose(*keep, *axis).reshape(*(data.shape[d] for d in keep), -1)
        axis = data.ndim - 1
    data = np.sort(np.moveaxis(data, axis, -1), axis=-1)
    n = data.shape[-1]
    cut = int(0.25 * n)
    return data[..., cut : n - cut].mean(axis=-1)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """P(X > Y): for each task, the probability that a run of X scores above a run of Y
    (ties count one half: the Mann-Whitney U statistic over n_x * n_y), averaged over
    tasks (Agarwal et al. 2021, Sec. 4). `scores_*` are (..., runs, tasks); leading axes
    are batch axes (bootstrap samples)."""
    x = np.asarray(scores_x, dtype=np.float64)[..., :, None, :]
    y = np.asarray(scores_y, dtype=np.float64)[..., None, :, :]
    wins = (x > y).mean(axis=(-3, -2)) + 0.5 * (x == y).mean(axis=(-3, -2))
    return np.asarray(wins.mean(axis=-1))


@dataclass(frozen=True)
class Aggregate:
    """Aggregate figures for one method (Agarwal et al. 2021): the interquartile mean with
    its stratified-bootstrap CI, and the probability that the method improves on the
    reference (with its CI), oriented so that "improves" means "is better"."""

    iqm: float
    iqm_low: float
    iqm_high: float
    improvement: float
    improvement_low: float
    improvement_high: float


def _resample(matrix: np.ndarray, tasks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Bootstrap samples of a (runs x tasks) matrix: the tasks drawn `tasks` (reps x T),
    and within each drawn task its runs drawn `rows` (reps x runs x T: stratified)."""
    return matrix[rows, tasks[:, None, :]]


def aggregates(
    scores: Mapping[str, np.ndarray],
    reference: str,
    higher_better: bool,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    task_bootstrap: bool = True,
) -> dict[str, Aggregate]:
    """IQM and probability of improvement over `reference` for each method's score matrix
    (replicates x tasks; every matrix has the same tasks, column for column), with
    percentile CIs from rliable's stratified bootstrap: within each task, each method's
    replicates (training seeds) are resampled independently; with `task_bootstrap` the
    tasks are resampled too (one draw of tasks shared by all methods), since held-out tasks
    are a sample of the family's tasks (rliable resamples tasks for the IQM only when
    asked, and never for the probability of improvement)."""
    sign = 1.0 if higher_better else -1.0
    oriented = {name: sign * np.asarray(m, dtype=np.float64) for name, m in scores.items()}
    num_tasks = oriented[reference].shape[1]
    rng = np.random.default_rng(seed)
    if task_bootstrap:
        tasks = rng.integers(0, num_tasks, size=(reps, num_tasks))
    else:
        tasks = np.broadcast_to(np.arange(num_tasks), (reps, num_tasks))
    samples = {}
    for name, matrix in oriented.items():
        rows = rng.integers(0, matrix.shape[0], size=(reps, matrix.shape[0], num_tasks))
        samples[name] = _resample(matrix, tasks, rows)
    tail = (1 - confidence) / 2 * 100
    result = {}
    for name, matrix in oriented.items():
        boot_iqm = interquartile_mean(samples[name], axis=(1, 2))
        boot_prob = probability_of_improvement(samples[name], samples[reference])
        iqm_low, iqm_high = sorted(sign * np.percentile(boot_iqm, [tail, 100 - tail]))
        prob_low, prob_high = np.percentile(boot_prob, [tail, 100 - tail])
        result[name] = Aggregate(
            iqm=sign * float(interquartile_mean(matrix)),
            iqm_low=float(iqm_low),
            iqm_high=float(iqm_high),
            improvement=float(probability_of_improvement(matrix, oriented[reference])),
            improvement_low=float(prob_low),
            improvement_high=float(prob_high),
        )
    return result
