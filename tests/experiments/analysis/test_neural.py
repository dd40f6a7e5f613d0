"""Neural fits (experiments/analysis/neural.py): ridge against scikit-learn, the noise
ceiling against its closed form, and the known answer: responses made from one layer's
features are best fit by that layer, at the R² their noise level implies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import models
from experiments.analysis import neural
from leap_convrnn.errors import UserError
from models.features import extract_features


def test_ridge_fold_matches_sklearn_ridgecv_per_target() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    for n, d in ((40, 10), (30, 100)):  # more images than features, and fewer
        x = rng.normal(size=(n, d)) * 3 + 1
        noise = rng.normal(size=(n, 4)) * np.array([0.1, 1.0, 10.0, 100.0])
        y = x @ rng.normal(size=(d, 4)) + noise
        x_test = rng.normal(size=(7, d))
        alphas = np.logspace(-3, 4, 12)
        ours, chosen = neural._fit_fold(x, y, x_test, alphas)
        theirs = linear_model.RidgeCV(alphas=alphas, alpha_per_target=True).fit(x, y)
        np.testing.assert_allclose(chosen, theirs.alpha_)
        np.testing.assert_allclose(ours, theirs.predict(x_test), atol=1e-9)


def test_noise_ceiling_is_the_reliability_of_the_mean() -> None:
    rng = np.random.default_rng(1)
    images, neurons, repeats = 3000, 4, 6
    noise_var = np.array([0.5, 2.0, 6.0, 30.0])  # per repetition; signal variance is 1
    signal = rng.normal(size=(images, neurons))
    reps = signal + rng.normal(size=(repeats, images, neurons)) * np.sqrt(noise_var)
    ceiling = neural.noise_ceiling(reps[..., None], splits=10)[:, 0]
    expected = 1.0 / (1.0 + noise_var / repeats)  # variance explained in the mean response
    np.testing.assert_allclose(ceiling, expected, atol=0.03)
    np.testing.assert_allclose(
        neural.noise_ceiling(reps[..., None], splits=10, metric="pearson")[:, 0],
        np.sqrt(expected),
        atol=0.03,
    )


@pytest.fixture(scope="module")
def layer_features() -> dict[tuple[str, int], np.ndarray]:
    """Features of a tiny conv4's four blocks on 400 random images, average-pooled (8 each)."""
    torch.manual_seed(0)
    model = models.build("conv4", (1, 16, 16), 2, width=8).eval()
    images = torch.rand(400, 1, 16, 16)
    return {k: v.numpy() for k, v in extract_features(model, images, pool=1).items()}


def _responses(
    features: np.ndarray, neurons: int, explained: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A linear map of `features` plus noise such that the map explains `explained` of
    each neuron's variance; returns (signal, noise scale)."""
    z = (features - features.mean(0)) / (features.std(0) + 1e-12)
    signal = z @ rng.normal(size=(z.shape[1], neurons))
    signal /= signal.std(0)
    return signal, np.sqrt((1.0 - explained) / explained)


def _held_out_r2(explained: float, features: int, images: int, folds: int = 5) -> float:
    """The R² a least-squares map fit on one fold's training images reaches on held-out
    images: the share `explained`, less the estimation error (1 - share) d / (n - d)."""
    train = images * (folds - 1) // folds
    return explained - (1.0 - explained) * features / (train - features)


def test_known_answer_best_layer_and_r2(layer_features: dict) -> None:
    rng = np.random.default_rng(2)
    explained = (0.7, 0.5)
    sources = (("block1", 0), ("block3", 0))  # bin 0 is made from block1, bin 1 from block3
    responses = np.empty((400, 8, 2))
    for b, (key, share) in enumerate(zip(sources, explained, strict=True)):
        signal, scale = _responses(layer_features[key], 8, share, rng)
        responses[:, :, b] = signal + scale * rng.normal(size=signal.shape)
    data = neural.NeuralData("synthetic", responses)
    fit = neural.fit_neural(layer_features, data, "r2", folds=5)
    best = fit.best()
    assert [(layer, step) for _, layer, step, _ in best] == list(sources)
    for (_, _, _, r2), share in zip(best, explained, strict=True):
        assert r2 == pytest.approx(_held_out_r2(share, 8, 400), abs=0.05)
    medians = fit.median_map()
    assert medians[("block1", 0)][0] > medians[("block4", 0)][0] + 0.05


def test_known_answer_with_repetitions_reaches_the_ceiling(layer_features: dict) -> None:
    rng = np.random.default_rng(3)
    repeats, explained = 4, 0.6  # the mean of 4 repetitions: 60% of its variance is signal
    signal, scale = _responses(layer_features[("block2", 0)], 6, explained, rng)
    reps = signal + scale * np.sqrt(repeats) * rng.normal(size=(repeats, *signal.shape))
    data = neural.NeuralData("synthetic", reps.mean(0)[..., None], reps[..., None])
    fit = neural.fit_neural(layer_features, data, "r2")
    assert fit.ceiling is not None
    assert float(np.median(fit.ceiling)) == pytest.approx(explained, abs=0.08)
    normalized = fit.median_map(normalized=True)[("block2", 0)][0]
    assert normalized == pytest.approx(1.0, abs=0.15)
    assert fit.best()[0][1] == "block2"


def test_stimulus_count_mismatch_is_one_line(layer_features: dict) -> None:
    data = neural.NeuralData("v4.npz", np.zeros((50, 3, 1)))
    with pytest.raises(UserError, match=r"holds responses to 50 images, but 400 stimuli") as err:
        neural.fit_neural(layer_features, data)
    assert "\n" not in str(err.value)


def test_neural_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reps = rng.normal(size=(3, 20, 5, 2))
    np.savez(tmp_path / "rec.npz", repetitions=reps, images=rng.random((20, 8, 8)))
    data = neural.load_neural(str(tmp_path / "rec.npz"))
    np.testing.assert_allclose(data.responses, reps.mean(0))
    assert data.images is not None and data.shape == (20, 5, 2)
    (tmp_path / "neural").mkdir()
    np.savez(tmp_path / "neural" / "it.npz", responses=rng.normal(size=(20, 5)))
    assert neural.load_neural("it", tmp_path).shape == (20, 5, 1)
    with pytest.raises(UserError, match=r"neural data set 'v4' is not at .*neural/v4\.npz"):
        neural.load_neural("v4", tmp_path)
    np.save(tmp_path / "bad.npy", np.full((20, 2), np.nan))
    with pytest.raises(UserError, match="NaN or infinite"):
        neural.load_neural(str(tmp_path / "bad.npy"))
    np.savez(tmp_path / "none.npz", spikes=np.zeros((20, 2)))
    with pytest.raises(UserError, match="holds neither 'responses' nor 'repetitions'"):
        neural.load_neural(str(tmp_path / "none.npz"))
