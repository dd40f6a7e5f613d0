"""Multi-headed finetuning: the pretraining baseline of the Leap paper (Section 4.1).

One body is trained on the union of the meta-training tasks, each task with an output
head of its own; the body is then the initialization from which held-out tasks are
finetuned (with a fresh head). Under the runner's loop this is sequential multi-task
training: `adapt` loads the learner's persistent body into the model, draws a fresh head
for the task, trains body and head jointly with the task's ordinary inner loop
(`task.inner_loop`, inner optimizer and K steps as configured) and keeps the trained
body, so the body accumulates the training of every task it has seen, in the order the
runner samples them. Nothing is learned through a meta-gradient: `parameters()` is
empty, so the runner builds no meta-optimizer (meta_optimizer and meta_lr are unused).

Body and head: `parameters` (the task family's shared part, which the runner passes
when the family names one, as the Atari encoder) is the body and every other trainable
parameter is head; otherwise `head` lists the head's module names, by default the
module that owns the model's last trainable parameter (the output layer: `classifier`
of conv4, `head` of the ConvRNNs). Head parameters are drawn afresh for every task and
for the initialization (`meta.base.FreshDraw`, seeds `seed`, `seed + 1`, ...).

Buffers (BatchNorm running statistics) belong to the body: they carry over from task to
task as in ordinary training, and the initialization keeps them.
"""

from __future__ import annotations

import torch
from torch import nn

from leap_convrnn.errors import AllTasksDropped, UserError
from meta.base import Initialization, MetaLearner
from meta.registry import register
from tasks.base import InnerLoopConfig, InnerLoopResult, Task


def default_head(model: nn.Module) -> list[str]:
    """The module owning the model's last trainable parameter (its output layer)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        return []
    return [names[-1].rpartition(".")[0]]


@register("finetune")
class Finetune(MetaLearner):
    """Multi-headed pretraining on the union of the meta-training tasks (see module docstring).

    Args:
        model: the network; its current parameters and buffers start the body.
        head: module names of the per-task head (default: the output layer); ignored
            when `parameters` names the body.
        parameters: names of the body's parameters (default: every trainable parameter
            outside `head`).
        seed: seed of the first fresh head (the n-th draw uses `seed + n`).
    """

    name = "finetune"
    initialization: Initialization

    def __init__(
        self,
        model: nn.Module,
        head: list[str] | None = None,
        parameters: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        if parameters is not None:
            body = list(parameters)
        else:
            modules = default_head(model) if head is None else list(head)
            known = {n for n, _ in model.named_modules()}
            unknown = sorted(set(modules) - known)
            if unknown:
                raise UserError(
                    f"finetune head {unknown} names no module of the model; "
                    f"accepted: {', '.join(sorted(n for n in known if n))}"
                )
            body = [n for n in trainable if not any(_inside(n, m) for m in modules)]
        if not body:
            raise UserError("finetune has an empty body: every trainable parameter is head")
        self.initialization = Initialization(
            model, body, seed=seed, owner="finetune", storage="tensor"
        )
        self._tasks = 0
        self._dropped = 0

    @property
    def head_names(self) -> list[str]:
        """The per-task head: the trainable parameters outside the body, drawn afresh."""
        return self.initialization.fresh.names

    def parameters(self) -> list[nn.Parameter]:
        return []

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Train body and a fresh head on the task; keep the trained body and buffers.

        A task whose losses or trained body are not finite leaves the body as it was and
        is flagged `metrics["dropped"] = 1.0` for the runner.
        """
        self.initialize(model)
        result = task.inner_loop(model, inner)
        body = [p.detach() for p in self.initialization.bind(model)]
        checks = [torch.isfinite(result.losses).all(), *(torch.isfinite(t).all() for t in body)]
        if not bool(torch.stack([c.cpu() for c in checks]).all()):
            result.metrics["dropped"] = 1.0
            self._dropped += 1
            return result
        self.initialization.keep(model)
        self._tasks += 1
        return result

    def end_meta_batch(self) -> dict[str, float]:
        """Nothing to average: the body is trained by the inner loops themselves. Raises
        `AllTasksDropped` when no task of the meta-batch trained it."""
        dropped, self._dropped = self._dropped, 0
        if self._tasks == 0:
            raise AllTasksDropped(f"no task trained the body ({dropped} dropped: non-finite loss)")
        self._tasks = 0
        return {}


def _inside(parameter: str, module: str) -> bool:
    return module == "" or parameter.startswith(f"{module}.")
