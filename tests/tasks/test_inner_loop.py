"""The supervised inner loop's Multi-CV options (Leap paper, Appendix E): the epoch cap,
the cosine learning-rate schedule and early stopping, checked against values worked out
by hand; and the hook still sees every step the loop takes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from experiments.config import compose, validate
from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig
from tasks.classification import ClassificationTask
from tasks.inner_loop import EarlyStopping, fit_supervised, learning_rate_factor, planned_steps


def make_task(examples: int = 50, seed: int = 0) -> ClassificationTask:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (examples,), generator=g)
    return ClassificationTask("toy", x, y, x[:6], y[:6], num_outputs=3, seed=seed)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


class Recorder:
    """A trajectory hook that keeps theta_i and grad f(theta_i) of every step."""

    def __init__(self, model: nn.Module) -> None:
        self.params = list(model.parameters())
        self.thetas: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.ends = 0

    def flat(self, tensors) -> Tensor:
        return torch.cat([t.detach().flatten() for t in tensors])

    def on_step(self, loss: Tensor) -> None:
        self.thetas.append(self.flat(self.params).clone())
        self.grads.append(self.flat(p.grad for p in self.params).clone())

    def on_end(self, loss: Tensor) -> None:
        self.thetas.append(self.flat(self.params).clone())
        self.ends += 1


def test_cosine_learning_rates_are_the_hand_computed_ones():
    """Plain SGD: theta_{i+1} - theta_i = -lr_i grad_i, so each step's learning rate is
    read off the trajectory. K = 4, lr = 0.1: 0.1 (1 + cos(i pi / 4)) / 2."""
    expected = [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2]
    assert expected == pytest.approx([0.1, 0.0853553, 0.05, 0.0146447], abs=1e-7)
    config = InnerLoopConfig(steps=4, optimizer="sgd", lr=0.1, batch_size=10, schedule="cosine")
    model = make_model()
    hook = Recorder(model)
    result = make_task().inner_loop(model, config, hook)
    assert result.losses.numel() == 5 and hook.ends == 1
    for i, lr in enumerate(expected):
        step = hook.thetas[i + 1] - hook.thetas[i]
        grad = hook.grads[i]
        assert float(-(step @ grad) / (grad @ grad)) == pytest.approx(lr, rel=1e-5)
        torch.testing.assert_close(step, -lr * grad, rtol=1e-5, atol=1e-7)
    constant = replace(config, schedule="constant")
    assert [learning_rate_factor(constant, i, 4) for i in range(4)] == [1.0] * 4


def test_epoch_cap_counts_steps_per_pass_over_the_training_set():
    # 50 examples, batch 20: ceil(50 / 20) = 3 steps per epoch.
    config = InnerLoopConfig(steps=100, batch_size=20, max_epochs=2)
    assert planned_steps(config, 50) == 6
    assert planned_steps(replace(config, steps=4), 50) == 4, "the step count still caps"
    assert planned_steps(replace(config, max_epochs=None), 50) == 100
    assert planned_steps(replace(config, batch_size=80), 50) == 2, "a batch is the whole set"
    model = make_model()
    hook = Recorder(model)
    result = make_task(50).inner_loop(model, config, hook)
    assert result.losses.numel() == 7 and len(hook.thetas) == 7 and hook.ends == 1
    with pytest.raises(UserError, match="fixed training set"):
        planned_steps(config, None)


def test_cosine_schedule_spans_the_capped_steps():
    """With an epoch cap, the schedule anneals over the steps actually planned."""
    config = InnerLoopConfig(steps=100, lr=0.1, batch_size=20, max_epochs=1, schedule="cosine")
    model = make_model()
    hook = Recorder(model)
    make_task(50).inner_loop(model, config, hook)  # 3 steps: lr 0.1, 0.075, 0.025
    for i, lr in enumerate([0.1, 0.075, 0.025]):
        step = hook.thetas[i + 1] - hook.thetas[i]
        torch.testing.assert_close(step, -lr * hook.grads[i], rtol=1e-5, atol=1e-7)


def test_early_stopping_counts_windows_without_improvement():
    """Window means 3, 2, 2.5, 2.1 with patience 2: the best is 2 at the second window,
    then two windows without a lower mean stop the run at the fourth."""
    stopper = EarlyStopping(patience=2, window=2)
    means = [3.0, 2.0, 2.5, 2.1]
    decisions = []
    for mean in means:
        for offset in (-0.5, 0.5):  # two steps whose mean is `mean`
            decisions.append(stopper.stop(torch.tensor(mean + offset)))
    assert decisions == [False] * 7 + [True]
    stopper = EarlyStopping(patience=2, window=1)
    assert [stopper.stop(torch.tensor(v)) for v in [3.0, 2.0, 1.0, 0.5]] == [False] * 4


def test_early_stopping_ends_the_trajectory_the_hook_sees():
    """lr = 0 on one fixed batch: the loss never improves on the first window, so with
    window 3 and patience 2 the loop stops after 3 * (1 + 2) = 9 steps; the hook saw those
    9 steps and the end."""
    config = InnerLoopConfig(
        steps=50,
        lr=0.0,
        batch_size=50,
        early_stopping_patience=2,
        early_stopping_window=3,
    )
    model = make_model()
    hook = Recorder(model)
    task = make_task(50)
    result = fit_supervised(model, lambda: (task.x_train, task.y_train), config, hook)
    assert result.losses.numel() == 10
    assert len(hook.grads) == 9 and len(hook.thetas) == 10 and hook.ends == 1
    learnable = make_task(50)
    learnable.y_train = learnable.x_train.flatten(1)[:, :3].argmax(1)  # a linear rule
    improving = replace(config, steps=30, lr=0.1)
    result = learnable.inner_loop(make_model(), improving)
    assert result.losses.numel() == 31, "a falling loss never stops early"


def test_leap_sees_every_step_of_an_early_stopped_inner_loop():
    from meta import Leap

    config = InnerLoopConfig(
        steps=50, lr=0.0, batch_size=50, early_stopping_patience=1, early_stopping_window=2
    )
    model = make_model()
    leap = Leap(model)
    task = make_task(50)
    with leap.task(model) as trajectory:
        result = fit_supervised(model, lambda: (task.x_train, task.y_train), config, trajectory)
    assert result.losses.numel() == 5 and trajectory.segments == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(schedule="linear"), "accepted: constant, cosine"),
        (dict(max_epochs=0), "max_epochs must be >= 1"),
        (dict(early_stopping_patience=0), "early_stopping_patience must be >= 1"),
        (dict(early_stopping_window=0), "early_stopping_window must be >= 1"),
    ],
)
def test_bad_inner_loop_values_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        InnerLoopConfig(**options)


def test_config_passes_the_options_and_validates_them():
    cfg = compose(["experiment=multicv_leap"])
    inner = cfg.meta.inner()
    assert (inner.schedule, inner.max_epochs, inner.early_stopping_patience) == ("cosine", 1, 10)
    default = compose([]).meta.inner()
    assert (default.schedule, default.max_epochs, default.early_stopping_patience) == (
        "constant",
        None,
        None,
    )
    with pytest.raises(UserError, match=r"meta\.inner_schedule='step' is not accepted"):
        validate(compose(["meta.inner_schedule=step"]))
    with pytest.raises(UserError, match=r"meta\.inner_max_epochs"):
        validate(compose(["meta.inner_max_epochs=0"]))
