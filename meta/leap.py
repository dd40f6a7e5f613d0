"""Leap: meta-learn the initialization that makes learning trajectories short.

Flennerhag et al., "Transferring Knowledge across Learning Processes", ICLR 2019.
Each task's training run visits theta_0, ..., theta_K. Augmented with the loss,
gamma_i = (theta_i, f(theta_i)), the run is a path on the loss surface, and Leap
minimises its expected length (or energy) over tasks. With the Jacobians of the
inner updates taken as identity, the meta-gradient (paper Eq. 6 and Algorithm 1) is

    grad F(theta_0) = - E_tau sum_{i=0}^{K-1} w_i (Delta f_i grad f(theta_i) + Delta theta_i)

with Delta theta_i = theta_{i+1} - theta_i, Delta f_i = f(theta_{i+1}) - f(theta_i),
w_i = 1 / ||(Delta theta_i, Delta f_i)|| for the length metric (p = 1) and w_i = 2
for the energy metric (p = 2, the derivative of the squared norm).

Options: `loss_in_manifold=False` drops every Delta f term (in the sum and in the
norm); `stabilizer=True` replaces Delta f_i by -|Delta f_i|, so that a step that
raised the loss never pulls the initialization towards it; `final_segment=True`
counts the segment theta_{K-1} -> theta_K (the paper's reference code drops it),
using the loss at theta_K that every inner loop reports.

The gradient is accumulated on the fly during the ordinary inner loop: per step,
a handful of `torch._foreach_*` kernels over the parameters, no extra forward or
backward pass, no host-device synchronisation, and memory that does not grow with K.

Buffers (BatchNorm running statistics) are not part of the path: every task starts
from the buffers the model had when Leap was built, as in the paper's code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from experiments.errors import UserError
from meta.base import MetaLearner
from meta.registry import register
from tasks.base import InnerLoopConfig, InnerLoopResult, Task

METRICS = ("length", "energy")


class LeapTrajectory:
    """Accumulates one task's contribution to the Leap meta-gradient, step by step.

    Implements the `TrajectoryHook` protocol. Keeps the previous point (theta_i,
    f(theta_i), grad f(theta_i)); when the next point arrives, the segment between
    them is complete and its term is added to `accumulator`.
    """

    def __init__(self, leap: Leap, params: list[nn.Parameter], accumulator: list[Tensor]) -> None:
        self._leap = leap
        self._params = params
        self._acc = accumulator
        self._zeros = [torch.zeros_like(p) for p in params]
        self._prev_theta: list[Tensor] | None = None
        self._prev_grad: list[Tensor] = []
        self._prev_loss = torch.zeros(())
        self.length = torch.zeros((), device=params[0].device if params else None)
        self.segments = 0

    def _grads(self) -> list[Tensor]:
        return [
            p.grad.detach() if p.grad is not None else z
            for p, z in zip(self._params, self._zeros, strict=True)
        ]

    def _point(self) -> list[Tensor]:
        return [p.detach() for p in self._params]

    def on_step(self, loss: Tensor) -> None:
        """Record theta_i, f(theta_i) and grad f(theta_i); complete segment i-1."""
        loss = loss.detach()
        theta = self._point()
        if self._prev_theta is None:
            self._prev_theta = torch._foreach_mul(theta, 1.0)
            self._prev_grad = torch._foreach_mul(self._grads(), 1.0)
        else:
            self._segment(theta, loss)
            torch._foreach_copy_(self._prev_theta, theta)
            torch._foreach_copy_(self._prev_grad, self._grads())
        self._prev_loss = loss

    def on_end(self, loss: Tensor) -> None:
        """Complete the final segment theta_{K-1} -> theta_K if the learner counts it."""
        if self._prev_theta is not None and self._leap.final_segment:
            self._segment(self._point(), loss.detach())

    def _segment(self, theta_next: list[Tensor], loss_next: Tensor) -> None:
        """Add -w_i (Delta f_i grad f(theta_i) + Delta theta_i) to the accumulator (Eq. 6)."""
        leap = self._leap
        assert self._prev_theta is not None
        neg_delta = self._prev_theta  # reused in place: becomes theta_i - theta_{i+1}
        torch._foreach_sub_(neg_delta, theta_next)
        squared = torch.stack(torch._foreach_norm(neg_delta)).square().sum()
        delta_f: Tensor | None = None
        if leap.loss_in_manifold:
            delta_f = loss_next - self._prev_loss
            if leap.stabilizer:
                delta_f = -delta_f.abs()
            squared = squared + delta_f.square()
        length = squared.sqrt()
        if leap.metric == "length":
            weight = length.clamp_min(leap.eps).reciprocal()
            self.length = self.length + length
        else:
            weight = torch.full_like(length, 2.0)
            self.length = self.length + squared
        weight = weight * leap.scale
        torch._foreach_mul_(neg_delta, weight)
        torch._foreach_add_(self._acc, neg_delta)
        if delta_f is not None:
            torch._foreach_mul_(self._prev_grad, -(weight * delta_f))
            torch._foreach_add_(self._acc, self._prev_grad)
        self.segments += 1


@register("leap")
class Leap(MetaLearner):
    """First-order Leap over the trainable parameters of a model (see module docstring).

    Args:
        model: the network whose initialization is learned; its current parameters
            and buffers are the starting initialization.
        metric: "length" (p = 1, the default) or "energy" (p = 2).
        loss_in_manifold: augment the parameter path with the loss coordinate.
        stabilizer: use -|Delta f| in place of Delta f.
        final_segment: count the last segment theta_{K-1} -> theta_K.
        scale: a constant multiplying the meta-gradient (Reptile uses 1/2).
        eps: lower bound on a segment's length in the length metric's weight.
        parameters: names of the model parameters to meta-learn (default: all
            trainable ones); the others are left as the task finds them.
    """

    name = "leap"

    def __init__(
        self,
        model: nn.Module,
        metric: str = "length",
        loss_in_manifold: bool = True,
        stabilizer: bool = True,
        final_segment: bool = True,
        scale: float = 1.0,
        eps: float = 1e-12,
        parameters: list[str] | None = None,
    ) -> None:
        if metric not in METRICS:
            raise UserError(f"unknown Leap metric {metric!r}; accepted: {', '.join(METRICS)}")
        self.metric = metric
        self.loss_in_manifold = loss_in_manifold
        self.stabilizer = stabilizer
        self.final_segment = final_segment
        self.scale = scale
        self.eps = eps
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if parameters is not None:
            unknown = sorted(set(parameters) - set(named))
            if unknown:
                raise UserError(
                    f"Leap parameters {unknown} are not trainable parameters of the model; "
                    f"accepted: {', '.join(named)}"
                )
            named = {n: named[n] for n in parameters}
        self.names = list(named)
        self.init = [nn.Parameter(p.detach().clone()) for p in named.values()]
        self.init_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self._acc = [torch.zeros_like(p) for p in self.init]
        self._tasks = 0
        self._lengths: list[Tensor] = []

    def parameters(self) -> list[nn.Parameter]:
        return self.init

    def _bind(self, model: nn.Module) -> list[nn.Parameter]:
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]

    def initialize(self, model: nn.Module) -> None:
        """Copy the initialization theta_0 and the initial buffers into `model`."""
        with torch.no_grad():
            torch._foreach_copy_(self._bind(model), [p.detach() for p in self.init])
            buffers = dict(model.named_buffers())
            for name, value in self.init_buffers.items():
                buffers[name].copy_(value)

    @contextmanager
    def task(self, model: nn.Module) -> Iterator[LeapTrajectory]:
        """Load theta_0 into `model` and record the trajectory of the training run inside.

        The yielded `LeapTrajectory` is the inner loop's hook. On exit, the task's
        term is in the accumulator; `end_meta_batch` averages over tasks.
        """
        self.initialize(model)
        trajectory = LeapTrajectory(self, self._bind(model), self._acc)
        yield trajectory
        self._tasks += 1
        self._lengths.append(trajectory.length)

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        with self.task(model) as trajectory:
            return task.inner_loop(model, inner, trajectory)

    def end_meta_batch(self) -> dict[str, float]:
        """Set `.grad` of the initialization to the meta-batch mean; return meta/ metrics."""
        if self._tasks == 0:
            raise RuntimeError("end_meta_batch called before any task was adapted")
        grads = torch._foreach_div(self._acc, float(self._tasks))
        for p, g in zip(self.init, grads, strict=True):
            p.grad = g
        grad_norm = torch.stack(torch._foreach_norm(grads)).norm()
        objective = torch.stack(self._lengths).mean()
        torch._foreach_zero_(self._acc)
        self._tasks = 0
        self._lengths = []
        key = "meta/path_length" if self.metric == "length" else "meta/path_energy"
        return {"meta/objective": float(objective), key: float(objective),
                "meta/grad_norm": float(grad_norm)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["buffers"] = {n: b.clone() for n, b in self.init_buffers.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.init_buffers = {n: b.clone() for n, b in state["buffers"].items()}


@register("reptile")
class Reptile(Leap):
    """Reptile (Nichol et al. 2018) as the Leap special case: energy metric, no loss
    coordinate, no stabilizer, scaled by 1/2 so that the meta-gradient is exactly the
    Reptile update, the meta-batch mean of theta_0 - theta_K."""

    name = "reptile"

    def __init__(self, model: nn.Module, parameters: list[str] | None = None) -> None:
        super().__init__(
            model,
            metric="energy",
            loss_in_manifold=False,
            stabilizer=False,
            final_segment=True,
            scale=0.5,
            parameters=parameters,
        )
