"""Atari games reach the runner through the task registry (`task=atari`); the Atari
experiments (atari_leap, atari_transfer) run end to end for a tiny CPU budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.checkpoint import read_initialization
from experiments.cli import main
from experiments.config import compose
from experiments.evaluate import evaluate
from experiments.runner import train

TINY_ATARI = [
    "task.options.game_pool=[pong,breakout]",
    "task.options.num_envs=4",
    "+task.options.max_episode_frames=400",
    "+task.options.eval_episodes=1",
    "+task.options.eval_max_frames=200",
    "meta.meta_steps=1",
    "meta.meta_batch_size=2",
    "meta.inner_steps=20",
    "eval.tasks=2",
    "eval.seeds=[0]",
    "eval.steps=20",
    "tracker=none",
    "progress=false",
]
"""Two games, 4 environments, 20 A2C updates of unroll 5 per task: 2 x 420 agent steps
= 3,360 frames per meta-step; episodes truncated at 400 frames so that some finish."""

EXPERIMENTS = {"atari_leap": TINY_ATARI, "atari_transfer": TINY_ATARI}


def test_leap_meta_trains_an_atari_encoder_for_a_tiny_budget(tmp_path):
    cfg = compose(
        [
            "task=atari",
            "model=nature_cnn",
            "task.options.game_pool=[pong,breakout]",
            "task.options.num_envs=2",
            "+task.options.eval_episodes=1",
            "+task.options.eval_max_frames=100",
            "meta.options.metric=energy",
            "meta.meta_steps=1",
            "meta.meta_batch_size=2",
            "meta.inner_steps=2",
            "meta.inner_optimizer=rmsprop",
            "meta.inner_lr=0.0001",
            "tracker=none",
            "progress=false",
            f"out_dir={tmp_path}",
        ]
    )
    summary = train(cfg)
    assert math.isfinite(summary["meta/objective"])
    assert "task/test_normalized_score" in summary
    assert summary["atari/env_steps"] == 3 * 2 * 5  # 2 updates + the final-loss rollout
    assert summary["atari/frames"] == 4 * summary["atari/env_steps"]


def test_atari_leap_then_atari_transfer_end_to_end(tmp_path: Path, capsys, monkeypatch):
    """`leap train experiment=atari_leap` then `leap evaluate experiment=atari_transfer`:
    the transfer run loads the encoder meta-learned by the first (its heads are per game),
    trains fresh agents from it and from Scratch, and reports returns, normalized scores
    and learning curves."""
    out = [*TINY_ATARI, f"out_dir={tmp_path}", f"tracker.dir={tmp_path}"]
    assert main(["train", "experiment=atari_leap", *out]) == 0
    init = tmp_path / "atari_leap-leap-nature_cnn-seed0" / "init.pt"
    blob = read_initialization(init)
    assert "num_outputs" not in blob["architecture"]

    cfg = compose(["experiment=atari_transfer", *out])
    assert cfg.eval.init == str(init)
    results = evaluate(cfg)
    assert [r.method for r in results] == ["leap", "scratch"]
    for r in results:
        assert len(r.auc) == 2 and all(math.isfinite(a) for a in r.auc)
        assert set(r.held_out) == {"episode_return", "normalized_score"}
        assert all(math.isfinite(v) for v in r.held_out["normalized_score"])
        assert set(r.curves) == {"train_loss", "train_episode_return", "train_normalized_score"}
        assert all(len(c) == 21 for c in r.curves["train_normalized_score"])
        assert any(math.isfinite(v) for c in r.curves["train_episode_return"] for v in c)
    leap_run = json.loads(
        (tmp_path / "atari_transfer-leap-nature_cnn-seed0-eval" / "curves.json").read_text()
    )
    assert leap_run["leap"]["held_out"]["episode_return"] == results[0].held_out["episode_return"]

    monkeypatch.setenv("COLUMNS", "200")  # one line per table row
    assert main(["evaluate", "experiment=atari_transfer", *out]) == 0
    printed = capsys.readouterr().out
    assert "held-out normalized score" in printed and "scratch" in printed


def test_transfer_loads_the_meta_learned_encoder_and_leaves_the_heads(tmp_path: Path):
    """Held-out games have other action sets: the initialization's encoder is loaded, the
    test split's heads are the model's own."""
    from experiments.checkpoint import load_initialization
    from experiments.runner import architecture, build_model, task_distribution

    out = [*TINY_ATARI, f"out_dir={tmp_path}"]
    train(compose(["experiment=atari_leap", *out]))
    init = tmp_path / "atari_leap-leap-nature_cnn-seed0" / "init.pt"
    saved = read_initialization(init)["state_dict"]
    cfg = compose(["experiment=atari_transfer", "task.options.game_pool=leap", *out[1:]])
    dist = task_distribution(cfg, "test")
    model = build_model(cfg, dist)
    heads = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("heads.")}
    load_initialization(init, model, architecture(cfg, dist), dist.meta_parameters(model))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k.startswith("encoder."))
    assert all(torch.equal(state[k], v) for k, v in heads.items())
    assert "heads.star_gunner.policy.weight" in heads


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_atari_experiment_configs_compose(experiment):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.task.name == "atari" and cfg.meta.options["metric"] == "energy"
    assert (cfg.meta.inner_optimizer, cfg.meta.inner_lr) == ("rmsprop", 1e-4)


def test_meta_training_logs_prefixed_metrics_ignoring_missing_values():
    """`atari/` metrics are meta-batch means over the games that have a value (an inner
    loop in which no episode ended has a NaN return)."""
    from experiments.runner import task_metrics
    from tasks.base import InnerLoopResult

    losses = torch.tensor([1.0, 0.5])
    results = [
        InnerLoopResult(losses, {"episode_return": 3.0, "dropped": 0.0}, log_prefix="atari"),
        InnerLoopResult(losses, {"episode_return": math.nan, "dropped": 0.0}, log_prefix="atari"),
        InnerLoopResult(losses, {"episode_return": 5.0}, log_prefix="atari"),
        InnerLoopResult(losses, {"train_accuracy": 0.5}),
    ]
    held_out = [{"normalized_score": 0.1}, {"normalized_score": math.nan}] * 2
    metrics = task_metrics(results, held_out)
    assert metrics["atari/episode_return"] == 4.0
    assert "atari/dropped" not in metrics and "atari/train_accuracy" not in metrics
    assert metrics["task/test_normalized_score"] == pytest.approx(0.1)
    assert metrics["task/auc"] == pytest.approx(0.75)
