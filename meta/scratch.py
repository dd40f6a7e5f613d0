"""Scratch: no meta-learning. Each task starts from a fresh random initialization."""

from __future__ import annotations

from typing import Any

from torch import nn

from meta.base import MetaLearner
from meta.registry import register
from models import reinitialize
from tasks.base import InnerLoopConfig, InnerLoopResult, Task


@register("scratch")
class Scratch(MetaLearner):
    """The random-initialization control that every comparison table needs.

    Draw number n (one per task, one per `initialize`) uses the model's own initializers
    seeded with `seed + n`, so a run is reproducible, a resumed run draws exactly what an
    uninterrupted one would (the count is part of `state_dict`), and no two tasks share
    an initialization. Nothing is learned: a task whose loss diverges concerns the
    runner's metrics only.
    """

    name = "scratch"

    def __init__(
        self, model: nn.Module, parameters: list[str] | None = None, seed: int = 0
    ) -> None:
        """`parameters` is accepted like every learner's and unused: Scratch draws every
        parameter of the model afresh."""
        self.seed = seed
        self.draws = 0

    def parameters(self) -> list[nn.Parameter]:
        return []

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        self.initialize(model)
        return task.inner_loop(model, inner)

    def end_meta_batch(self) -> dict[str, float]:
        return {}

    def initialize(self, model: nn.Module) -> None:
        reinitialize(model, self.seed + self.draws)
        self.draws += 1

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = int(state["draws"])
