"""Per-layer, per-time-step features of a network, for representational analyses.

The ConvRNN paper (Nayebi et al. NeurIPS 2018, Sec. 4) reads a model's layers out at
every time step of its unrolling and compares them with neural responses over time.
`extract_features` does that for the networks of this package:

- a `ConvRNN` (every named configuration and its feedforward twin): the output of each
  graph layer (after its cell and pooling) at each unrolled step (`ConvRNN.unrolled`);
  a feedforward twin, unrolled for one step, has step 0 only;
- `conv4`: the output of each block (after its ReLU), `block1`..`blockN`, at step 0.

Features are flattened per image, (N, C * H * W), or average-pooled to `pool` x `pool`
first, (N, C * pool * pool). The model runs in its current mode (eval for the
analyses: BatchNorm uses its running statistics) without gradients, in chunks of
`batch_size` images, and the features come back as float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from models.conv4 import Conv4
from models.convrnn import ConvRNN

#: Features of one model: (layer, time step) -> (images, features).
Features = dict[tuple[str, int], Tensor]


def feature_layers(model: nn.Module) -> list[str]:
    """The names of the layers `extract_features` reads, in feedforward order."""
    if isinstance(model, ConvRNN):
        return [layer.name for layer in model.graph.layers]
    if isinstance(model, Conv4):
        return [f"block{i + 1}" for i in range(len(_conv4_blocks(model)))]
    raise UserError(
        f"features of a {type(model).__name__} cannot be read out; accepted: the ConvRNN "
        "graphs (rgc_*, ugrnn_*, convrnn_*, and their _ff twins) and conv4"
    )


def feature_steps(model: nn.Module) -> int:
    """How many time steps an image input is unrolled for (1 for a feedforward network)."""
    if isinstance(model, ConvRNN):
        return model.times
    feature_layers(model)  # the error for a model with no readout
    return 1


def _conv4_blocks(model: Conv4) -> list[nn.Module]:
    return [m for m in model.features if isinstance(m, nn.ReLU)]


def _flatten(x: Tensor, pool: int | None) -> Tensor:
    if pool is not None and x.dim() == 4:
        x = F.adaptive_avg_pool2d(x, (min(pool, x.shape[-2]), min(pool, x.shape[-1])))
    return x.reshape(x.shape[0], -1).float().cpu()


def check_selection(
    model: nn.Module, layers: Sequence[str] | None, steps: Sequence[int] | None
) -> tuple[list[str], list[int]]:
    """The layers and time steps to read (None: all), checked against the model."""
    names = feature_layers(model)
    times = feature_steps(model)
    chosen = list(layers) if layers else names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise UserError(f"unknown layer {unknown[0]!r}; accepted: {', '.join(names)}")
    chosen_steps = sorted(set(steps)) if steps else list(range(times))
    bad = [t for t in chosen_steps if not 0 <= t < times]
    if bad:
        raise UserError(f"time step {bad[0]} is out of range; accepted: 0..{times - 1}")
    return chosen, chosen_steps


def _convrnn_batch(
    model: ConvRNN, images: Tensor, layers: list[str], steps: list[int], pool: int | None
) -> Features:
    index = {layer.name: i for i, layer in enumerate(model.graph.layers)}
    out: Features = {}
    last = max(steps)
    for t, outputs in enumerate(model.unrolled(images)):
        if t in steps:
            for name in layers:
                out[(name, t)] = _flatten(outputs[index[name]], pool)
        if t == last:
            break
    return out


def _conv4_batch(model: Conv4, images: Tensor, layers: list[str], pool: int | None) -> Features:
    out: Features = {}
    handles = []
    for i, relu in enumerate(_conv4_blocks(model)):
        name = f"block{i + 1}"
        if name in layers:

            def hook(_m: nn.Module, _i: object, output: Tensor, name: str = name) -> None:
                out[(name, 0)] = _flatten(output, pool)

            handles.append(relu.register_forward_hook(hook))
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return out


def extract_features(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    pool: int | None = None,
    batch_size: int = 64,
) -> Features:
    """Features of `images` (N, C, H, W) at each chosen layer and time step (None: all).

    Returns {(layer, step): (N, D) float32 CPU tensor}; see the module docstring.
    """
    chosen, chosen_steps = check_selection(model, layers, steps)
    if pool is not None and pool < 1:
        raise UserError(f"pool must be >= 1 (or None: no pooling), got {pool}")
    reference = next(model.parameters())
    chunks: list[Features] = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(reference.device, reference.dtype)
            if isinstance(model, ConvRNN):
                chunks.append(_convrnn_batch(model, batch, chosen, chosen_steps, pool))
            else:
                assert isinstance(model, Conv4)
                chunks.append(_conv4_batch(model, batch, chosen, pool))
    return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
