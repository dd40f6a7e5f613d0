"""The supervised inner loop every vision task runs, and held-out scoring in eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.base import InnerLoopConfig, InnerLoopResult, TrajectoryHook
from tasks.optimizers import make_optimizer

Batch = tuple[Tensor, Tensor]


def fit_supervised(
    model: nn.Module,
    next_batch: Callable[[], Batch],
    config: InnerLoopConfig,
    hook: TrajectoryHook | None = None,
) -> InnerLoopResult:
    """Train `model` with cross-entropy for `config.steps` minibatches.

    The hook sees every step after backward and before the update, then the loss
    at the final parameters (one forward pass, no backward). No value is copied
    to the host inside the loop: losses are gathered on the device and returned.
    """
    model.train()
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), config)
    losses: list[Tensor] = []
    correct: list[Tensor] = []
    for _ in range(config.steps):
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
