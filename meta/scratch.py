"""Scratch: no meta-learning. Each task starts from a fresh random initialization."""

from __future__ import annotations

import itertools

from torch import nn

from meta.base import MetaLearner
from meta.registry import register
from models import reinitialize
from tasks.base import InnerLoopConfig, InnerLoopResult, Task


@register("scratch")
class Scratch(MetaLearner):
    """The random-initialization control that every comparison table needs.

    Task number n is started from the model's own initializers seeded with `seed + n`,
    so a run is reproducible and no two tasks share an initialization.
    """

    name = "scratch"

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        self._seeds = itertools.count(seed)

    def parameters(self) -> list[nn.Parameter]:
        return []

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        self.initialize(model)
        return task.inner_loop(model, inner)

    def end_meta_batch(self) -> dict[str, float]:
        return {}

    def initialize(self, model: nn.Module) -> None:
        reinitialize(model, next(self._seeds))
