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

Energy and the factor 2: the paper's reference code omits the 2 of the energy metric's
weight (w_i = 1 there), so its meta-gradient is half of this one. Under SGD (no momentum)
the meta-update is lr times the gradient, so this implementation at meta learning rate
lr / 2 takes exactly the reference code's steps at lr: to reproduce a reference run with
meta SGD at 0.1 on the energy metric, set `meta.meta_lr=0.05`. Adam is invariant to the
scale of the gradient (up to its epsilon), so under Adam the two agree at the same rate.
Reptile (below) sets `scale=0.5`, which removes the factor.

The objective and its two parts, logged per meta-batch (means over the tasks that
contributed): `meta/objective` is the path's length, sum_i ||(Delta theta_i, Delta f_i)||,
or energy, sum_i ||(Delta theta_i, Delta f_i)||^2. For the length metric
`meta/path_distance` = sum_i ||Delta theta_i|| (how far the parameters travel) and
`meta/path_loss_change` = sum_i |Delta f_i| (how much the loss moves, up and down); the
length lies between the larger of the two and their sum. For the energy metric
`meta/path_distance_sq` = sum_i ||Delta theta_i||^2 and `meta/path_loss_change_sq` =
sum_i Delta f_i^2, whose sum is the energy when the loss is a coordinate. The loss parts
are logged with `loss_in_manifold=False` too (the objective then holds the distance only).

Options: `loss_in_manifold=False` drops every Delta f term (in the sum and in the
norm); `stabilizer=True` replaces Delta f_i by -|Delta f_i| (in the sum and in the
norm), so that a step that raised the loss never pulls the initialization towards it.

Final segment: the paper's reference code drops the last segment theta_{K-1} ->
theta_K. Here it is counted by default (`final_segment=True`), because Eq. 6 sums over
all K segments of a K-step run and the loss at theta_K is measured anyway (every inner
loop reports f(theta_K) through `TrajectoryHook.on_end`); without it, the last update
of every task is invisible to the meta-gradient and a 1-step inner loop learns nothing.
`final_segment=False` reproduces the reference code.

The trajectory is read from the parameters themselves at each step, so any torch inner
optimizer (SGD, momentum, Adam, RMSprop, ...) works. The gradient is accumulated on the
fly during the ordinary inner loop: no extra forward or backward pass; memory that does
not grow with K (five copies of the meta-learned parameters: theta_i, grad f(theta_i),
the task's and the meta-batch's accumulators, and theta_0); no host-device
synchronisation (every scalar stays a device tensor); and no per-parameter Python loop
of tensor operations: per step, one `torch._foreach_sub_` and one `torch._foreach_copy_`
over the parameters and their gradients, then a dot product and two multiply-adds on
flat buffers (`meta.base.FlatBuffer`), whatever the number of parameter tensors. The
gradient of f(theta_i) is copied because inner loops may modify it in place after the
hook (A2C clips it).

A parameter that gets no gradient in a step (an unused head, a skipped branch) counts
with a zero gradient: it contributes only its Delta theta (zero under SGD, momentum,
Adam and RMSprop, which skip it).

Buffers (BatchNorm running statistics) are not on the path and are not meta-learned:
every task starts from the buffers the model had when Leap was built, as in the paper's
code. Carrying them over would start each task from the previous task's statistics,
which depend on the order of the tasks rather than on the initialization.

