"""`leap analyze`: one model's representations, layer by layer and time step by time step,
compared with another model's (RSA) and with neural responses (cross-validated fits).

    request -> stimuli (+ neural file) -> model A features -> [model B features -> RSA]
            -> [ridge fits per neuron and bin, noise ceiling] -> maps, tables, W&B

Outputs land in `<out_dir>/<name>/`: `config.json`, `summary.json`, one PNG and one JSON
table per map, `similarity.json` (every layer-step pair of A and B) and
`neural_fits.npz` (every neuron's score); the same maps and tables go to W&B.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis import neural as neural_fits
from experiments.analysis import rsa
from experiments.analysis.extract import (
    LoadedModel,
    as_numpy,
    checkpoint_shape,
    load_model,
    read_features,
    share_weights,
)
from experiments.analysis.report import format_grid, log_map
from experiments.analysis.stimuli import Stimuli, load_stimuli, to_shape
from experiments.config import TrackerConfig
from experiments.tracking import Tracker, git_state
from leap_convrnn.errors import UserError
from models.features import Features

#: `--compare-checkpoint shared`: model B gets model A's weights (those it has).
SHARED = "shared"


@dataclass
class AnalysisRequest:
    """Everything `leap analyze` takes (see `leap analyze --help`)."""

    model: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    stimuli: str = "glyphs:64"
    image_size: int | None = None
    layers: list[str] | None = None
    steps: list[int] | None = None
    pool: int | None = None
    compare_model: str | None = None
    compare_checkpoint: str | None = None
    metric: str = "spearman"
    distance: str = "correlation"
    neural: str | None = None
    fit_metric: str = "r2"
    folds: int = 5
    data_root: str = "~/.cache/leap-convrnn"
    out_dir: str = "runs"
    name: str | None = None
    tracker: str = "wandb"
    wandb_mode: str = "auto"
    project: str = "leap-convrnn"
    device: str = "cpu"


@dataclass
class AnalysisResult:
    """What an analysis found (None: not asked for)."""

    run_dir: Path
    model: str
    stimuli: int
    similarity: rsa.Similarity | None = None
    matched: tuple[list[str], list[int], np.ndarray] | None = None
    fits: neural_fits.NeuralFit | None = None
    figures: list[Path] = field(default_factory=list)


def analysis_tracker(
    request: AnalysisRequest, run_dir: Path, tags: list[str], run_config: dict[str, Any]
) -> Tracker:
    """The tracker of an analysis run in `run_dir` (W&B group and job type `analyze`)."""
    return Tracker(
        TrackerConfig(
            name=request.tracker,
            project=request.project,
            mode=request.wandb_mode,
            dir=request.out_dir,
        ),
        run_dir=run_dir,
        name=run_dir.name,
        group="analyze",
        job_type="analyze",
        tags=tags,
        run_config=run_config,
    )


def check_request(request: AnalysisRequest) -> None:
    """Reject a bad value before anything is loaded (one-line UserError)."""
    if request.metric not in rsa.METRICS:
        raise UserError(
            f"unknown RSA metric {request.metric!r}; accepted: {', '.join(rsa.METRICS)}"
        )
    if request.distance not in rsa.DISTANCES:
        raise UserError(
            f"unknown RDM distance {request.distance!r}; accepted: {', '.join(rsa.DISTANCES)}"
        )
    if request.fit_metric not in neural_fits.FIT_METRICS:
        raise UserError(
            f"unknown fit metric {request.fit_metric!r}; "
            f"accepted: {', '.join(neural_fits.FIT_METRICS)}"
        )
    if request.image_size is not None and request.image_size < 8:
        raise UserError(f"image size must be >= 8, got {request.image_size}")
    if request.pool is not None and request.pool < 1:
        raise UserError(f"pool must be >= 1, got {request.pool}")
    if request.folds < 2:
        raise UserError(f"folds must be >= 2, got {request.folds}")
    if not 0 <= request.seed < 2**32:
        raise UserError(f"seed must be in [0, 2**32), got {request.seed}")
    _check_device(request.device)
    if request.tracker not in ("wandb", "none"):
        raise UserError(f"tracker {request.tracker!r} is not accepted; accepted: wandb, none")
    if request.compare_checkpoint == SHARED and not request.compare_model:
        raise UserError("--compare-checkpoint shared needs --compare-model (the model to share)")
    if not (request.model or request.checkpoint):
        raise UserError("name a model (--model NAME) or a checkpoint (--checkpoint PATH)")
    if not (request.compare_model or request.compare_checkpoint or request.neural):
        raise UserError(
            "nothing to compare with: give --compare-model/--compare-checkpoint (RSA) "
            "and/or --neural FILE (neural fits)"
        )


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; accepted: cpu, cuda, cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA device is available")
    if kind not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not accepted; accepted: cpu, cuda, cuda:N")


def _input_shape(request: AnalysisRequest, stimuli: Stimuli) -> tuple[int, int, int]:
    if request.checkpoint:
        return checkpoint_shape(request.checkpoint)
    size = request.image_size or int(stimuli.images.shape[-1])
    return int(stimuli.images.shape[1]), size, size


def _features(
    loaded: LoadedModel, request: AnalysisRequest, stimuli: Stimuli, own: bool
) -> Features:
    images = to_shape(stimuli.images, loaded.input_shape)
    layers = request.layers if own else None
    steps = request.steps if own else None
    return read_features(loaded.model, images, layers, steps, request.pool, device=request.device)


def _model_b(request: AnalysisRequest, a: LoadedModel) -> LoadedModel:
    if request.compare_checkpoint == SHARED:
        assert request.compare_model is not None
        b = load_model(
            request.compare_model, None, a.input_shape, request.seed, a.options, a.num_outputs
        )
        copied = share_weights(a.model, b.model)
        b.origin = f"{b.name} with {a.name}'s weights ({copied} tensors shared)"
        return b
    return load_model(
        request.compare_model, request.compare_checkpoint, a.input_shape, request.seed + 1
    )


def _run_name(request: AnalysisRequest, a: LoadedModel, stimuli: Stimuli) -> str:
    if request.name:
        return request.name
    against = request.compare_model or ("neural" if request.neural else "ckpt")
    return re.sub(r"[^\w.-]+", "_", f"analyze-{a.name}-vs-{against}-{stimuli.name}")


def analyze(request: AnalysisRequest) -> AnalysisResult:
    """Run the analysis `request` asks for; see the module docstring."""
    check_request(request)
    neural = neural_fits.load_neural(request.neural, request.data_root) if request.neural else None
    stimuli = load_stimuli(
        request.stimuli, request.data_root, neural.images if neural is not None else None
    )
    if neural is not None and neural.shape[0] != len(stimuli):
        raise UserError(
            f"neural file {neural.source!r} holds responses to {neural.shape[0]} images, "
            f"but the stimulus set {stimuli.name!r} has {len(stimuli)}"
        )
    a = load_model(request.model, request.checkpoint, _input_shape(request, stimuli), request.seed)
    features_a = _features(a, request, stimuli, own=True)
    name = _run_name(request, a, stimuli)
    run_dir = Path(request.out_dir).expanduser() / name
    tracker = analysis_tracker(
        request,
        run_dir,
        ["analyze", a.name],
        {**asdict(request), "model_origin": a.origin, **git_state()},
    )
    result = AnalysisResult(run_dir, a.name, len(stimuli))
    summary: dict[str, Any] = {"analyze/stimuli": len(stimuli)}
    print(f"model A: {a.origin}; stimuli: {stimuli.name} ({len(stimuli)} images)")
    exit_code = 1
    try:
        if request.compare_model or request.compare_checkpoint:
            b = _model_b(request, a)
            print(f"model B: {b.origin}")
            tracker.config_update({"compare_origin": b.origin})
            features_b = _features(b, request, stimuli, own=False)
            _similarity(request, result, features_a, features_b, a, b, tracker, summary)
        if neural is not None:
            _neural(request, result, features_a, neural, a, tracker, summary)
        tracker.summary(summary)
        exit_code = 0
        return result
    finally:
        tracker.finish(exit_code)


def _similarity(
    request: AnalysisRequest,
    result: AnalysisResult,
    features_a: Features,
    features_b: Features,
    a: LoadedModel,
    b: LoadedModel,
    tracker: Tracker,
    summary: dict[str, Any],
) -> None:
    similarity = rsa.similarity_table(features_a, features_b, request.metric, request.distance)
    result.similarity = similarity
    tracker.table(
        "rsa/pairs", ["layer_a", "step_a", "layer_b", "step_b", request.metric], similarity.rows()
    )
    label = f"RSA ({request.metric})"
    layers, steps, matched = rsa.matched_map(similarity)
    if np.isfinite(matched).any():
        result.matched = (layers, steps, matched)
        title = f"{a.name} vs {b.name}: same layer, {label}"
        result.figures.append(
            log_map(
                tracker,
                "rsa/matched",
                matched,
                layers,
                [str(t) for t in steps],
                title,
                result.run_dir,
                label,
                vmin=-0.2,
                vmax=1.0,
            )
        )
        print(format_grid(matched, layers, [str(t) for t in steps], title))
        for i, layer in enumerate(layers):
            for j, t in enumerate(steps):
                summary[f"rsa/{layer}/t{t}"] = float(matched[i, j])
    # Best match of each (layer, step) of A among all of B's layer-steps.
    rows = list(dict.fromkeys(layer for layer, _ in similarity.keys_a))
    steps_a = sorted({t for _, t in similarity.keys_a})
    best = np.full((len(rows), len(steps_a)), np.nan)
    for i, key in enumerate(similarity.keys_a):
        values = similarity.values[i]
        if np.isfinite(values).any():
            best[rows.index(key[0]), steps_a.index(key[1])] = float(np.nanmax(values))
    title = f"{a.name} vs {b.name}: best match among all of B's layer-steps, {label}"
    result.figures.append(
        log_map(
            tracker,
            "rsa/best",
            best,
            rows,
            [str(t) for t in steps_a],
            title,
            result.run_dir,
            label,
            vmin=-0.2,
            vmax=1.0,
        )
    )
    if result.matched is None:  # no layer names in common: the best matches are the answer
        print(format_grid(best, rows, [str(t) for t in steps_a], title))


def _neural(
    request: AnalysisRequest,
    result: AnalysisResult,
    features_a: Features,
    neural: neural_fits.NeuralData,
    a: LoadedModel,
    tracker: Tracker,
    summary: dict[str, Any],
) -> None:
    fits = neural_fits.fit_neural(
        as_numpy(features_a), neural, request.fit_metric, request.folds, request.seed
    )
    result.fits = fits
    layers = list(dict.fromkeys(layer for layer, _ in fits.scores))
    steps = sorted({t for _, t in fits.scores})
    medians = fits.median_map()
    normalized = fits.median_map(normalized=True) if fits.ceiling is not None else None
    rows = []
    for (layer, t), values in medians.items():
        for b, value in enumerate(values):
            norm = float(normalized[(layer, t)][b]) if normalized is not None else None
            rows.append([layer, t, b, float(value), norm])
    tracker.table(
        "neural/fits",
        ["layer", "step", "bin", f"median_{fits.metric}", f"median_{fits.metric}_normalized"],
        rows,
    )
    arrays: dict[str, Any] = {f"{layer}_t{t}": v for (layer, t), v in fits.scores.items()}
    if fits.ceiling is not None:
        arrays["ceiling"] = fits.ceiling
    np.savez_compressed(result.run_dir / "neural_fits.npz", **arrays)
    bins = neural.shape[2]
    for b in range(bins):
        grid = np.array([[medians[(layer, t)][b] for t in steps] for layer in layers])
        title = f"{a.name}: median {fits.metric} over {neural.shape[1]} neurons, bin {b}"
        result.figures.append(
            log_map(
                tracker,
                f"neural/{fits.metric}_bin{b}",
                grid,
                layers,
                [str(t) for t in steps],
                title,
                result.run_dir,
                fits.metric,
            )
        )
        print(format_grid(grid, layers, [str(t) for t in steps], title))
    if fits.ceiling is not None:
        summary["neural/ceiling_median"] = float(np.nanmedian(fits.ceiling))
        print(f"noise ceiling (median over neurons and bins): {np.nanmedian(fits.ceiling):.3f}")
    for b, layer, t, value in fits.best():
        summary[f"neural/best_bin{b}"] = f"{layer}@t{t}"
        summary[f"neural/best_{fits.metric}_bin{b}"] = value
        print(f"bin {b}: best fit by {layer} at step {t}, median {fits.metric} {value:.3f}")
