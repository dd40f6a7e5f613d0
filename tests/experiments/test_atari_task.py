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

TINY_SMALL = [
    "task.options.num_envs=2",
    "+task.options.max_episode_frames=400",
    "+task.options.eval_episodes=1",
    "+task.options.eval_max_frames=200",
    "meta.meta_steps=1",
    "meta.meta_batch_size=2",
    "meta.inner_steps=5",
    "eval.tasks=2",
    "eval.seeds=[0,1]",
    "eval.steps=5",
    "tracker=none",
    "progress=false",
]
"""The `small` pool itself (4 training games, 2 held out), 2 environments, 5 A2C updates."""

SMALL_CONVRNN = "++model.options.width=0.25"

EXPERIMENTS = {
    "atari_leap": TINY_ATARI,
    "atari_transfer": TINY_ATARI,
    "atari_leap_mnih2013_rgb": TINY_ATARI,
    "atari_small": TINY_SMALL,
    "atari_small_convrnn": [*TINY_SMALL, SMALL_CONVRNN],
}


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
    paper = not experiment.startswith("atari_small")  # atari_small: Baselines' lr 7e-4
    assert (cfg.meta.inner_optimizer, cfg.meta.inner_lr) == ("rmsprop", 1e-4 if paper else 7e-4)


@pytest.mark.parametrize("experiment", ["atari_leap", "atari_transfer"])
@pytest.mark.parametrize("model", ["convrnn_atari", "mnih2013", "nature_cnn"])
def test_atari_experiments_accept_every_atari_encoder(experiment, model):
    """`model=NAME` swaps the encoder of the Atari experiments, as the README says."""
    import models
    from envs import ActorCritic
    from experiments.runner import build_model, task_distribution

    cfg = compose([f"experiment={experiment}", f"model={model}", "tracker=none"])
    assert cfg.model.name == model
    dist = task_distribution(cfg, "train")
    agent = build_model(cfg, dist)
    assert isinstance(agent, ActorCritic)
    reference = models.build(model, dist.input_shape, agent.feature_dim)
    assert type(agent.encoder) is type(reference)
    assert agent.recurrent == (model == "convrnn_atari")


def test_leap_meta_trains_convrnn_atari_in_atari_leap(tmp_path: Path):
    """The stateful ConvRNN encoder goes through Leap's Atari path and is saved."""
    out = [*TINY_ATARI, "meta.inner_steps=3", f"out_dir={tmp_path}"]
    summary = train(compose(["experiment=atari_leap", "model=convrnn_atari", SMALL_CONVRNN, *out]))
    assert math.isfinite(summary["meta/objective"])
    init = tmp_path / "atari_leap-leap-convrnn_atari-seed0" / "init.pt"
    saved = read_initialization(init)["state_dict"]
    assert any(k.startswith("encoder.layers.conv2.") for k in saved), sorted(saved)


def test_rgb_experiment_feeds_the_mnih2013_encoder_three_channel_frames():
    """atari_leap_mnih2013_rgb: the env produces 84x84 RGB frames, folded into 3 channels,
    and the Mnih et al. 2013 encoder's first convolution takes exactly those."""
    from envs import ActorCritic, AtariDistribution, make_env, obs_to_tensor
    from experiments.runner import build_model, task_distribution
    from models.atari_encoders import AtariCNN

    cfg = compose(["experiment=atari_leap_mnih2013_rgb", "tracker=none"])
    dist = task_distribution(cfg, "validation")
    assert isinstance(dist, AtariDistribution)
    assert dist.input_shape == (3, 84, 84)
    agent = build_model(cfg, dist)
    assert isinstance(agent, ActorCritic) and isinstance(agent.encoder, AtariCNN)
    first = agent.encoder.convs[0]
    assert isinstance(first, torch.nn.Conv2d)
    assert (first.in_channels, first.out_channels, first.kernel_size) == (3, 16, (8, 8))
    assert agent.feature_dim == 256
    env = make_env("breakout", 2, dist.settings.env)
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs.shape == (2, 1, 84, 84, 3)
    x = obs_to_tensor(obs)
    assert x.shape == (2, 3, 84, 84)
    assert torch.equal(x[1, 2], torch.from_numpy(obs[1, 0, :, :, 2]))  # blue plane
    logits, value, _ = agent(x, "breakout")
    assert logits.shape == (2, 4) and value.shape == (2,)


@pytest.mark.parametrize("experiment", ["atari_small", "atari_small_convrnn"])
def test_atari_small_trains_then_evaluates_on_its_held_out_games(experiment, tmp_path: Path):
    """`leap train experiment=atari_small && leap evaluate experiment=atari_small`, tiny:
    Leap meta-trains on the pool's training games, then Leap and Scratch train on both
    held-out games for each seed; the table's figures are the return curve's area and
    the held-out return and normalized score."""
    out = [*EXPERIMENTS[experiment], f"out_dir={tmp_path}", f"tracker.dir={tmp_path}"]
    cfg = compose([f"experiment={experiment}", *out])
    summary = train(cfg)
    assert math.isfinite(summary["meta/objective"])
    results = evaluate(cfg)
    assert [r.method for r in results] == ["leap", "scratch"]
    for r in results:
        games = {key[:2] for key in r.keys}
        assert len(games) == 4  # 2 seeds x 2 held-out games
        assert set(r.figures()) == {"return_auc", "episode_return", "normalized_score"}
        assert all(math.isfinite(v) for v in r.held_out["normalized_score"])
        assert sorted(set(r.tasks)) == ["breakout", "space_invaders"]
    model = cfg.model.name
    plots = tmp_path / f"{experiment}-leap-{model}-seed0-eval" / "plots"
    for game in ("breakout", "space_invaders"):
        assert (plots / f"{game}__train_episode_return.png").stat().st_size > 0


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


def test_return_curve_area_is_the_mean_over_points_with_a_return():
    from experiments.evaluate import return_curve_area

    assert return_curve_area([math.nan, 1.0, 3.0, 2.0]) == pytest.approx(2.0)
    assert math.isnan(return_curve_area([math.nan, math.nan]))
