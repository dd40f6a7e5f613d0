"""The interface every meta-learner implements, so one runner drives them all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from tasks.base import InnerLoopConfig, InnerLoopResult, Task


class MetaLearner(ABC):
    """Owns an initialization (possibly none) and turns task inner loops into its update.

    The runner calls, per meta-step: `adapt(model, task, inner)` for each task of the
    meta-batch, then `end_meta_batch()`, which leaves the averaged meta-gradient in
    `.grad` of `parameters()` for any torch optimizer to apply.
    """

    name: ClassVar[str]

    @abstractmethod
    def parameters(self) -> list[nn.Parameter]:
        """The meta-learned tensors (empty for a learner with nothing to learn)."""

    @abstractmethod
    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Start `model` from this learner's initialization and run the task's inner loop."""

    @abstractmethod
    def end_meta_batch(self) -> dict[str, float]:
        """Write the meta-batch's averaged meta-gradient into `.grad`; return `meta/` metrics."""

    @abstractmethod
    def initialize(self, model: nn.Module) -> None:
        """Load this learner's initialization into `model` (parameters and buffers)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this learner."""
        return {"parameters": [p.detach().clone() for p in self.parameters()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.parameters(), state["parameters"], strict=True):
                p.copy_(saved)
