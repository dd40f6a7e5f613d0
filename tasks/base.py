"""The task interface shared by vision tasks and Atari games.

A meta-learner never knows what kind of task it adapts to: a task runs its own
inner loop from the parameters currently in the model and calls a
`TrajectoryHook` after every backward pass, before the optimizer step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from leap_convrnn.errors import UserError

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class InnerLoopConfig:
    """How a task trains a model: K steps of a torch optimizer on minibatches.

    `optimizer` names an entry of `tasks.optimizers.INNER_OPTIMIZERS`. The Leap paper's
    Multi-CV inner loop (Appendix E) adds an epoch cap, a cosine learning-rate schedule
    and early stopping (`schedule`, `max_epochs`, `early_stopping_patience`); they apply
    to the supervised inner loop (`tasks.inner_loop.fit_supervised`), which every vision
    task runs. Atari's A2C loop and MAML's differentiable adaptation ignore them.
    """

    steps: int = 100
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 20
    rmsprop_alpha: float = 0.99
    """RMSprop's decay of the squared-gradient average (torch's default)."""
    rmsprop_eps: float = 1e-8
    """RMSprop's epsilon (torch's default; the Atari learner sets the Leap paper's 1e-4)."""
    weight_decay: float = 0.0
    """L2 penalty coefficient lambda: every optimizer adds lambda * theta to the gradient
    (torch's coupled `weight_decay`); the path Leap measures is the parameters' path
    under it, and the loss coordinate stays the task loss without the penalty."""
    schedule: str = "constant"
    """"constant": `lr` at every step; "cosine": lr_i = lr (1 + cos(pi i / K)) / 2 at step
    i of the K planned steps (cosine annealing to 0, Loshchilov & Hutter 2017)."""
    max_epochs: int | None = None
    """Cap the steps at this many passes over the task's training set (an epoch is
    ceil(examples / batch_size) steps); None: `steps` alone."""
    early_stopping_patience: int | None = None
    """Stop once the mean training loss of a window of `early_stopping_window` steps has
    not improved on the best window's for this many windows; None: never stop early."""
    early_stopping_window: int = 10
    """Steps per early-stopping window (one host sync per window)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserError(
                f"unknown inner-loop schedule {self.schedule!r}; accepted: {', '.join(SCHEDULES)}"
            )
        for label, value in (
            ("max_epochs", self.max_epochs),
            ("early_stopping_patience", self.early_stopping_patience),
        ):
            if value is not None and value < 1:
                raise UserError(f"inner-loop {label} must be >= 1 or null, got {value}")
        if not self.weight_decay >= 0:
            raise UserError(f"inner-loop weight_decay must be >= 0, got {self.weight_decay}")
        if self.early_stopping_window < 1:
            raise UserError(
                f"inner-loop early_stopping_window must be >= 1, got {self.early_stopping_window}"
            )


class TrajectoryHook(Protocol):
    """Receives the points of a learning trajectory as the inner loop visits them."""

    def on_step(self, loss: Tensor) -> None:
        """Called after `loss.backward()` and before the optimizer step.

        The model's parameters hold theta_i and their `.grad` holds grad f(theta_i);
        `loss` is the detached scalar f(theta_i).
        """

    def on_end(self, loss: Tensor) -> None:
        """Called once after the last step: parameters hold theta_K, `loss` is f(theta_K)."""


@dataclass
class InnerLoopResult:
    """What one inner loop reports.

    `losses` holds K + 1 detached training losses: f(theta_0) ... f(theta_{K-1})
    measured at each step, then f(theta_K) measured after the last update.
    """

    losses: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    """Further learning curves, K + 1 points each aligned with `losses` (NaN where a point
    is undefined), e.g. an agent's recent episode return after each update."""
    log_prefix: str | None = None
    """Namespace under which meta-training logs `metrics` (meta-batch means; None: not
    logged), e.g. "atari" for `atari/episode_return`."""

    @property
    def auc(self) -> float:
        """Area under the training-loss curve: trapezoid over the K + 1 points, divided by K."""
        k = self.losses.numel() - 1
        if k < 1:
            return float(self.losses[0]) if self.losses.numel() else float("nan")
        return float(torch.trapezoid(self.losses.double()) / k)


class Task(ABC):
    """One learning problem: a data source, a loss and a held-out evaluation."""

    name: str
    num_outputs: int

    @abstractmethod
    def inner_loop(
        self,
        model: nn.Module,
        config: InnerLoopConfig,
        hook: TrajectoryHook | None = None,
    ) -> InnerLoopResult:
        """Train `model` in place from its current parameters for `config.steps` steps."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out metrics of `model` (`loss`, `accuracy`), computed in eval mode."""

    def to(self, device: torch.device | str) -> Task:
        """This task with its data on `device` and the same minibatches as before. The
        default keeps the task as is: a task whose data is produced on the fly (an
        Atari game) follows the model's device itself."""
        return self


class TaskDistribution(ABC):
    """A distribution over tasks of one family (one split of it)."""

    name: str
    split: str
    input_shape: tuple[int, int, int]
    num_outputs: int
    heads_per_task: bool = False
    """True when each task brings an output head of its own that is not part of the
    meta-learned initialization (Atari games); then an initialization transfers to splits
    with other output sizes, and only `meta_parameters` are loaded from it."""

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """Draw `n` tasks; the same `rng` state gives the same tasks."""

    def make_model(self, name: str, options: dict[str, Any]) -> nn.Module:
        """Build the network this family trains: by default `models.build` for its shapes."""
        import models

        return models.build(name, self.input_shape, self.num_outputs, **options)

    def meta_parameters(self, model: nn.Module) -> list[str] | None:
        """Names of the parameters whose initialization is meta-learned (None: all).

        A family whose tasks need parts of their own (an output head per game) returns
        the shared part only; the task initializes the rest afresh in its inner loop.
        """
        return None
