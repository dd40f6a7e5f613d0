"""Atari games as Leap tasks: a tiny CPU budget on two real games."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import envs
import models
from envs.a2c import ActorCritic, GameHead
from leap_convrnn.errors import UserError
from meta import Leap
from models.registry import MODELS
from tasks.base import InnerLoopConfig
from tests.envs.fakes import CountingStatefulEncoder, TinyEncoder

# A few thousand frames per game: 8 games x 5 steps x 10 updates (+1 final rollout)
# = 440 agent steps = 1,760 frames.
TINY = {"num_envs": 8, "unroll": 5, "eval_episodes": 2, "eval_max_frames": 200}
INNER = InnerLoopConfig(steps=10, optimizer="rmsprop", lr=1e-4)


@pytest.fixture(scope="module", autouse=True)
def _test_encoders() -> None:
    """Register the tiny test encoders under private names for this module."""
    for name, cls in (("_tiny_test", TinyEncoder), ("_stateful_test", CountingStatefulEncoder)):
        if name not in MODELS:
            MODELS.register(name)(cls)


class Hook:
    """Counts the calls and keeps theta_0 of the encoder and of the head at the first step."""

    def __init__(self, agent: ActorCritic, game: str) -> None:
        self.agent, self.game = agent, game
        self.steps: list[torch.Tensor] = []
        self.ends: list[torch.Tensor] = []
        self.first_encoder: dict[str, torch.Tensor] = {}
        self.first_head: dict[str, torch.Tensor] = {}

    def on_step(self, loss: torch.Tensor) -> None:
        if not self.steps:
            self.first_encoder = {k: v.clone() for k, v in self.agent.encoder.state_dict().items()}
            head = self.agent.heads[self.game].state_dict()
            self.first_head = {k: v.clone() for k, v in head.items()}
        self.steps.append(loss)

    def on_end(self, loss: torch.Tensor) -> None:
        self.ends.append(loss)


def test_tiny_inner_loop_on_two_games() -> None:
    _check_tiny_inner_loop("mnih2013", INNER)


@pytest.mark.slow
def test_nature_cnn_inner_loop_on_two_games() -> None:
    """The paper's setting on a larger budget: 32 games x 5 steps x 20 updates x 4 frames
    = 13,440 frames per game."""
    inner = InnerLoopConfig(steps=20, optimizer="rmsprop", lr=1e-4)
    _check_tiny_inner_loop("nature_cnn", inner, num_envs=32)


def _check_tiny_inner_loop(encoder: str, inner: InnerLoopConfig, num_envs: int = 8) -> None:
    dist = envs.build(["pong", "breakout"], "train", **{**TINY, "num_envs": num_envs})
    assert dist.input_shape == (4, 84, 84) and dist.num_outputs == 6
    model = dist.make_model(encoder, {})
    assert isinstance(model, ActorCritic) and set(model.heads) == {"pong", "breakout"}
    tasks = dist.sample(2, np.random.default_rng(0))
    assert sorted(t.name for t in tasks) == ["breakout", "pong"]
    for task in tasks:
        assert isinstance(task, envs.AtariTask)
        given = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        # scribble on the head: the inner loop must start it afresh
        with torch.no_grad():
            for p in model.heads[task.name].parameters():
                p.fill_(3.0)
        hook = Hook(model, task.name)
        result = task.inner_loop(model, inner, hook)
        assert len(hook.steps) == inner.steps and len(hook.ends) == 1
        assert result.losses.shape == (inner.steps + 1,)
        assert torch.isfinite(result.losses).all()
        for key, value in given.items():
            assert torch.equal(hook.first_encoder[key], value)  # encoder: as given
        fresh = GameHead(model.feature_dim, task.num_outputs)
        fresh.reset_parameters(torch.Generator().manual_seed(task.seed))
        for key, value in fresh.state_dict().items():
            assert torch.equal(hook.first_head[key], value)  # head: re-initialized
        assert not torch.equal(model.encoder.state_dict()["fc.weight"], given["fc.weight"])
        metrics = result.metrics
        assert metrics["env_steps"] == (inner.steps + 1) * num_envs * 5
        assert metrics["frames"] == metrics["env_steps"] * 4
        assert set(metrics) >= {"episode_return", "normalized_score", "episodes"}
        evaluation = task.evaluate(model)
        assert set(evaluation) == {"episode_return", "normalized_score"}
        assert math.isfinite(evaluation["episode_return"])
        expected = envs.normalized_score(task.name, evaluation["episode_return"])
        assert evaluation["normalized_score"] == pytest.approx(expected)
        task.close()


def test_leap_meta_learns_the_encoder_only() -> None:
    dist = envs.build(["pong", "breakout"], "train", **TINY)
    model = dist.make_model("_tiny_test", {})
    names = dist.meta_parameters(model)
    assert names == [n for n, _ in model.encoder.named_parameters(prefix="encoder")]
    leap = Leap(model, metric="energy", parameters=names)
    init = [p.detach().clone() for p in leap.parameters()]
    for task in dist.sample(2, np.random.default_rng(1)):
        leap.adapt(model, task, InnerLoopConfig(steps=3, optimizer="rmsprop", lr=1e-3))
    metrics = leap.end_meta_batch()
    assert math.isfinite(metrics["meta/objective"])
    for p, before in zip(leap.parameters(), init, strict=True):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert torch.equal(p.detach(), before)


def test_a_diverging_game_is_dropped_by_leap() -> None:
    dist = envs.build(["pong"], "train", num_envs=2, unroll=2)
    model = dist.make_model("_tiny_test", {})
    with torch.no_grad():
        model.encoder.fc.bias.fill_(math.inf)  # type: ignore[union-attr]  # a broken init
    leap = Leap(model, metric="energy", parameters=dist.meta_parameters(model))
    task = dist.sample(1, np.random.default_rng(0))[0]
    result = leap.adapt(model, task, InnerLoopConfig(steps=3, optimizer="rmsprop", lr=1e-3))
    assert result.metrics["diverged"] == 1.0 and result.metrics["dropped"] == 1.0
    assert torch.isnan(result.losses).all()
    assert math.isnan(task.evaluate(model)["episode_return"])


def test_stateful_encoder_through_a_real_game() -> None:
    """Pong truncated at 200 frames: several episode ends inside one inner loop."""
    dist = envs.build(["pong"], "train", num_envs=2, unroll=5, max_episode_frames=200)
    model = dist.make_model("_stateful_test", {"feature_dim": 8})
    encoder = model.encoder
    assert isinstance(encoder, CountingStatefulEncoder) and model.recurrent
    task = dist.sample(1, np.random.default_rng(0))[0]
    result = task.inner_loop(model, InnerLoopConfig(steps=12, optimizer="rmsprop", lr=1e-3))
    assert result.metrics["episodes"] >= 2
    resets = sum(int(m[0]) for m in encoder.masks[1:])
    assert resets >= 1  # the state was reset after an episode end
    counts = torch.stack(encoder.seen_counts)[:, 0]
    assert counts.max() <= 200 // 4 + 1  # never carried across an episode boundary
    task.close()


@pytest.mark.parametrize(
    "options", [{"backend": "gymnasium"}, {"grayscale": False, "frames": 2}], ids=["gym", "rgb"]
)
def test_other_env_paths_inner_loop(options: dict) -> None:
    dist = envs.build(["breakout"], "train", num_envs=2, unroll=3, **options)
    model = dist.make_model("_tiny_test", {})
    task = dist.sample(1, np.random.default_rng(0))[0]
    result = task.inner_loop(model, InnerLoopConfig(steps=3, optimizer="rmsprop", lr=1e-3))
    assert result.losses.shape == (4,) and result.metrics["env_steps"] == 4 * 3 * 2
    task.close()


def test_make_model_feature_dim_defaults_to_the_encoder_default() -> None:
    dist = envs.build(["breakout"], "test")
    assert dist.make_model("nature_cnn", {}).feature_dim == 512
    assert dist.make_model("mnih2013", {}).feature_dim == 256
    assert dist.make_model("mnih2013", {"feature_dim": 64}).feature_dim == 64


def test_head_added_for_an_unseen_game() -> None:
    train = envs.build(["pong"], "train")
    model = train.make_model("_tiny_test", {})
    head = model.head("space_invaders", 6)
    assert "space_invaders" in model.heads and head.policy.out_features == 6
    with pytest.raises(UserError, match="has 6 actions"):
        model.head("space_invaders", 18)


def test_build_rejects_unknown_options_and_games() -> None:
    with pytest.raises(UserError, match="unknown option 'num_env'"):
        envs.build("leap", "train", num_env=4)
    with pytest.raises(UserError, match="close matches: space_invaders"):
        envs.build(["space_invader"], "test")
    with pytest.raises(UserError, match="gamma"):
        envs.build("leap", "train", gamma=1.5)


def test_leap_pool_splits() -> None:
    train = envs.build("leap", "train")
    test = envs.build("leap", "test")
    assert "breakout" not in train.games and "space_invaders" not in train.games
    assert {"breakout", "space_invaders"} <= set(test.games)
    assert train.num_outputs == 10 and test.num_outputs == 18
    sample = train.sample(5, np.random.default_rng(0))
    assert len({t.name for t in sample}) == 5
    again = train.sample(5, np.random.default_rng(0))
    assert [(t.name, t.seed) for t in sample] == [(t.name, t.seed) for t in again]


def test_the_registered_encoders() -> None:
    x = torch.rand(3, 4, 84, 84)
    for name, size in (("nature_cnn", 512), ("mnih2013", 256)):
        encoder = models.build(name, (4, 84, 84), size)
        features = encoder(x)
        assert features.shape == (3, size) and (features >= 0).all()
    # Nature CNN: 32x8x8/4 -> 64x4x4/2 -> 64x3x3/1 -> 3136 -> 512
    nature = models.build("nature_cnn", (4, 84, 84), 512)
    assert nature.fc.in_features == 64 * 7 * 7
    assert models.build("mnih2013", (4, 84, 84), 256).fc.in_features == 32 * 9 * 9


def test_pool_creates_each_game_env_once_and_evicts_least_recent() -> None:
    dist = envs.build(["pong", "breakout"], "train", num_envs=2, env_cache_size=1)
    first, second = (envs.AtariTask("pong", dist.settings, s, dist.cache) for s in (1, 2))
    pong = first.env("train")
    assert second.env("train") is pong
    envs.AtariTask("breakout", dist.settings, 3, dist.cache).env("train")
    assert len(dist.cache) == 1  # pong's env was closed to make room
    assert first.env("train") is not pong
    dist.close()
    assert len(dist.cache) == 0