Parameter subsets: `parameters=[names]` meta-learns those only (the Atari encoder, say);
the path, its length and its norm are measured in that subspace (plus the loss). Every
other trainable parameter is drawn afresh for each task (`meta.base.FreshDraw`: its
modules' own `reset_parameters()` under the seed `seed + n` for the n-th draw), so a
task-specific head never inherits another task's training.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from leap_convrnn.errors import AllTasksDropped, UserError
from meta.base import FlatBuffer, Initialization, MetaLearner
from meta.registry import register
from tasks.base import InnerLoopConfig, InnerLoopResult, Task

METRICS = ("length", "energy")


class LeapTrajectory:
    """Accumulates one task's contribution to the Leap meta-gradient, step by step.

    Implements the `TrajectoryHook` protocol. Keeps the previous point (theta_i,
    f(theta_i), grad f(theta_i)) in flat buffers; when the next point arrives, the
    segment between them is complete and its term of Eq. 6 is added to the task's
    `accumulator` (which `Leap.task` adds to the meta-batch's once the task completes).
    Per step: one `torch._foreach_sub_` and one `torch._foreach_copy_` over the
    parameters (and their gradients), a dot product and two multiply-adds on the flat
    buffers, and a few in-place 0-dim device operations for the segment's weight and the
    path's two parts (parameter distance and loss change).
    """

    def __init__(self, leap: Leap, params: list[Tensor]) -> None:
        self._leap = leap
        self._params = params
        self.accumulator = FlatBuffer(list(params))
        self._theta = FlatBuffer(list(params))
        self._grad = FlatBuffer(list(params)) if leap.loss_in_manifold else None
        self._prev_loss: Tensor | None = None
        self._eps_squared = leap.eps**2
        dtype = functools.reduce(torch.promote_types, (f.dtype for f in self.accumulator.flats))
        dtype = torch.promote_types(dtype, torch.float32)
        device = params[0].device
        self.length = torch.zeros((), dtype=dtype, device=device)
        self.distance = torch.zeros((), dtype=dtype, device=device)
        """sum_i ||Delta theta_i|| (length metric) or sum_i ||Delta theta_i||^2 (energy)."""
        self.loss_change = torch.zeros((), dtype=dtype, device=device)
        """sum_i |Delta f_i| (length metric) or sum_i Delta f_i^2 (energy)."""
        self._part = torch.zeros((), dtype=dtype, device=device)
        self._squared = torch.zeros((), dtype=dtype, device=device)
        self._weight = torch.zeros((), dtype=dtype, device=device)
        self._neg_df: Tensor | None = None  # allocated at the first segment, like the loss
        self.segments = 0
        self.dropped = False

    def on_step(self, loss: Tensor) -> None:
        """Record theta_i, f(theta_i) and grad f(theta_i); complete segment i-1."""
        if loss.requires_grad:
            loss = loss.detach()
        with torch.no_grad():
            if self._prev_loss is not None:
                self._segment(loss)
            self._record()
        self._prev_loss = loss

    def on_end(self, loss: Tensor) -> None:
        """Complete the final segment theta_{K-1} -> theta_K if the learner counts it."""
        if self._prev_loss is not None and self._leap.final_segment:
            with torch.no_grad():
                self._segment(loss.detach() if loss.requires_grad else loss)

    def finite(self) -> bool:
        """Whether the task's contribution is finite (one host sync: call once per task)."""
        checks = [torch.isfinite(flat).all() for flat in self.accumulator.flats]
        return bool(torch.stack([*checks, torch.isfinite(self.length)]).all())

    def _record(self) -> None:
        """Copy theta_i (and grad f(theta_i) if the loss is a coordinate) into the buffers,
        in one foreach call; a parameter without a gradient gets a zero gradient."""
        if self._grad is None:
            torch._foreach_copy_(self._theta.views, self._params)
            return
        grads = [p.grad for p in self._params]
        if all(g is not None for g in grads):
            torch._foreach_copy_(
                self._theta.views + self._grad.views,
                [*self._params, *grads],  # type: ignore[list-item]
            )
            return
        torch._foreach_copy_(self._theta.views, self._params)
        for view, grad in zip(self._grad.views, grads, strict=True):
            if grad is None:
                view.zero_()
            else:
                view.copy_(grad)

    def _segment(self, loss_next: Tensor) -> None:
        """Add -w_i (Delta f_i grad f(theta_i) + Delta theta_i) to the accumulator (Eq. 6).

        The theta buffer holds theta_i and becomes theta_i - theta_{i+1} - Delta f_i grad
        f(theta_i), the bracket of Eq. 6 with its sign flipped; `_record` then refills it.
        Every intermediate lives in a preallocated buffer: a step allocates no tensor.
        """
        leap = self._leap
        assert self._prev_loss is not None
        bracket = self._theta
        torch._foreach_sub_(bracket.views, self._params)  # -Delta theta_i
        squared = bracket.squared_norm(out=self._squared)
        if self._neg_df is None:
            self._neg_df = torch.empty_like(self._prev_loss - loss_next)
        neg_df = torch.sub(self._prev_loss, loss_next, out=self._neg_df)  # -Delta f_i
        if leap.metric == "length":
            self.distance.add_(torch.sqrt(squared, out=self._part))
            self.loss_change.add_(torch.abs(neg_df, out=self._part))
        else:
            self.distance.add_(squared)
            self.loss_change.addcmul_(neg_df, neg_df)
        if self._grad is not None:
            if leap.stabilizer:  # -Delta f_i becomes |Delta f_i|
                neg_df.abs_()
            squared.addcmul_(neg_df, neg_df)
            for out, grad in zip(bracket.flats, self._grad.flats, strict=True):
                out.addcmul_(grad, neg_df)
        if leap.metric == "length":
            squared.clamp_min_(self._eps_squared)
            weight = torch.rsqrt(squared, out=self._weight)  # 1 / max(||(dtheta, df)||, eps)
            self.length.addcmul_(squared, weight)
            if leap.scale != 1.0:
                weight.mul_(leap.scale)
            for acc, out in zip(self.accumulator.flats, bracket.flats, strict=True):
                acc.addcmul_(out, weight)
        else:
            self.length.add_(squared)
            for acc, out in zip(self.accumulator.flats, bracket.flats, strict=True):
                acc.add_(out, alpha=2.0 * leap.scale)
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
        final_segment: count the last segment theta_{K-1} -> theta_K (the paper's
            reference code does not; see the module docstring).
        scale: a constant multiplying the meta-gradient (Reptile uses 1/2).
        eps: lower bound on a segment's length in the length metric's weight.
        parameters: names of the model parameters to meta-learn (default: all
            trainable ones); the other trainable parameters are drawn afresh per task.
        seed: seed of the first fresh draw of the parameters left out of `parameters`
            (the n-th draw uses `seed + n`).
    """

    name = "leap"
    initialization: Initialization

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
        seed: int = 0,
    ) -> None:
        if metric not in METRICS:
            raise UserError(f"unknown Leap metric {metric!r}; accepted: {', '.join(METRICS)}")
        self.metric = metric
        self.loss_in_manifold = loss_in_manifold
        self.stabilizer = stabilizer
        self.final_segment = final_segment
        self.scale = float(scale)
        self.eps = eps
        self.initialization = Initialization(
            model, parameters, seed=seed, owner=type(self).__name__
        )
        self.init: list[nn.Parameter] = self.initialization.values  # type: ignore[assignment]
        if len({p.device for p in self.init}) > 1:
            raise UserError(f"{type(self).__name__} needs its parameters on one device")
        self.accumulator = FlatBuffer(list(self.init))
        self._tasks = 0
        self._dropped = 0
        self._lengths: list[Tensor] = []
        self._distances: list[Tensor] = []
        self._loss_changes: list[Tensor] = []

    def parameters(self) -> list[nn.Parameter]:
        return self.init

    @contextmanager
    def task(self, model: nn.Module) -> Iterator[LeapTrajectory]:
        """Load theta_0 into `model` and record the trajectory of the training run inside.

        The yielded `LeapTrajectory` is the inner loop's hook. On a normal exit the
        task's term joins the meta-batch's accumulator and `end_meta_batch` averages
        over tasks. A task contributes nothing if its inner loop raises, or if its term
        is not finite or the caller set `trajectory.dropped` (a diverged inner loop):
        it is counted as dropped.
        """
        self.initialize(model)
        trajectory = LeapTrajectory(self, self.initialization.bind(model))
        yield trajectory
        if trajectory.dropped or not trajectory.finite():
            trajectory.dropped = True
            self._dropped += 1
            return
        for total, part in zip(self.accumulator.flats, trajectory.accumulator.flats, strict=True):
            total.add_(part)
        self._tasks += 1
        self._lengths.append(trajectory.length)
        self._distances.append(trajectory.distance)
        self._loss_changes.append(trajectory.loss_change)

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        """Run the task's inner loop from theta_0 with the trajectory hook.

        A task whose losses or meta-gradient term are not finite is left out of the
        meta-gradient and flagged `metrics["dropped"] = 1.0` for the runner.
        """
        with self.task(model) as trajectory:
            result = task.inner_loop(model, inner, trajectory)
            if not bool(torch.isfinite(result.losses).all()):
                trajectory.dropped = True
        if trajectory.dropped:
            result.metrics["dropped"] = 1.0
        return result

    def end_meta_batch(self) -> dict[str, float]:
        """Set `.grad` of the initialization to the mean over the meta-batch's tasks that
        were not dropped; return meta/ metrics. Raises `AllTasksDropped` when no task
        contributed (the initialization's `.grad` is then left untouched)."""
        dropped, self._dropped = self._dropped, 0
        if self._tasks == 0:
            raise AllTasksDropped(
                f"no task contributed to the meta-gradient ({dropped} dropped: "
                "non-finite loss or gradient in the inner loop)"
            )
        grads = torch._foreach_div(self.accumulator.views, float(self._tasks))
        for p, g in zip(self.init, grads, strict=True):
            p.grad = g
        grad_norm = self.accumulator.squared_norm().sqrt() / self._tasks
        figures = torch.stack(
            [
                torch.stack(self._lengths).mean(),
                torch.stack(self._distances).mean(),
                torch.stack(self._loss_changes).mean(),
                grad_norm.to(self._lengths[0].dtype),
            ]
        ).tolist()  # one host sync for every figure
        objective, distance, loss_change, norm = figures
        self.accumulator.zero_()
        self._tasks = 0
        self._lengths, self._distances, self._loss_changes = [], [], []
        if self.metric == "length":
            parts = {"meta/path_distance": distance, "meta/path_loss_change": loss_change}
            key = "meta/path_length"
        else:
            parts = {"meta/path_distance_sq": distance, "meta/path_loss_change_sq": loss_change}
            key = "meta/path_energy"
        return {"meta/objective": objective, key: objective, **parts, "meta/grad_norm": norm}


@register("reptile")
class Reptile(Leap):
    """Reptile (Nichol et al. 2018) as the Leap special case: energy metric, no loss
    coordinate, no stabilizer, scaled by 1/2 so that the meta-gradient is exactly the
    Reptile update, the meta-batch mean of theta_0 - theta_K (the per-step terms
    2 (theta_i - theta_{i+1}) / 2 telescope)."""

    name = "reptile"

    def __init__(
        self, model: nn.Module, parameters: list[str] | None = None, seed: int = 0
    ) -> None:
        super().__init__(
            model,
            metric="energy",
            loss_in_manifold=False,
            stabilizer=False,
            final_segment=True,
            scale=0.5,
            parameters=parameters,
            seed=seed,
        )
