"""Tables that `leap evaluate` prints (experiments/report.py)."""

from __future__ import annotations

import math

import torch

from experiments.evaluate import Evaluation, MethodResult, compare_methods
from experiments.report import print_evaluation
from tasks.base import InnerLoopResult


def _atari_result(method: str, games: list[str], returns: list[float]) -> MethodResult:
    result = MethodResult(method, initializations=["random"])
    for k, (game, value) in enumerate(zip(games, returns, strict=True)):
        run = InnerLoopResult(
            torch.zeros(3), {}, curves={"episode_return": [math.nan, value, value]}
        )
        result.add((k // 2, k % 2, 0), game, run, {"episode_return": value})
    return result


def _evaluation(games: list[str]) -> Evaluation:
    results = [
        _atari_result("leap", games, [2.0, 100.0, 4.0, 300.0]),
        _atari_result("scratch", games, [1.0, 150.0, 1.0, 150.0]),
    ]
    return Evaluation(results, "leap", compare_methods(results, "leap"))


def test_repeated_tasks_get_a_table_each(capsys):
    print_evaluation(_evaluation(["breakout", "pong"] * 2), "atari", markdown=True)
    printed = capsys.readouterr().out
    assert "per held-out task" in printed
    # breakout, leap: returns 2 and 4 -> mean 3, 95% t half-width 12.706 * 1 = 12.706
    assert "| breakout | leap | 3.000 ± 12.706 | 3.000 ± 12.706 | 2 |" in printed
    assert "| pong | scratch | 150.000 ± 0.000 | 150.000 ± 0.000 | 2 |" in printed


def test_tasks_met_once_get_no_per_task_table(capsys):
    print_evaluation(_evaluation(["a", "b", "c", "d"]), "vision", markdown=True)
    assert "per held-out task" not in capsys.readouterr().out
