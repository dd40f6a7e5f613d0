"""Faults inside training (NaN tasks) and inputs that do not fit (shapes, checkpoints, games).

The NaN tests drive the real runner with a fake task family and a fake meta-learner
whose meta-gradient pulls its initialization towards each good task's target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import experiments.runner as runner
from experiments.checkpoint import TrainStateStore, read_train_state
from experiments.cli import main
from leap_convrnn.errors import AllTasksDropped, UserError
from meta.base import MetaLearner
from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TaskDistribution
from tests.conftest import SMALL_GLYPHS

RUN = Path("runs") / "default-leap-conv4-seed0"
ARGS = [
    "tracker=none",
    "progress=false",
    "meta.meta_steps=3",
    "meta.meta_batch_size=2",
    "meta.meta_lr=1.0",
    "checkpoint_every=10",
]


class FakeTask(Task):
    """A task whose inner loop reports a finite loss curve, or NaN when it has no target."""

    num_outputs = 2

    def __init__(self, name: str, target: list[float] | None) -> None:
        self.name = name
        self.target = torch.tensor(target if target is not None else [float("nan")] * 2)

    def inner_loop(
        self, model: nn.Module, config: InnerLoopConfig, hook: Any = None
    ) -> InnerLoopResult:
        good = bool(torch.isfinite(self.target).all())
        losses = torch.tensor([1.0, 0.5] if good else [1.0, float("nan")])
        return InnerLoopResult(losses=losses, metrics={"train_accuracy": 1.0})

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"loss": 0.5, "accuracy": 1.0}


class FakeTasks(TaskDistribution):
    """Draws the same pattern of tasks for every meta-batch."""

    name, split, num_outputs = "fake", "train", 2

    def __init__(self, pattern: list[FakeTask], input_shape: tuple[int, int, int]) -> None:
        self.pattern = pattern
        self.input_shape = input_shape

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        rng.integers(10, size=n)
        return [self.pattern[i % len(self.pattern)] for i in range(n)]

    def make_model(self, name: str, options: dict[str, Any]) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


class PullToTarget(MetaLearner):
    """Meta-gradient: mean over tasks of (theta - target). With `flags_drops`, a task with
    a non-finite loss is marked `dropped` and left out, as the real learners do."""

    name = "pull"

    def __init__(self, flags_drops: bool) -> None:
        self.theta = nn.Parameter(torch.zeros(2))
        self.flags_drops = flags_drops
        self.sum = torch.zeros(2)
        self.tasks = 0

    def parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def initialize(self, model: nn.Module) -> None:
        with torch.no_grad():
            model[1].bias.copy_(self.theta)

    def adapt(self, model: nn.Module, task: Task, inner: InnerLoopConfig) -> InnerLoopResult:
        assert isinstance(task, FakeTask)
        self.initialize(model)
        result = task.inner_loop(model, inner)
        if self.flags_drops and not bool(torch.isfinite(result.losses).all()):
            result.metrics["dropped"] = 1.0
            return result
        self.sum += self.theta.detach() - task.target
        self.tasks += 1
        return result

    def end_meta_batch(self) -> dict[str, float]:
        tasks, self.tasks = self.tasks, 0
        total, self.sum = self.sum, torch.zeros(2)
        if tasks == 0:
            raise AllTasksDropped("every task was dropped")
        self.theta.grad = total / tasks
        return {"meta/objective": 1.0}


def use_fakes(
    monkeypatch: pytest.MonkeyPatch,
    pattern: list[FakeTask],
    flags_drops: bool = True,
    input_shape: tuple[int, int, int] = (1, 2, 2),
) -> None:
    tasks = FakeTasks(pattern, input_shape)
    monkeypatch.setattr(runner, "task_distribution", lambda cfg, split: tasks)
    monkeypatch.setattr(runner, "build_learner", lambda *args: PullToTarget(flags_drops))


GOOD, BAD = FakeTask("good", [1.0, -2.0]), FakeTask("bad", None)


def bias(path: Path) -> torch.Tensor:
    return torch.load(path, weights_only=True)["state_dict"]["1.bias"]


def test_nan_task_is_dropped_counted_and_never_reaches_the_initialization(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    use_fakes(monkeypatch, [GOOD, BAD])
    assert main(["train", *ARGS]) == 0
    assert torch.equal(bias(RUN / "init.pt"), GOOD.target)
    logged = [json.loads(line) for line in (RUN / "metrics.jsonl").open()]
    assert [m["meta/dropped_tasks"] for m in logged] == [1.0, 1.0, 1.0]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "dropped" in line]
    assert len(warnings) == 3
    assert warnings[0] == (
        "leap: warning: meta-step 0: task 'bad' dropped from the meta-batch "
        "(non-finite loss or gradient in its inner loop)"
    )


def test_nan_gradient_from_an_unaware_learner_is_not_applied(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    use_fakes(monkeypatch, [GOOD, BAD], flags_drops=False)
    assert main(["train", *ARGS]) == 0
    assert torch.equal(bias(RUN / "init.pt"), torch.zeros(2))
    err = capsys.readouterr().err
    assert "leap: warning: meta-step 2: the meta-gradient is not finite; meta-update skipped" in err


@pytest.mark.parametrize("flags_drops", [True, False])
def test_all_tasks_dropped_checkpoints_and_exits_1(flags_drops, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    use_fakes(monkeypatch, [BAD], flags_drops=flags_drops)
    assert main(["train", *ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("leap: every task of meta-step 0 was dropped")
    assert "resume=true" in err[-1] and "Traceback" not in "\n".join(err)
    [checkpoint] = TrainStateStore(RUN / "checkpoints", 1).paths()
    state = read_train_state(checkpoint)
    assert state["step"] == 1 and torch.equal(state["learner"]["parameters"][0], torch.zeros(2))
    assert not (RUN / "init.pt").exists()


def test_model_that_does_not_take_the_task_inputs_names_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    use_fakes(monkeypatch, [GOOD], input_shape=(3, 2, 2))
    assert main(["train", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: model 'conv4'") and "\n" not in err
    assert "inputs of shape (C, H, W) = (3, 2, 2)" in err
    assert "mat1 and mat2 shapes cannot be multiplied" in err


def test_image_too_small_for_the_model_names_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *SMALL_GLYPHS, *ARGS, "+model.options.blocks=5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model 'conv4'" in err and "'blocks': 5" in err
    assert "(C, H, W) = (1, 28, 28)" in err and "too small for 5 pooling blocks" in err


def test_initialization_of_another_architecture_names_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small = [*SMALL_GLYPHS, *ARGS, "meta.meta_steps=1", "meta.inner_steps=1"]
    assert main(["train", *small, "model.options.width=4"]) == 0
    init = tmp_path / "runs" / "default-leap-conv4-seed0" / "init.pt"
    capsys.readouterr()
    argv = ["evaluate", *small, "model.options.width=8", f"eval.init={init}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'width': 4" in err and "'width': 8" in err


def test_unknown_atari_game_names_it_and_the_close_ones():
    games = pytest.importorskip("envs.games")
    with pytest.raises(UserError, match=r"unknown Atari game 'Pongg'.*close matches: pong"):
        games.resolve_game("Pongg")
