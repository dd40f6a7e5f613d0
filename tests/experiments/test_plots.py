"""Per-task learning-curve figures of `leap evaluate` (experiments/plots.py)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from experiments.evaluate import MethodResult
from experiments.plots import MAX_TASK_PANELS, plot_task_curves
from tasks.base import InnerLoopResult


def _result(method: str, tasks: list[str]) -> MethodResult:
    result = MethodResult(method)
    for k, task in enumerate(tasks):
        run = InnerLoopResult(
            torch.tensor([1.0, 0.5, 0.25]), {}, curves={"episode_return": [math.nan, k, k + 1]}
        )
        result.add((k, 0, 0), task, run, {"episode_return": float(k)})
    return result


def test_curves_are_grouped_by_task_without_their_nan_points():
    result = _result("leap", ["pong", "breakout", "pong"])
    groups = result.curves_by_task("train_episode_return")
    assert groups == {
        "pong": [[(1, 0.0), (2, 1.0)], [(1, 2.0), (2, 3.0)]],
        "breakout": [[(1, 1.0), (2, 2.0)]],
    }


def test_one_figure_per_repeated_task_else_one_pooled(tmp_path: Path):
    games = ["pong", "breakout"] * 3
    by_method = {
        m: _result(m, games).curves_by_task("train_episode_return") for m in ("leap", "scratch")
    }
    written = plot_task_curves(by_method, "train_episode_return", "atari_small", tmp_path / "a")
    assert sorted(p.name for p in written) == [
        "breakout__train_episode_return.png",
        "pong__train_episode_return.png",
    ]
    assert all(p.stat().st_size > 0 for p in written)

    once = [f"task{k}" for k in range(3)]  # vision: tasks drawn anew for every seed
    by_method = {"leap": _result("leap", once).curves_by_task("train_loss")}
    written = plot_task_curves(by_method, "train_loss", "glyphs_demo", tmp_path / "b")
    assert [p.name for p in written] == ["held-out_tasks__train_loss.png"]

    many = [f"game{k}" for k in range(MAX_TASK_PANELS + 1)] * 2
    by_method = {"leap": _result("leap", many).curves_by_task("train_loss")}
    assert len(plot_task_curves(by_method, "train_loss", "x", tmp_path / "c")) == 1
