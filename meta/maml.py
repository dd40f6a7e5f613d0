"""MAML and first-order MAML (Finn et al., ICML 2017) through learn2learn.

For each task, a differentiable copy of the initialization theta_0 (learn2learn's
`MAML.clone`) takes K plain-SGD steps on the task's training minibatches,

    theta_{i+1} = theta_i - alpha grad L_support_i(theta_i),      i = 0 .. K-1

and the meta-gradient is the gradient of the query loss at theta_K with respect to
theta_0 (MAML paper, Eq. 1-3 and Algorithm 2): second-order MAML backpropagates through
all K updates (memory grows with K); first-order MAML (FOMAML) takes every Jacobian
d theta_{i+1} / d theta_i as the identity, so the meta-gradient is grad L_query(theta_K).

Data: the support batches are the first K minibatches of the task's training stream
(`task.batches(batch_size)`, the same stream `fit_supervised` draws from); the query
batch is the next minibatch of that stream, the batch on which every inner loop of this
project measures f(theta_K). Batches are drawn with replacement, so the query may share
examples with the support batches. The task's held-out set is never seen during
meta-training; it is kept for `task.evaluate`. K is `inner.steps`, capped by `max_steps`
(second-order MAML's memory grows with K); the inner optimizer must be plain SGD, at
`inner.lr`. MAML needs a supervised task with minibatches (a task
with a `batches` method, such as `ClassificationTask`); any other task is a UserError.

The meta-learned parameters are a copy of the model's own trainable parameters, by
name, so `initialize(model)` loads them into the model. After `adapt`, the model holds
the adapted parameters theta_K (the runner scores the task's held-out set on it).
Buffers follow Leap's policy: every task starts from the buffers the model had when the
learner was built (learn2learn's clones share the buffers of the wrapped module, so they
are reset before each task), and the model keeps the task's statistics after `adapt`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap_convrnn.errors import AllTasksDropped, UserError
from leap_convrnn.optional import import_learn2learn
from meta.base import FlatBuffer, Initialization, MetaLearner
from meta.registry import register
from tasks.base import InnerLoopConfig, InnerLoopResult, Task

Batch = tuple[Tensor, Tensor]


def supervised_batches(task: Task, batch_size: int, learner: str) -> Callable[[], Batch]:
    """The task's training minibatch stream, or a UserError naming the task's type."""
    batches = getattr(task, "batches", None)
    if not callable(batches):
        raise UserError(
            f"{learner} needs a supervised task with training minibatches (task.batches), "
            f"got a {type(task).__name__} ({task.name!r}); use leap, reptile, finetune or "
            "scratch for this task family"
        )
    next_batch: Callable[[], Batch] = batches(batch_size)
    return next_batch


@register("maml")
class MAML(MetaLearner):
    """Second-order MAML (learn2learn `MAML`, `first_order=False`).

    Args:
        model: the network whose initialization is learned (its current parameters and
            buffers are the starting point; the learner keeps its own copy).
        first_order: drop the second-order terms (FOMAML).
        max_steps: cap on the number of adaptation steps K during meta-training
            (K = min(inner.steps, max_steps)); null for no cap. Second-order MAML keeps
            every step's graph, so its memory grows with K.
        parameters: names of the model parameters to meta-learn (default: all trainable
            ones); the others are drawn afresh for every task and adapted with the rest.
        seed: seed of the first fresh draw of the parameters left out of `parameters`.
    """

    name = "maml"

    initialization: Initialization

    def __init__(
        self,
        model: nn.Module,
        first_order: bool = False,
        max_steps: int | None = None,
        parameters: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        if max_steps is not None and max_steps < 1:
            raise UserError(f"{self.name} max_steps must be >= 1 or null, got {max_steps}")
        l2l = import_learn2learn(f"meta={self.name}")
        self.first_order = first_order
        self.max_steps = max_steps
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.grad = None
        self.maml = l2l.algorithms.MAML(
            self.module, lr=0.1, first_order=first_order, allow_unused=True, allow_nograd=True
        )
        self.initialization = Initialization(
            self.module, parameters, seed=seed, owner=self.name, storage="shared"
        )
        self.params: list[nn.Parameter] = self.initialization.values  # type: ignore[assignment]
        self.accumulator = FlatBuffer([p.detach() for p in self.params])
        self._tasks = 0
        self._dropped = 0
        self._query_losses: list[Tensor] = []

    def parameters(self) -> list[nn.Parameter]:
        return self.params

    def steps(self, inner: InnerLoopConfig) -> int:
        """The number of adaptation steps K used for `inner`."""
        return inner.steps if self.max_steps is None else min(inner.steps, self.max_steps)

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Adapt a clone of theta_0 on K support batches, add the query loss's gradient
        with respect to theta_0 to the accumulator, and leave theta_K in `model`.

        Returns the K support losses f(theta_0) .. f(theta_{K-1}) and the query loss at
        theta_K (K + 1 values). A task with a non-finite loss or meta-gradient is left out
        of the meta-gradient and flagged `metrics["dropped"] = 1.0` for the runner.
        """
        next_batch = supervised_batches(task, inner.batch_size, self.name)
        if inner.optimizer != "sgd":
            raise UserError(
                f"{self.name} adapts with plain SGD (learn2learn MAML); "
                f"got inner optimizer {inner.optimizer!r}: set meta.inner_optimizer=sgd"
            )
        if inner.weight_decay:
            raise UserError(
                f"{self.name} adapts without weight decay (learn2learn MAML); got "
                f"meta.inner_weight_decay={inner.weight_decay}: set it to 0"
            )
        self.maml.lr = inner.lr
        self.initialization.load(self.module)
        self.module.train()
        learner = self.maml.clone()
        losses: list[Tensor] = []
        for _ in range(self.steps(inner)):
            x, y = next_batch()
            loss = F.cross_entropy(learner(x), y)
            learner.adapt(loss)
            losses.append(loss.detach())
        x, y = next_batch()
        logits = learner(x)
        query = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(query, self.params, allow_unused=True)
        losses.append(query.detach())
        curve = torch.stack(losses)
        present = [
            (v, g) for v, g in zip(self.accumulator.views, grads, strict=True) if g is not None
        ]
        checks = [torch.isfinite(curve).all(), *(torch.isfinite(g).all() for _, g in present)]
        finite = bool(torch.stack(checks).all())
        with torch.no_grad():
            if finite and present:
                torch._foreach_add_([v for v, _ in present], [g for _, g in present])
            self._load_adapted(model, learner)
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        metrics = {"query_accuracy": float(accuracy)}
        if finite:
            self._tasks += 1
            self._query_losses.append(query.detach())
        else:
            self._dropped += 1
            metrics["dropped"] = 1.0
        return InnerLoopResult(losses=curve.cpu(), metrics=metrics)

    def _load_adapted(self, model: nn.Module, learner: nn.Module) -> None:
        """Copy the adapted parameters theta_K and the task's buffers into `model`."""
        adapted = dict(learner.named_parameters())
        named = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        prefix = "module."
        for name, tensor in adapted.items():
            named[name.removeprefix(prefix)].copy_(tensor.detach())
        for name, buffer in self.module.named_buffers():
            buffers[name].copy_(buffer)

    def end_meta_batch(self) -> dict[str, float]:
        """Set `.grad` of theta_0 to the mean query gradient over the meta-batch's tasks
        that were not dropped. Raises `AllTasksDropped` when no task contributed."""
        dropped, self._dropped = self._dropped, 0
        if self._tasks == 0:
            raise AllTasksDropped(
                f"no task contributed to the meta-gradient ({dropped} dropped: "
                "non-finite loss or gradient)"
            )
        grads = torch._foreach_div(self.accumulator.views, float(self._tasks))
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        grad_norm = self.accumulator.squared_norm().sqrt() / self._tasks
        objective = torch.stack(self._query_losses).mean()
        self.accumulator.zero_()
        self._tasks = 0
        self._query_losses = []
        return {
            "meta/objective": float(objective),
            "meta/query_loss": float(objective),
            "meta/grad_norm": float(grad_norm),
        }


@register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the meta-gradient is grad L_query(theta_K) (identity Jacobians)."""

    name = "fomaml"

    def __init__(
        self,
        model: nn.Module,
        max_steps: int | None = None,
        parameters: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, first_order=True, max_steps=max_steps, parameters=parameters, seed=seed
        )
