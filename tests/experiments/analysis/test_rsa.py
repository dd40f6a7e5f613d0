"""RSA (experiments/analysis/rsa.py) against rsatoolbox and SciPy, and its known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from experiments.analysis import rsa
from leap_convrnn.errors import UserError


def _features(n: int = 12, d: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_rdm_matches_rsatoolbox_and_scipy() -> None:
    rsatoolbox = pytest.importorskip("rsatoolbox")
    x = _features()
    theirs = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method="correlation")
    np.testing.assert_allclose(rsa.rdm(x), theirs.dissimilarities[0], atol=1e-10)
    np.testing.assert_allclose(rsa.rdm(x), pdist(x, "correlation"), atol=1e-10)
    np.testing.assert_allclose(rsa.rdm(x, "euclidean"), pdist(x, "euclidean"), atol=1e-8)


@pytest.mark.parametrize("metric", ["spearman", "kendall"])
def test_comparison_matches_rsatoolbox(metric: str) -> None:
    rsatoolbox = pytest.importorskip("rsatoolbox")
    a, b = _features(seed=1), _features(seed=1) + 0.8 * _features(seed=2)
    rdm_a = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(a), method="correlation")
    rdm_b = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(b), method="correlation")
    expected = float(rsatoolbox.rdm.compare(rdm_a, rdm_b, method=metric)[0, 0])
    ours = rsa.compare_rdms(rsa.rdm(a), rsa.rdm(b), metric)
    assert ours == pytest.approx(expected, abs=1e-10)
    assert 0.0 < ours < 1.0


def test_a_model_with_itself_is_one_and_rank_invariant() -> None:
    features = {("conv1", t): torch.from_numpy(_features(seed=t)).float() for t in range(3)}
    table = rsa.similarity_table(features, features, "spearman")
    np.testing.assert_allclose(np.diag(table.values), 1.0, atol=1e-12)
    layers, steps, grid = rsa.matched_map(table)
    assert layers == ["conv1"] and steps == [0, 1, 2]
    np.testing.assert_allclose(grid, 1.0, atol=1e-12)
    # A monotone transform of the distances (scaling the features) leaves ranks alone.
    scaled = {k: 3.0 * v for k, v in features.items()}
    cross = rsa.similarity_table(features, scaled, "kendall", "euclidean")
    np.testing.assert_allclose(np.diag(cross.values), 1.0, atol=1e-12)


def test_matched_map_uses_the_last_step_of_a_feedforward_twin() -> None:
    f = {("conv1", t): torch.from_numpy(_features(seed=t)).float() for t in range(3)}
    twin = {("conv1", 0): f[("conv1", 2)]}
    _, _, grid = rsa.matched_map(rsa.similarity_table(f, twin))
    assert grid[0, 2] == pytest.approx(1.0)
    assert grid[0, 0] < 0.5


def test_constant_rdm_is_nan_and_sizes_must_agree() -> None:
    same = np.ones((5, 4))
    assert np.isnan(rsa.compare_rdms(rsa.rdm(same, "euclidean"), rsa.rdm(_features(5))))
    a = {("x", 0): torch.zeros(6, 3) + torch.arange(3.0)}
    b = {("x", 0): torch.rand(7, 3)}
    with pytest.raises(UserError, match="different numbers of stimuli"):
        rsa.similarity_table(a, b)
    with pytest.raises(UserError, match="unknown RSA metric 'pearson'; accepted: spearman"):
        rsa.compare_rdms(rsa.rdm(_features()), rsa.rdm(_features()), "pearson")
