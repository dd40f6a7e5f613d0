"""The supervised inner loop every vision task runs, and held-out scoring in eval mode."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig, InnerLoopResult, TrajectoryHook
from tasks.optimizers import make_optimizer

Batch = tuple[Tensor, Tensor]


def planned_steps(config: InnerLoopConfig, examples: int | None) -> int:
    """The inner loop's step count: `config.steps`, capped at `config.max_epochs` passes
    over `examples` training examples (ceil(examples / batch_size) steps per pass)."""
    if config.max_epochs is None:
        return config.steps
    if examples is None:
        raise UserError("inner-loop max_epochs needs a task with a fixed training set")
    per_epoch = math.ceil(examples / min(config.batch_size, examples))
    return min(config.steps, config.max_epochs * per_epoch)


def learning_rate_factor(config: InnerLoopConfig, step: int, steps: int) -> float:
    """The multiplier of the base learning rate at `step` of `steps`: 1 (constant) or
    (1 + cos(pi step / steps)) / 2 (cosine annealing to 0 over the planned steps)."""
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return 1.0


class EarlyStopping:
    """Patience on windows of training losses: the mean of every `window` consecutive
    step losses is compared with the best mean so far; `patience` windows in a row without
    a strictly lower mean stop the run. One host sync per window, none between."""

    def __init__(self, patience: int, window: int) -> None:
        self.patience, self.window = patience, window
        self._pending: list[Tensor] = []
        self.best = math.inf
        self.waited = 0

    def stop(self, loss: Tensor) -> bool:
        """Record one step's detached loss; True when the run should stop after it."""
        self._pending.append(loss)
        if len(self._pending) < self.window:
            return False
        mean = float(torch.stack(self._pending).mean())
        self._pending = []
        if mean < self.best:
            self.best, self.waited = mean, 0
            return False
        self.waited += 1
        return self.waited >= self.patience


def fit_supervised(
    model: nn.Module,
    next_batch: Callable[[], Batch],
    config: InnerLoopConfig,
    hook: TrajectoryHook | None = None,
    examples: int | None = None,
) -> InnerLoopResult:
    """Train `model` with cross-entropy for `config.steps` minibatches.

    The hook sees every step after backward and before the update, then the loss
    at the final parameters (one forward pass, no backward). No value is copied
    to the host inside the loop (losses are gathered on the device and returned),
    except once per window when early stopping is on.

    `examples`, the size of the training set, lets `config.max_epochs` cap the steps
    (`planned_steps`); `config.schedule` sets each step's learning rate over the planned
    steps; early stopping (`EarlyStopping`) ends the run after the step that triggers
    it, and the trajectory the hook saw ends there, at the parameters after that update.
    """
    model.train()
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), config)
    steps = planned_steps(config, examples)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    stopper = (
        EarlyStopping(config.early_stopping_patience, config.early_stopping_window)
        if config.early_stopping_patience is not None
        else None
    )
    losses: list[Tensor] = []
    correct: list[Tensor] = []
    for step in range(steps):
        if config.schedule != "constant":
            factor = learning_rate_factor(config, step, steps)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
        x, y = next_batch()
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        detached = loss.detach()
        if hook is not None:
            hook.on_step(detached)
        optimizer.step()
        losses.append(detached)
        correct.append((logits.detach().argmax(1) == y).float().mean())
        if stopper is not None and stopper.stop(detached):
            break
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        x, y = next_batch()
        final = F.cross_entropy(model(x), y)
    if hook is not None:
        hook.on_end(final)
    losses.append(final)
    curve = torch.stack(losses).cpu()
    train_accuracy = float(torch.stack(correct)[-1]) if correct else float("nan")
    return InnerLoopResult(losses=curve, metrics={"train_accuracy": train_accuracy})


CALIBRATION_CHUNK = 500
"""Images per forward pass when BatchNorm statistics are re-estimated."""


@contextlib.contextmanager
def precise_batchnorm(model: nn.Module, images: Tensor) -> Iterator[None]:
    """Within the block, every BatchNorm's running statistics are re-estimated on `images`
    at the model's current weights ("precise BN", Wu & Johnson 2021: the mean of the
    per-chunk statistics of one pass, chunks of `CALIBRATION_CHUNK`); the previous
    statistics are restored on exit.

    Why: an inner loop of tens of steps at a high learning rate moves the weights faster
    than BatchNorm's running averages (momentum 0.1, a ~10-step window) follow, so after
    it the running statistics describe earlier weights and eval-mode predictions suffer.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        yield
        return
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the chunks
        model.train()
        with torch.no_grad():
            for chunk in images.split(CALIBRATION_CHUNK):
                model(chunk)
        yield
    finally:
        with torch.no_grad():
            for m, buffers, momentum in zip(norms, saved, momenta, strict=True):
                for buffer, value in zip(m.buffers(recurse=False), buffers, strict=True):
                    buffer.copy_(value)
                m.momentum = momentum
        model.train(was_training)


def evaluate_classifier(
    model: nn.Module, x: Tensor, y: Tensor, calibration: Tensor | None = None
) -> dict[str, float]:
    """Loss and accuracy of `model` on (x, y) in eval mode (BatchNorm uses running
    statistics: with `calibration` images, statistics re-estimated on them at the current
    weights by `precise_batchnorm`). The model is left as it was."""
    if calibration is not None:
        with precise_batchnorm(model, calibration):
            return evaluate_classifier(model, x, y)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            accuracy = (logits.argmax(1) == y).float().mean()
    finally:
        model.train(was_training)
    return {"loss": float(loss), "accuracy": float(accuracy)}
