"""`Task.to(device)`: a supervised task moved to a device draws the same minibatches (and
the same augmentation) as on the CPU, and keeps its held-out set."""

from __future__ import annotations

import pytest
import torch

from tasks.classification import ClassificationTask, RandomAffine
from tests.conftest import DEVICES


def _task(augment: bool) -> ClassificationTask:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 12, 12, generator=generator)
    y = torch.randint(0, 3, (30,), generator=generator)
    return ClassificationTask(
        "t", x[:24], y[:24], x[24:], y[24:], 3, seed=7, augment=RandomAffine() if augment else None
    )


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_a_moved_task_draws_the_same_minibatches(device, augment):
    task = _task(augment)
    moved = task.to(device)
    assert moved.x_train.device.type == device and moved.y_test.device.type == device
    here, there = task.batches(5), moved.batches(5)
    for _ in range(3):
        (x, y), (mx, my) = here(), there()
        assert mx.device.type == device
        torch.testing.assert_close(mx.cpu(), x, atol=1e-5, rtol=0)
        assert torch.equal(my.cpu(), y)
    assert torch.equal(moved.x_test.cpu(), task.x_test) and moved.seed == task.seed


def test_moving_to_the_cpu_keeps_the_tensors():
    task = _task(False)
    assert task.to("cpu").x_train is task.x_train
