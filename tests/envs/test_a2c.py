"""The A2C learner: returns, clipping, loss masking, autoreset bookkeeping, stateful encoders."""

from __future__ import annotations

import pytest
import torch

from envs.a2c import (
    A2C,
    A2CConfig,
    ActorCritic,
    Episode,
    Rollout,
    a2c_loss,
    clip_rewards,
    nstep_returns,
    return_curve,
    train,
)
from tasks.base import InnerLoopConfig
from tests.envs.fakes import (
    CountingStatefulEncoder,
    ExplodingEncoder,
    ScriptedVectorEnv,
    TinyEncoder,
)

T, F = True, False


def test_nstep_returns_hand_computed() -> None:
    """gamma = 0.5, T = 4; columns: no end | terminal at t=1 | truncated at t=1 | truncated at t=3.

    Column 0: R3 = 4 + .5*8 = 8, R2 = 3 + .5*8 = 7, R1 = 2 + .5*7 = 5.5, R0 = 1 + .5*5.5 = 3.75.
    Column 1: t=1 terminal -> R1 = 2, R0 = 1 + .5*2 = 2; t=2 is the autoreset step;
              R3 = 3 + .5*6 = 6.
    Column 2: t=1 truncated -> R1 = 2 + .5 * V(s_2) = 2 + .5*30 = 17 (s_2 is the final
              observation, fed at the autoreset step), R0 = 1 + .5*17 = 9.5; R3 = 6.
    Column 3: truncated at the last step bootstraps from V(s_T) = 4: R3 = 1 + 2 = 3,
              R2 = 1 + 1.5 = 2.5, R1 = 1 + 1.25 = 2.25, R0 = 1 + 1.125 = 2.125.
    """
    rewards = torch.tensor([[1.0, 1, 1, 1], [2, 2, 2, 1], [3, 0, 0, 1], [4, 3, 3, 1]])
    values = torch.tensor(
        [[10.0, 10, 10, 10], [20, 20, 20, 20], [30, 30, 30, 30], [40, 40, 40, 40]]
    )
    bootstrap = torch.tensor([8.0, 6, 6, 4])
    terminated = torch.tensor([[F, F, F, F], [F, T, F, F], [F, F, F, F], [F, F, F, F]])
    truncated = torch.tensor([[F, F, F, F], [F, F, T, F], [F, F, F, F], [F, F, F, T]])
    returns = nstep_returns(rewards, values, bootstrap, terminated, truncated, gamma=0.5)
    assert returns[:, 0].tolist() == [3.75, 5.5, 7.0, 8.0]
    assert returns[[0, 1, 3], 1].tolist() == [2.0, 2.0, 6.0]
    assert returns[[0, 1, 3], 2].tolist() == [9.5, 17.0, 6.0]
    assert returns[:, 3].tolist() == [2.125, 2.25, 2.5, 3.0]


def test_terminated_and_truncated_together_is_terminal() -> None:
    one = torch.ones(1, 1)
    returns = nstep_returns(one, 5 * one, torch.tensor([7.0]), one.bool(), one.bool(), gamma=0.9)
    assert returns.item() == 1.0


def test_reward_clipping_to_plus_minus_five() -> None:
    rewards = torch.tensor([-100.0, -5.0, -1.0, 0.0, 3.0, 5.0, 200.0])
    assert clip_rewards(rewards, 5.0).tolist() == [-5.0, -5.0, -1.0, 0.0, 3.0, 5.0, 5.0]
    assert clip_rewards(rewards, None) is rewards


