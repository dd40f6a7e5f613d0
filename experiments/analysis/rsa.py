"""Representational similarity analysis (Kriegeskorte et al. 2008; Nili et al. 2014).

A representational dissimilarity matrix (RDM) holds, for every pair of stimuli, how
differently a layer responds to them. Two layers (of two models, or a model and a brain
area) are compared through their RDMs, never through their units, so layers of any
width compare. Here:

- `rdm`: the upper triangle (i < j, row-major: the order of rsatoolbox's vectors and of
  scipy's `squareform`) of the matrix of correlation distances 1 - r(x_i, x_j) (Pearson r
  between the two stimuli's feature vectors), or of Euclidean distances;
- `compare_rdms`: Spearman's rho of the two triangles, or Kendall's tau-b (rsatoolbox's
  `spearman` and `kendall`). An RDM with no spread (a layer that responds identically
  to every stimulus, as a ConvRNN layer does before the image has reached it under the
  biological unrolling) has no rank order: its comparisons are NaN.
- `similarity_table`: every (layer, step) of one model against every (layer, step) of
  another; `matched_map`: the entries where the layers have the same name, at the same
  step (or the other model's last step, when it has fewer, e.g. a feedforward twin).

The implementation is NumPy/SciPy; tests check it against rsatoolbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from leap_convrnn.errors import UserError
from models.features import Features

METRICS = ("spearman", "kendall")
DISTANCES = ("correlation", "euclidean")


def rdm(features: torch.Tensor | np.ndarray, distance: str = "correlation") -> np.ndarray:
    """The condensed RDM (upper triangle, row-major) of `features` (N stimuli, D)."""
    if distance not in DISTANCES:
        raise UserError(f"unknown RDM distance {distance!r}; accepted: {', '.join(DISTANCES)}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise UserError(f"an RDM needs features (N >= 3 stimuli, D), got shape {x.shape}")
    upper = np.triu_indices(x.shape[0], k=1)
    if distance == "euclidean":
        squared = (x * x).sum(1)
        gram = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
        return np.sqrt(np.clip(gram, 0.0, None))[upper]
    centered = x - x.mean(1, keepdims=True)
    norms = np.linalg.norm(centered, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = centered / norms[:, None]
    return 1.0 - (unit @ unit.T)[upper]


def compare_rdms(a: np.ndarray, b: np.ndarray, metric: str = "spearman") -> float:
    """Spearman's rho or Kendall's tau-b between two condensed RDMs (NaN if either is
    constant or undefined)."""
    if metric not in METRICS:
        raise UserError(f"unknown RSA metric {metric!r}; accepted: {', '.join(METRICS)}")
    if a.shape != b.shape:
        raise UserError(
            f"RDMs of different sizes ({a.shape[0]} and {b.shape[0]} pairs): "
            "both models must see the same stimuli"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    if np.ptp(a) <= 1e-12 * max(1.0, float(np.abs(a).max())) or np.ptp(b) <= 1e-12 * max(
        1.0, float(np.abs(b).max())
    ):
        return float("nan")
    if metric == "spearman":
        return float(stats.spearmanr(a, b).statistic)
    return float(stats.kendalltau(a, b).statistic)


@dataclass
class Similarity:
    """Every (layer, step) of model A against every (layer, step) of model B."""

    metric: str
    keys_a: list[tuple[str, int]]
    keys_b: list[tuple[str, int]]
    values: np.ndarray  # (len(keys_a), len(keys_b))

    def rows(self) -> list[list[object]]:
        """Table rows: layer_a, step_a, layer_b, step_b, similarity."""
        return [
            [la, ta, lb, tb, float(self.values[i, j])]
            for i, (la, ta) in enumerate(self.keys_a)
            for j, (lb, tb) in enumerate(self.keys_b)
        ]

    def value(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        return float(self.values[self.keys_a.index(a), self.keys_b.index(b)])


def rdms(features: Features, distance: str = "correlation") -> dict[tuple[str, int], np.ndarray]:
    """The RDM of every (layer, step)."""
    return {key: rdm(value, distance) for key, value in features.items()}


def similarity_table(
    a: Features,
    b: Features,
    metric: str = "spearman",
    distance: str = "correlation",
) -> Similarity:
    """Compare every (layer, step) RDM of `a` with every one of `b` (same stimuli)."""
    counts = {v.shape[0] for v in a.values()} | {v.shape[0] for v in b.values()}
    if len(counts) != 1:
        raise UserError(
            f"the two models saw different numbers of stimuli ({sorted(counts)}); "
            "RSA needs the same stimuli for both"
        )
    rdm_a, rdm_b = rdms(a, distance), rdms(b, distance)
    keys_a, keys_b = list(rdm_a), list(rdm_b)
    values = np.array([[compare_rdms(rdm_a[i], rdm_b[j], metric) for j in keys_b] for i in keys_a])
    return Similarity(metric, keys_a, keys_b, values.reshape(len(keys_a), len(keys_b)))


def matched_map(similarity: Similarity) -> tuple[list[str], list[int], np.ndarray]:
    """Layers x steps of model A: similarity with B's layer of the same name at the same
    step (B's last step when B has fewer). NaN where B has no such layer."""
    layers = list(dict.fromkeys(layer for layer, _ in similarity.keys_a))
    steps = sorted({t for _, t in similarity.keys_a})
    b_steps: dict[str, list[int]] = {}
    for layer, t in similarity.keys_b:
        b_steps.setdefault(layer, []).append(t)
    grid = np.full((len(layers), len(steps)), np.nan)
    for i, layer in enumerate(layers):
        if layer not in b_steps:
            continue
        for j, t in enumerate(steps):
            if (layer, t) not in similarity.keys_a:
                continue
            tb = t if t in b_steps[layer] else max(b_steps[layer])
            grid[i, j] = similarity.value((layer, t), (layer, tb))
    return layers, steps, grid
