"""Neural predictivity: how well a layer's features, at one time step, predict each
neuron's response in each time bin (Yamins et al. 2014; Nayebi et al. NeurIPS 2018,
Sec. 4: per-neuron linear maps from model features to V4 / IT responses, over time).

- `ridge_predictions`: K-fold cross-validated ridge regression from features to every
  (neuron, bin) at once, with an intercept. Within each training fold the penalty of each
  target is chosen from a grid by exact leave-one-out error (the closed form of Rifkin &
  Lippert 2007, as scikit-learn's RidgeCV computes it), via one SVD of the fold's
  centered features; the held-out fold is then predicted. The grid is relative to the
  mean squared singular value of the fold's features, so it does not depend on their scale.
- `scores`: per target, R² = 1 - SSE / SST of the held-out predictions (SST about the
  mean of all responses), or Pearson r.
- `noise_ceiling`: split-half reliability over repetitions: the repetitions are split at
  random into two halves, the two halves' mean responses correlated over images (per
  neuron and bin), averaged over splits, and Spearman-Brown corrected to the full number
  of repetitions, rho = 2 r / (1 + r). rho is the fraction of the variance of the mean
  response that stimuli explain, so the ceiling of R² is rho and that of Pearson r is
  sqrt(rho); a normalized score is score / ceiling.

Neural files (`load_neural`): `.npy` with responses (images, neurons[, bins]), or `.npz`
with `responses` (images, neurons, bins) and/or `repetitions` (repeats, images, neurons,
bins), and optionally `images` (the stimuli, (N, H, W) or (N, C, H, W)). A name that is
not a file is read from `<data.root>/neural/<name>.npz` (real V4 / IT recordings the
user has put there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leap_convrnn.errors import UserError

FIT_METRICS = ("r2", "pearson")
#: Ridge penalties, relative to the mean squared singular value of a fold's features.
RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))


@dataclass
class NeuralData:
    """Responses (images, neurons, bins), their repetitions if given, and the stimuli if
    the file holds them."""

    source: str
    responses: np.ndarray
    repetitions: np.ndarray | None = None
    images: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        n, neurons, bins = self.responses.shape
        return n, neurons, bins


def _array(blob: np.lib.npyio.NpzFile, key: str, path: str) -> np.ndarray | None:
    if key not in blob.files:
        return None
    value = np.asarray(blob[key])
    if key != "images" and not np.issubdtype(value.dtype, np.number):
        raise UserError(f"neural file {path!r}: {key!r} is not numeric ({value.dtype})")
    return value


def resolve_neural_path(source: str, data_root: str | Path) -> Path:
    """`source` as a file, or `<data_root>/neural/<source>.npz` for a bare name."""
    path = Path(source).expanduser()
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            raise UserError(f"neural file {source!r} does not exist")
        return path
    named = Path(data_root).expanduser() / "neural" / f"{source}.npz"
    if not named.is_file():
        raise UserError(
            f"neural data set {source!r} is not at {named}; put an .npz there with "
            "'responses' (images, neurons, bins) and/or 'repetitions' (repeats, images, "
            "neurons, bins) and its stimuli as 'images', or pass a .npy/.npz path"
        )
    return named


def load_neural(source: str, data_root: str | Path = ".") -> NeuralData:
    """Read a neural file (see the module docstring); one-line UserError on a bad one."""
    path = resolve_neural_path(source, data_root)
    try:
        blob = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"neural file {str(path)!r} is unreadable ({error})") from None
    images = None
    responses: np.ndarray | None
    repetitions: np.ndarray | None
    if isinstance(blob, np.ndarray):
        responses, repetitions = blob, None
    else:
        with blob:
            responses = _array(blob, "responses", str(path))
            repetitions = _array(blob, "repetitions", str(path))
            images = _array(blob, "images", str(path))
        if responses is None and repetitions is None:
            raise UserError(
                f"neural file {str(path)!r} holds neither 'responses' nor 'repetitions' "
                f"(keys: {', '.join(blob.files) or 'none'})"
            )
    if repetitions is not None:
        if repetitions.ndim == 3:
            repetitions = repetitions[..., None]
        if repetitions.ndim != 4 or repetitions.shape[0] < 2:
            raise UserError(
                f"neural file {str(path)!r}: 'repetitions' must be (repeats >= 2, images, "
                f"neurons, bins), got shape {repetitions.shape}"
            )
        repetitions = repetitions.astype(np.float64)
        if responses is None:
            responses = repetitions.mean(0)
    assert responses is not None
    if responses.ndim == 2:
        responses = responses[..., None]
    if responses.ndim != 3:
        raise UserError(
            f"neural file {str(path)!r}: responses must be (images, neurons, bins), "
            f"got shape {responses.shape}"
        )
    responses = responses.astype(np.float64)
    if repetitions is not None and repetitions.shape[1:] != responses.shape:
        raise UserError(
            f"neural file {str(path)!r}: 'repetitions' {repetitions.shape} and 'responses' "
            f"{responses.shape} disagree (expected (repeats, *responses.shape))"
        )
    if not np.isfinite(responses).all() or (
        repetitions is not None and not np.isfinite(repetitions).all()
    ):
        raise UserError(f"neural file {str(path)!r} holds NaN or infinite responses")
    if responses.shape[0] < 10:
        raise UserError(
            f"neural file {str(path)!r} has responses to {responses.shape[0]} images; "
            "cross-validated fits need at least 10"
        )
    return NeuralData(str(path), responses, repetitions, images)


def _folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [fold for fold in np.array_split(order, folds) if fold.size]


def _fit_fold(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on `x_test` (and each target's chosen penalty) of ridge fits to (x, y)
    with an intercept, each target's penalty chosen by exact leave-one-out error."""
    n = x.shape[0]
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    u, s, vt = u[:, keep], s[keep], vt[keep]
    uty = u.T @ (y - y_mean)
    best_error = np.full(y.shape[1], np.inf)
    best = np.zeros(y.shape[1], dtype=int)
    for index, alpha in enumerate(alphas):
        shrink = s**2 / (s**2 + alpha)
        fitted = y_mean + u @ (shrink[:, None] * uty)
        leverage = 1.0 / n + (u**2) @ shrink
        error = (((y - fitted) / (1.0 - leverage)[:, None]) ** 2).mean(0)
        better = error < best_error
        best_error[better], best[better] = error[better], index
    projected = (x_test - x_mean) @ vt.T
    predictions = np.empty((x_test.shape[0], y.shape[1]))
    for index in np.unique(best):
        targets = best == index
        weights = (s / (s**2 + alphas[index]))[:, None] * uty[:, targets]
        predictions[:, targets] = y_mean[targets] + projected @ weights
    return predictions, alphas[best]


