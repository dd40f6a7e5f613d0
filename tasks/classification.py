"""Few-shot classification tasks: a training set to adapt on and a held-out set to score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TrajectoryHook
from tasks.inner_loop import Batch, evaluate_classifier, fit_supervised


@dataclass
class ClassificationTask(Task):
    """A supervised task on in-memory tensors.

    The inner loop draws minibatches of `config.batch_size` training examples
    uniformly with replacement from a generator seeded with `seed`, so the same
    task trains identically every time it is run from the same parameters.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_outputs: int
    seed: int

    def batches(self, batch_size: int) -> Callable[[], Batch]:
        """A fresh minibatch stream over the training set, seeded with the task's seed."""
        generator = torch.Generator().manual_seed(self.seed)
        n = self.x_train.shape[0]

        def next_batch() -> Batch:
            index = torch.randint(0, n, (min(batch_size, n),), generator=generator)
            return self.x_train[index], self.y_train[index]

        return next_batch

    def inner_loop(
        self,
        model: nn.Module,
        config: InnerLoopConfig,
        hook: TrajectoryHook | None = None,
    ) -> InnerLoopResult:
        return fit_supervised(model, self.batches(config.batch_size), config, hook)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_classifier(model, self.x_test, self.y_test)
