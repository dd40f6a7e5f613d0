"""The model registry: `build(name, input_shape, num_outputs, **options) -> nn.Module`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leap_convrnn.errors import UserError
from leap_convrnn.registry import Registry, check_options

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("model")
register = MODELS.register


def build(
    name: str,
    input_shape: tuple[int, int, int],
    num_outputs: int,
    **options: Any,
) -> nn.Module:
    """Build the model registered as `name` for inputs of `input_shape` = (C, H, W).

    `options` are the builder's keyword arguments; an unknown one is a UserError
    that lists those accepted.
    """
    builder = MODELS.get(name)
    check_options(builder, options, f"model {name!r}")
    if num_outputs < 1:
        raise UserError(f"num_outputs must be >= 1, got {num_outputs}")
    return builder(input_shape=tuple(input_shape), num_outputs=num_outputs, **options)


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter of `model` with its modules' own initializers, from `seed`.

    Buffers (BatchNorm statistics) are reset too. The global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(module, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()
    return model
