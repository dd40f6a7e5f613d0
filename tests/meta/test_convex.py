"""Leap on a convex toy family: quadratics f_tau(theta) = 1/2 (theta - m_tau)^T A (theta - m_tau)
with random minima m_tau, trained by K steps of SGD with learning rate alpha.

What is checked, exactly: meta-training theta_0 with Leap's on-the-fly meta-gradient
(the real `Leap.adapt` over `Task.inner_loop`, full meta-batch over a fixed set of
tasks, a torch meta-optimizer) reaches the minimiser of the expected path length (or
energy) of the very same inner loops, found independently by scipy over theta_0, with
each task's path computed by unrolling the K SGD steps in NumPy.

Which configurations: Leap's meta-gradient takes the Jacobians d theta_{i+1}/d theta_i
= (I - alpha A) as the identity, so in general it finds a stationary point of its own
first-order approximation, not of the path length itself. Two settings make the two
coincide, and both are checked:

- energy metric without the loss coordinate (Reptile's case), any SPD A: the meta-gradient
  is 2 E[theta_0 - theta_K] = 2 (I - (I - alpha A)^K)(theta_0 - E m), and the exact energy
  is a quadratic form in theta_0 - m_tau with a task-independent matrix: both vanish at the
  mean of the minima;
- length metric without the loss coordinate, isotropic A = a I: every segment of a task's
  path points along theta_0 - m_tau, so the meta-gradient is K E[unit(theta_0 - m_tau)]
  and the exact length is (1 - (1 - alpha a)^K) E ||theta_0 - m_tau||: both vanish at the
  geometric median of the minima, which the minima below put far from their mean.

With the loss coordinate the radial profiles of the first-order and exact gradients
differ (sum_i sqrt(1 + a^2 r_i^2) against a boundary term), so their stationary points
differ for skewed minima; those configurations are checked against the formula and
against autograd of the path length in test_leap.py instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from meta import Leap
from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TrajectoryHook
from tasks.optimizers import make_optimizer

# Seven random minima from a skewed (exponential) distribution: their geometric median
# lies 0.6 from their mean and 0.34 from the nearest minimum (so Leap's length weights
# stay finite at the optimum).
MINIMA = np.random.default_rng(3).exponential(1.0, size=(7, 2)) * np.array([2.0, 1.0])
STEPS = 5
ALPHA = 0.1


class Point(nn.Module):
    """The model of a quadratic task: theta itself."""

    def __init__(self, theta: np.ndarray) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))


@dataclass
class QuadraticTask(Task):
    """f(theta) = 1/2 (theta - m)^T A (theta - m), trained by the configured optimizer."""

    minimum: Tensor
    curvature: Tensor
    name: str = "quadratic"
    num_outputs: int = 0

    def loss(self, model: nn.Module) -> Tensor:
        r = model.theta - self.minimum
        return 0.5 * r @ self.curvature @ r

    def inner_loop(
        self, model: nn.Module, config: InnerLoopConfig, hook: TrajectoryHook | None = None
    ) -> InnerLoopResult:
        optimizer = make_optimizer(model.parameters(), config)
        losses = []
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(model)
            loss.backward()
            if hook is not None:
                hook.on_step(loss.detach())
            optimizer.step()
            losses.append(loss.detach())
        with torch.no_grad():
            final = self.loss(model)
        if hook is not None:
            hook.on_end(final)
        losses.append(final)
        return InnerLoopResult(torch.stack(losses))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(self.loss(model))}


def expected_path(theta0: np.ndarray, curvature: np.ndarray, power: int) -> float:
    """Mean over tasks of sum_i ||theta_{i+1} - theta_i||^power, unrolling K SGD steps."""
    total = 0.0
    for m in MINIMA:
        theta = np.array(theta0, dtype=np.float64)
        for _ in range(STEPS):
            step = -ALPHA * curvature @ (theta - m)
            total += float(np.linalg.norm(step)) ** power
            theta = theta + step
    return total / len(MINIMA)


def numerical_optimum(curvature: np.ndarray, power: int) -> np.ndarray:
    result = minimize(
        expected_path,
        MINIMA.mean(0),
        args=(curvature, power),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000},
    )
    assert result.success
    return np.asarray(result.x)


def meta_train(
    curvature: np.ndarray, metric: str, meta_steps: int, lr: float, decay: float
) -> np.ndarray:
    """Leap meta-training of theta_0 over all tasks (full meta-batch), meta-SGD with
    an exponentially decaying learning rate, from the origin."""
    model = Point(np.zeros(2))
    leap = Leap(model, metric=metric, loss_in_manifold=False, stabilizer=False)
    a = torch.tensor(curvature)
    tasks = [QuadraticTask(torch.tensor(m), a) for m in MINIMA]
    inner = InnerLoopConfig(steps=STEPS, optimizer="sgd", lr=ALPHA)
    optimizer = torch.optim.SGD(leap.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, decay)
    for _ in range(meta_steps):
        optimizer.zero_grad(set_to_none=True)
        for task in tasks:
            leap.adapt(model, task, inner)
        leap.end_meta_batch()
        optimizer.step()
        schedule.step()
    return leap.parameters()[0].detach().numpy().copy()


def test_energy_without_loss_converges_to_the_minimiser_of_the_expected_energy():
    rotation = np.linalg.qr(np.array([[1.0, 2.0], [-0.5, 1.0]]))[0]
    curvature = rotation @ np.diag([1.0, 4.0]) @ rotation.T  # anisotropic SPD
    optimum = numerical_optimum(curvature, power=2)
    np.testing.assert_allclose(optimum, MINIMA.mean(0), atol=1e-6)
    learned = meta_train(curvature, "energy", meta_steps=60, lr=0.5, decay=1.0)
    np.testing.assert_allclose(learned, optimum, atol=1e-5)


def test_length_without_loss_converges_to_the_minimiser_of_the_expected_length():
    curvature = 2.0 * np.eye(2)
    optimum = numerical_optimum(curvature, power=1)
    # The check discriminates: the minimiser (a geometric median) is far from the mean,
    # where an energy-like (Reptile) update would go.
    assert np.linalg.norm(optimum - MINIMA.mean(0)) > 0.5
    assert np.linalg.norm(MINIMA - optimum, axis=1).min() > 0.3
    learned = meta_train(curvature, "length", meta_steps=150, lr=0.15, decay=0.97)
    np.testing.assert_allclose(learned, optimum, atol=1e-4)
    assert expected_path(learned, curvature, 1) - expected_path(optimum, curvature, 1) < 1e-8


@pytest.mark.parametrize("metric", ["length", "energy"])
def test_meta_gradient_is_parallel_to_the_exact_gradient_for_isotropic_curvature(metric):
    """For A = a I every path is a straight line towards m_tau with steps shrinking by
    c = 1 - alpha a, so Leap's first-order meta-gradient is the exact gradient of the
    unrolled objective times a task-independent factor: K / (1 - c^K) for the length,
    (1 - c^K) / ((1 - c)^2 sum_{i<K} c^{2i}) for the energy. Checked against central
    finite differences of the NumPy unrolling at an arbitrary theta_0."""
    a = 2.0
    curvature = a * np.eye(2)
    theta0 = np.array([0.7, -0.4])
    model = Point(theta0)
    leap = Leap(model, metric=metric, loss_in_manifold=False, stabilizer=False)
    inner = InnerLoopConfig(steps=STEPS, optimizer="sgd", lr=ALPHA)
    for m in MINIMA:
        leap.adapt(model, QuadraticTask(torch.tensor(m), torch.tensor(curvature)), inner)
    leap.end_meta_batch()
    leap_grad = leap.parameters()[0].grad.numpy()
    power = 1 if metric == "length" else 2
    h = 1e-6
    exact = np.array(
        [
            (
                expected_path(theta0 + h * e, curvature, power)
                - expected_path(theta0 - h * e, curvature, power)
            )
            / (2 * h)
            for e in np.eye(2)
        ]
    )
    c = 1.0 - ALPHA * a
    if metric == "length":
        factor = STEPS / (1.0 - c**STEPS)
    else:
        factor = (1.0 - c**STEPS) / ((1.0 - c) ** 2 * sum(c ** (2 * i) for i in range(STEPS)))
    np.testing.assert_allclose(leap_grad, factor * exact, rtol=1e-6)
