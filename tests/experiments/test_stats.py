"""Statistics against independent computations: the paired t interval against scipy, the
IQM and the probability of improvement against rliable (point estimates exactly, the
stratified-bootstrap intervals within Monte-Carlo error)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from experiments.stats import (
    aggregates,
    interquartile_mean,
    mean_ci,
    paired_difference,
    probability_of_improvement,
)


def test_mean_ci_is_the_student_t_interval():
    values = np.random.default_rng(0).normal(size=15)
    mean, half = mean_ci(values.tolist())
    low, high = stats.t.interval(0.95, 14, loc=values.mean(), scale=stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx((low, high))


def test_paired_difference_is_scipys_paired_t_interval():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(size=20) * 5  # a large task effect, shared by both methods
    a = difficulty + rng.normal(size=20)
    b = difficulty + 0.5 + rng.normal(size=20)
    diff, half = paired_difference(a.tolist(), b.tolist())
    low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (diff - half, diff + half) == pytest.approx((low, high))
    unpaired_low, unpaired_high = stats.ttest_ind(a, b).confidence_interval(0.95)
    assert half < (unpaired_high - unpaired_low) / 2 / 2  # pairing removes the task variance


def test_point_estimates_equal_rliables():
    rliable = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(3, 11)), rng.normal(size=(4, 11)) + 0.3
    y[:, 0] = x[0, 0]  # ties count one half
    assert interquartile_mean(x) == pytest.approx(rliable.aggregate_iqm(x), abs=1e-12)
    assert probability_of_improvement(y, x) == pytest.approx(
        rliable.probability_of_improvement(y, x), abs=1e-12
    )


def test_bootstrap_intervals_agree_with_rliables():
    library = pytest.importorskip("rliable.library")
    from rliable import metrics

    rng = np.random.default_rng(3)
    scores = {"a": rng.normal(size=(3, 8)), "b": rng.normal(size=(3, 8)) + 0.4}
    ours = aggregates(scores, "a", higher_better=True, reps=4000, task_bootstrap=False)
    np.random.seed(0)  # rliable draws from NumPy's global generator
    _, iqm_ci = library.get_interval_estimates(
        scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=2000
    )
    _, prob_ci = library.get_interval_estimates(
        {"b": (scores["b"], scores["a"])},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=1000,
    )
    for name in scores:
        low, high = iqm_ci[name][:, 0]
        assert ours[name].iqm_low == pytest.approx(low, abs=0.08)
        assert ours[name].iqm_high == pytest.approx(high, abs=0.08)
    low, high = prob_ci["b"][:, 0]
    assert ours["b"].improvement_low == pytest.approx(low, abs=0.05)
    assert ours["b"].improvement_high == pytest.approx(high, abs=0.05)


def test_lower_is_better_figures_are_oriented():
    rng = np.random.default_rng(4)
    worse = rng.normal(size=(2, 10)) + 1.0  # a loss: larger is worse
    better = worse - 10.0
    result = aggregates({"ref": worse, "new": better}, "ref", higher_better=False, reps=500)
    assert result["new"].improvement == 1.0 and result["new"].improvement_low == 1.0
    assert result["new"].iqm == pytest.approx(interquartile_mean(better))
    assert result["new"].iqm_low <= result["new"].iqm <= result["new"].iqm_high
    assert result["ref"].improvement == 0.5