def ridge_predictions(
    features: np.ndarray,
    targets: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    alphas: tuple[float, ...] = RELATIVE_ALPHAS,
    relative: bool = True,
) -> np.ndarray:
    """Held-out predictions (N, M) of every target column of `targets` (N, M) from
    `features` (N, D), by `folds`-fold cross-validated ridge (see the module docstring).
    `relative=False` takes `alphas` as absolute penalties."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise UserError(
            f"features of {x.shape[0]} stimuli cannot predict responses to {y.shape[0]} images"
        )
    if not 2 <= folds <= x.shape[0] // 2:
        raise UserError(f"folds must be in [2, {x.shape[0] // 2}] for {x.shape[0]} images")
    out = np.empty_like(y)
    for test in _folds(x.shape[0], folds, seed):
        train = np.setdiff1d(np.arange(x.shape[0]), test)
        grid = np.asarray(alphas, dtype=np.float64)
        if relative:
            singular = np.linalg.svd(x[train] - x[train].mean(0), compute_uv=False)
            grid = grid * max(float((singular**2).mean()), 1e-12)
        out[test], _ = _fit_fold(x[train], y[train], x[test], grid)
    return out


def scores(targets: np.ndarray, predictions: np.ndarray, metric: str = "r2") -> np.ndarray:
    """Per column: R² of the predictions (1 - SSE / SST) or their Pearson r."""
    if metric not in FIT_METRICS:
        raise UserError(f"unknown fit metric {metric!r}; accepted: {', '.join(FIT_METRICS)}")
    y = np.asarray(targets, dtype=np.float64)
    centered = y - y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "r2":
            return 1.0 - ((y - predictions) ** 2).sum(0) / (centered**2).sum(0)
        p = predictions - predictions.mean(0)
        return (centered * p).sum(0) / np.sqrt((centered**2).sum(0) * (p**2).sum(0))


def noise_ceiling(
    repetitions: np.ndarray, splits: int = 20, seed: int = 0, metric: str = "r2"
) -> np.ndarray:
    """The split-half, Spearman-Brown-corrected reliability of every (neuron, bin) of
    `repetitions` (repeats, images, neurons, bins), as the ceiling of `metric`."""
    reps = np.asarray(repetitions, dtype=np.float64)
    if reps.shape[0] < 2:
        raise UserError(f"a noise ceiling needs >= 2 repetitions, got {reps.shape[0]}")
    rng = np.random.default_rng(seed)
    half = reps.shape[0] // 2
    total = np.zeros(reps.shape[2:])
    for _ in range(splits):
        order = rng.permutation(reps.shape[0])
        a = reps[order[:half]].mean(0)
        b = reps[order[half : 2 * half]].mean(0)
        a, b = a - a.mean(0), b - b.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            total += (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))
    r = total / splits
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = 2.0 * r / (1.0 + r)
    rho = np.where(rho > 0, rho, np.nan)
    return rho if metric == "r2" else np.sqrt(rho)


@dataclass
class NeuralFit:
    """Per (layer, step): scores (neurons, bins); the ceiling (neurons, bins) if known."""

    metric: str
    scores: dict[tuple[str, int], np.ndarray]
    ceiling: np.ndarray | None

    def median_map(self, normalized: bool = False) -> dict[tuple[str, int], np.ndarray]:
        """Median over neurons, per bin: {(layer, step): (bins,)}."""
        out = {}
        for key, value in self.scores.items():
            v = value / self.ceiling if normalized and self.ceiling is not None else value
            with np.errstate(all="ignore"):
                out[key] = np.nanmedian(np.where(np.isfinite(v), v, np.nan), axis=0)
        return out

    def best(self) -> list[tuple[int, str, int, float]]:
        """For each bin: the (layer, step) with the highest median score."""
        medians = self.median_map()
        bins = next(iter(medians.values())).shape[0]
        best = []
        for b in range(bins):
            key = max(medians, key=lambda k: -np.inf if np.isnan(medians[k][b]) else medians[k][b])
            best.append((b, key[0], key[1], float(medians[key][b])))
        return best


def fit_neural(
    features: dict[tuple[str, int], np.ndarray],
    data: NeuralData,
    metric: str = "r2",
    folds: int = 5,
    seed: int = 0,
) -> NeuralFit:
    """Cross-validated ridge fits of every (neuron, bin) from every (layer, step)."""
    n, neurons, bins = data.shape
    for key, value in features.items():
        if value.shape[0] != n:
            raise UserError(
                f"neural file {data.source!r} holds responses to {n} images, but "
                f"{value.shape[0]} stimuli were shown to the model ({key[0]}, step {key[1]})"
            )
    targets = data.responses.reshape(n, neurons * bins)
    fitted = {}
    for key, value in features.items():
        predictions = ridge_predictions(np.asarray(value), targets, folds=folds, seed=seed)
        fitted[key] = scores(targets, predictions, metric).reshape(neurons, bins)
    ceiling = (
        noise_ceiling(data.repetitions, seed=seed, metric=metric)
        if data.repetitions is not None
        else None
    )
    return NeuralFit(metric, fitted, ceiling)