def test_loss_clips_rewards_and_masks_autoreset_steps() -> None:
    """Two steps, one game: step 0 terminal with reward 10 (clipped to 5), step 1 invalid."""
    log_probs = torch.tensor([[-1.0], [-2.0]], requires_grad=True)
    values = torch.tensor([[2.0], [100.0]], requires_grad=True)
    rollout = Rollout(
        log_probs=log_probs,
        values=values,
        entropies=torch.tensor([[0.5], [9.0]]),
        rewards=torch.tensor([[10.0], [0.0]]),
        terminated=torch.tensor([[T], [F]]),
        truncated=torch.tensor([[F], [F]]),
        valid=torch.tensor([[T], [F]]),
        bootstrap=torch.tensor([50.0]),
    )
    config = A2CConfig(reward_clip=5.0, value_coef=0.5, entropy_coef=0.01)
    loss, parts = a2c_loss(rollout, config)
    # R0 = 5, A0 = 5 - 2 = 3: policy 1 * 3, value (5 - 2)^2 = 9, entropy 0.5.
    assert parts["policy_loss"].item() == pytest.approx(3.0)
    assert parts["value_loss"].item() == pytest.approx(9.0)
    assert parts["entropy"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(3.0 + 0.5 * 9.0 - 0.01 * 0.5)
    loss.backward()
    assert log_probs.grad is not None and values.grad is not None
    assert log_probs.grad[1, 0] == 0 and values.grad[1, 0] == 0  # masked step
    assert values.grad[0, 0].item() == pytest.approx(0.5 * 2 * (2.0 - 5.0))


def _agent(encoder: torch.nn.Module, actions: int = 3) -> ActorCritic:
    return ActorCritic(encoder, 8, {"fake": actions})


def test_rollout_marks_autoreset_steps_and_tracks_episodes() -> None:
    env = ScriptedVectorEnv(2, ends=[{2: "term"}, {3: "trunc"}])
    learner = A2C(_agent(TinyEncoder((4, 84, 84))), "fake", env, A2CConfig(unroll=6), seed=0)
    rollout = learner.rollout()
    valid = rollout.valid.tolist()
    assert [row[0] for row in valid] == [T, T, F, T, T, T]  # call 3 autoresets game 0
    assert [row[1] for row in valid] == [T, T, T, F, T, T]  # call 4 autoresets game 1
    assert rollout.terminated[1, 0] and rollout.truncated[2, 1]
    assert [(e.env_index, e.episode_return, e.length) for e in learner.episodes] == [
        (0, 1.0 + 2.0, 2),
        (1, 1.0 + 2.0 + 3.0, 3),
    ]
    assert learner.env_steps == 12
    assert rollout.log_probs.requires_grad and rollout.values.requires_grad


def test_stateful_encoder_is_reset_at_episode_starts() -> None:
    encoder = CountingStatefulEncoder((4, 84, 84))
    env = ScriptedVectorEnv(2, ends=[{2: "term"}, {3: "trunc"}])
    learner = A2C(_agent(encoder), "fake", env, A2CConfig(unroll=6), seed=0)
    learner.rollout()
    masks = [m.tolist() for m in encoder.masks]
    # Forward k feeds the observation returned by call k; the autoreset call (3 for
    # game 0, 4 for game 1) returns a new episode's first observation. Last: bootstrap.
    assert masks == [[T, T], [F, F], [F, F], [T, F], [F, T], [F, F], [F, F]]
    counts = [c.tolist() for c in encoder.seen_counts]
    assert [c[0] for c in counts] == [0, 1, 2, 0, 1, 2, 3]
    assert [c[1] for c in counts] == [0, 1, 2, 3, 0, 1, 2]


def test_stateful_encoder_state_is_carried_and_detached_between_updates() -> None:
    """Three updates: the second backward would fail if the state kept the first graph."""
    encoder = CountingStatefulEncoder((4, 84, 84))
    env = ScriptedVectorEnv(2, ends=[{}, {}])
    inner = InnerLoopConfig(steps=3, optimizer="rmsprop", lr=1e-3)
    result = train(_agent(encoder), "fake", env, inner, A2CConfig(unroll=2), seed=0)
    assert result.losses.shape == (4,)
    # carried across rollouts: the count keeps growing (8 forwards + 4 bootstraps seen).
    assert [c[0] for c in (x.tolist() for x in encoder.seen_counts)][-3:] == [6, 7, 8]


class RecordingHook:
    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.steps: list[tuple[list[torch.Tensor], float]] = []
        self.ends: list[torch.Tensor] = []

    def on_step(self, loss: torch.Tensor) -> None:
        grads = [p.grad for p in self.params]
        assert all(g is not None for g in grads)
        grad_norm = torch.stack([g.norm() for g in grads if g is not None]).norm().item()
        self.steps.append(([p.detach().clone() for p in self.params], grad_norm))

    def on_end(self, loss: torch.Tensor) -> None:
        self.ends.append(loss)


def test_hook_sees_unclipped_gradients_before_each_update() -> None:
    # A fixed draw: some draws give a dead ReLU encoder (zero gradients), and the draw
    # otherwise depends on the tests that ran before this one.
    torch.manual_seed(0)
    encoder = TinyEncoder((4, 84, 84))
    agent = _agent(encoder)
    env = ScriptedVectorEnv(2, ends=[{4: "term"}, {}])
    hook = RecordingHook(list(encoder.parameters()))
    config = A2CConfig(unroll=3, max_grad_norm=1e-3)
    inner = InnerLoopConfig(steps=4, optimizer="sgd", lr=0.1)
    start = [p.detach().clone() for p in encoder.parameters()]
    result = train(agent, "fake", env, inner, config, seed=0, hook=hook)
    assert len(hook.steps) == 4 and len(hook.ends) == 1
    assert torch.equal(hook.steps[0][0][0], start[0])  # theta_0 before the first update
    assert all(norm > 1e-2 for _, norm in hook.steps)  # unclipped gradient norms
    moved = [
        torch.cat([(q - p).flatten() for p, q in zip(a[0], b[0], strict=True)]).norm().item()
        for a, b in zip(hook.steps, hook.steps[1:], strict=False)
    ]
    assert all(0 < m <= 0.1 * 1e-3 * 1.001 for m in moved)  # the update used the clipped grad
    assert result.losses[-1] == hook.ends[0]
    assert result.metrics["env_steps"] == (4 + 1) * 3 * 2


def test_diverged_run_stops_with_nan_losses_and_no_on_end() -> None:
    """Unroll 2 + 1 bootstrap = 3 forward passes per update: the 8th pass is in update 3."""
    encoder = ExplodingEncoder((4, 84, 84), explode_at=8)
    hook = RecordingHook(list(encoder.parameters()))
    env = ScriptedVectorEnv(2, ends=[{}, {}])
    inner = InnerLoopConfig(steps=5, optimizer="rmsprop", lr=1e-3)
    result = train(_agent(encoder), "fake", env, inner, A2CConfig(unroll=2), seed=0, hook=hook)
    assert result.metrics["diverged"] == 1.0
    assert result.losses.shape == (6,)
    assert torch.isfinite(result.losses[:2]).all() and torch.isnan(result.losses[2:]).all()
    assert len(hook.steps) == 2 and not hook.ends


def test_return_curve_is_the_trailing_mean_of_finished_episodes() -> None:
    """Rollouts of 10 env steps; episodes end at steps 10, 15, 15, 38 with returns 1, 2, 3,
    4; window 2. Point k counts the episodes ended by step 10 (k + 1)."""
    episodes = [
        Episode(env_steps=10, episode_return=1.0, length=10, env_index=0),
        Episode(env_steps=15, episode_return=2.0, length=15, env_index=1),
        Episode(env_steps=15, episode_return=3.0, length=15, env_index=2),
        Episode(env_steps=38, episode_return=4.0, length=38, env_index=0),
    ]
    curve = return_curve(episodes, points=5, steps_per_point=10, window=2)
    assert curve == [1.0, 2.5, 2.5, 3.5, 3.5]
    empty = return_curve([], points=3, steps_per_point=10)
    assert len(empty) == 3 and all(v != v for v in empty)  # NaN before any episode ends
