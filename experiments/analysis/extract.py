"""Build a model for analysis (from a checkpoint or a seed) and read its features.

A checkpoint (an `init.pt` of `leap train`, or any file saved by
`experiments.checkpoint.save_initialization`, e.g. a model after a task's inner loop)
names its architecture, so the model is rebuilt from it alone. Without one, the model
is built by name for the stimuli's shape and drawn from `seed`.

Features are read in eval mode with every BatchNorm's statistics re-estimated on a
calibration set at the model's weights (`tasks.inner_loop.precise_batchnorm`; the
evaluation protocol of this project), by default the stimuli themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

import models
from experiments.checkpoint import read_initialization
from leap_convrnn.errors import UserError
from models.convrnn import TimeBatchNorm2d
from models.features import Features, extract_features
from tasks.inner_loop import precise_batchnorm


@dataclass
class LoadedModel:
    """A network ready for analysis and where its weights came from."""

    name: str
    model: nn.Module
    input_shape: tuple[int, int, int]
    origin: str
    options: dict[str, Any]
    num_outputs: int = 1


def load_model(
    name: str | None,
    checkpoint: str | None,
    shape: tuple[int, int, int],
    seed: int = 0,
    options: dict[str, Any] | None = None,
    num_outputs: int = 1,
) -> LoadedModel:
    """The model `name` with the weights of `checkpoint`, or drawn from `seed` for inputs
    of `shape` (C, H, W) with `num_outputs` outputs when there is no checkpoint."""
    options = dict(options or {})
    if checkpoint:
        blob = read_initialization(checkpoint)
        arch = blob["architecture"]
        if name and name != arch["model"]:
            raise UserError(
                f"checkpoint {checkpoint!r} holds a {arch['model']!r}, not a {name!r}; "
                "drop --model or name the checkpoint's model"
            )
        if options and options != arch["options"]:
            raise UserError(
                f"checkpoint {checkpoint!r} was saved with model options {arch['options']}, "
                f"not {options}"
            )
        input_shape = (
            int(arch["input_shape"][0]),
            int(arch["input_shape"][1]),
            int(arch["input_shape"][2]),
        )
        outputs = int(arch.get("num_outputs", 1))
        model = models.build(arch["model"], input_shape, outputs, **arch["options"])
        state = blob["state_dict"]
        if "num_outputs" not in arch:  # a head per task: the shared part only
            own = model.state_dict()
            state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or ("num_outputs" in arch and missing):
            raise UserError(
                f"checkpoint {checkpoint!r} does not fit {arch['model']!r}: "
                f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
            )
        origin = f"{checkpoint} ({arch['model']}, inputs {input_shape})"
        return LoadedModel(
            arch["model"], model, input_shape, origin, dict(arch["options"]), outputs
        )
    if not name:
        raise UserError("name a model (--model NAME) or a checkpoint (--checkpoint PATH)")
    model = models.build(name, shape, num_outputs, **options)
    models.reinitialize(model, seed)
    origin = f"{name} drawn from seed {seed}, inputs {shape}"
    return LoadedModel(name, model, shape, origin, options, num_outputs)


def share_weights(source: nn.Module, target: nn.Module) -> int:
    """Copy into `target` every parameter and buffer of `source` with the same name, e.g. a
    ConvRNN's weights into its feedforward twin (whose names are a subset). Per-step
    BatchNorm statistics keep their first rows when the target has fewer steps.
    Returns the number of tensors copied; a UserError if none fit."""
    own = source.state_dict()
    state = target.state_dict()
    copied = 0
    steps = {
        f"{n}.{b}"
        for n, m in target.named_modules()
        if isinstance(m, TimeBatchNorm2d)
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    for key, value in state.items():
        if key not in own:
            continue
        theirs = own[key]
        if key in steps and theirs.shape[1:] == value.shape[1:]:
            theirs = theirs[: value.shape[0]]
        if theirs.shape != value.shape:
            raise UserError(
                f"the models' {key} differ in shape ({tuple(theirs.shape)} and "
                f"{tuple(value.shape)}): their weights cannot be shared"
            )
        state[key] = theirs.clone()
        copied += 1
    if not copied:
        raise UserError("the two models share no parameter: their weights cannot be shared")
    target.load_state_dict(state)
    return copied


def read_features(
    model: nn.Module,
    images: Tensor,
    layers: list[str] | None,
    steps: list[int] | None,
    pool: int | None,
    calibration: Tensor | None = None,
    device: str = "cpu",
) -> Features:
    """Features of `images` per (layer, step), in eval mode, with BatchNorm statistics
    re-estimated on `calibration` (default: the images)."""
    model.to(device)
    calibration = images if calibration is None else calibration
    was_training = model.training
    try:
        with precise_batchnorm(model, calibration.to(device)):
            model.eval()
            return extract_features(model, images, layers, steps, pool)
    finally:
        model.train(was_training)


def checkpoint_shape(checkpoint: str | Path) -> tuple[int, int, int]:
    """The input shape (C, H, W) a checkpoint's model was built for."""
    shape = read_initialization(checkpoint)["architecture"]["input_shape"]
    return int(shape[0]), int(shape[1]), int(shape[2])


def as_numpy(features: Features) -> dict[tuple[str, int], Any]:
    return {key: value.numpy() for key, value in features.items()}
