"""Atari games reach the runner through the task registry (`task=atari`)."""

from __future__ import annotations

import math

from experiments.cli import compose
from experiments.runner import train


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
