"""Synchronous advantage actor-critic (A2C) on one Atari game, readable from top to bottom.

The learner of the Leap paper's Atari experiments (Flennerhag et al. 2019, Section 4.3 and
Appendix): A2C with 32 environments, unroll 5, RMSprop (lr 1e-4, eps 1e-4, alpha 0.99),
entropy cost 0.01, rewards clipped to +-5, gamma 0.99. Every implementation detail,
with its source:

1.  Synchronous actor-critic: `num_envs` games stepped in lockstep; one gradient step per
    rollout of `unroll` steps from every game (A3C, Mnih et al. 2016, made synchronous as
    OpenAI Baselines' A2C, Wu et al. 2017).
2.  n-step returns with bootstrapping (Mnih et al. 2016, Algorithm S3):
    R_t = r_t + gamma R_{t+1}, with R_T = V(s_T) from the observation after the rollout.
3.  Termination vs truncation (Pardo et al. 2018, "Time Limits in Reinforcement
    Learning"): a terminal step does not bootstrap (R_t = r_t); a step truncated by the
    time limit bootstraps from the value of its final observation (R_t = r_t + gamma V(s_{t+1})).
4.  Autoreset (Gymnasium 1.x `NEXT_STEP`): the step after an episode end feeds the final
    observation, its action is ignored and the game resets. That step is not a transition
    and is masked out of the loss; the value computed on it is exactly V(final observation),
    the bootstrap of a truncated step (item 3) at no extra cost.
5.  Rewards clipped to [-reward_clip, reward_clip] = [-5, 5] for learning only (Leap paper);
    episode returns and normalized scores use the raw game score.
6.  Loss = policy loss + value_coef * value loss - entropy_coef * entropy, averaged over the
    valid steps: policy loss -log pi(a_t|s_t) * A_t with the advantage A_t = R_t - V(s_t)
    held constant; value loss (R_t - V(s_t))^2 with R_t held constant; value_coef 0.5 and
    entropy_coef 0.01 (Mnih et al. 2016 entropy beta 0.01; Baselines A2C vf_coef 0.5,
    which also uses the plain squared error without a 1/2). No advantage normalization.
7.  RMSprop with alpha 0.99 and eps 1e-4 (Leap paper). PyTorch adds eps outside the square
    root and starts the squared-gradient average at 0 (TensorFlow's RMSProp adds it inside
    and starts it at 1), so early steps are larger than in TensorFlow.
8.  Gradient-norm clipping at 0.5 (Baselines A2C `max_grad_norm`; the Leap paper does not
    say), applied after the trajectory hook: Leap sees the true gradient of the loss, the
    clip only shapes the update. `max_grad_norm=None` turns it off.
9.  A policy head (logits) and a value head per game on a shared encoder, both linear,
    orthogonally initialized with gain 0.01 (policy) and 1 (value) (Baselines; Huang et al.
    2022, "The 37 implementation details of PPO", item 2); biases 0.
10. One forward pass per environment step: the acting forward pass stays in the autograd
    graph and the loss reuses it (the parameters do not change during a rollout), so no
    second forward pass over the rollout is needed. For an encoder with state, this is
    truncated backpropagation through time over the `unroll` steps; the state is carried
    across rollouts and detached between updates.
11. A stateful encoder (one with `step(x, state)`) is reset with `reset_state(state, mask)`
    before it sees the first observation of a new episode.
12. Observations are uint8 frames scaled to [0, 1] (Mnih et al. 2015) and fed channels-last,
    which makes oneDNN convolutions on the CPU markedly faster. `precision="bf16"` (off by
    default) autocasts the encoder and heads to bfloat16; parameters stay fp32.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.make_env import obs_to_tensor
from leap_convrnn.errors import UserError
from models.state import State, detach_state, map_state
from tasks.base import InnerLoopConfig, InnerLoopResult, TrajectoryHook
from tasks.optimizers import make_optimizer

PRECISIONS = ("fp32", "bf16")


class Diverged(FloatingPointError):
    """The agent's policy or loss stopped being finite (a diverged training run)."""


@dataclass(frozen=True)
class A2CConfig:
    """Hyperparameters of the learner (defaults: the Leap paper's Atari setup)."""

    num_envs: int = 32
    """Games stepped in lockstep (Leap paper: 32)."""

    unroll: int = 5
    """Environment steps per game in one rollout, i.e. per update (Leap paper: 5)."""

    gamma: float = 0.99
    """Discount factor (Leap paper: 0.99)."""

    entropy_coef: float = 0.01
    """Weight of the entropy bonus (Leap paper and Mnih et al. 2016: 0.01)."""

    value_coef: float = 0.5
    """Weight of the squared value error (Baselines A2C: 0.5)."""

    max_grad_norm: float | None = 0.5
    """Clip the global gradient norm to this value before the update (None: no clipping)."""

    reward_clip: float | None = 5.0
    """Clip learning rewards to [-reward_clip, reward_clip] (Leap paper: 5; None: no clip)."""

    rmsprop_alpha: float = 0.99
    """RMSprop decay of the squared-gradient average (Leap paper: 0.99)."""

    rmsprop_eps: float = 1e-4
    """RMSprop epsilon (Leap paper: 1e-4)."""

    channels_last: bool = True
    """Feed the encoder channels-last tensors (faster convolutions on CPU)."""

    precision: str = "fp32"
    """"fp32", or "bf16": autocast convolutions and matrix products to bfloat16 (parameters,
    gradients and optimizer state stay fp32). Faster on CPUs with AMX; not the paper's."""

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.unroll < 1:
            raise UserError(f"num_envs and unroll must be >= 1, got {self.num_envs}, {self.unroll}")
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("max_grad_norm", "reward_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name} must be positive or None, got {value}")
        if self.precision not in PRECISIONS:
            raise UserError(
                f"unknown precision {self.precision!r}; accepted: {', '.join(PRECISIONS)}"
            )

    @property
    def steps_per_update(self) -> int:
        """Environment steps consumed by one update (`num_envs * unroll`)."""
        return self.num_envs * self.unroll


# --------------------------------------------------------------------------- the agent


class StatefulEncoder(Protocol):
    """The interface of an encoder that carries state across environment steps."""

    def initial_state(self, batch_size: int) -> State: ...

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]: ...

    def reset_state(self, state: State, done: Tensor) -> State: ...


class GameHead(nn.Module):
    """A linear policy head (action logits) and a linear value head for one game (item 9)."""

    def __init__(self, feature_dim: int, num_actions: int) -> None:
        super().__init__()
        self.policy = nn.Linear(feature_dim, num_actions)
        self.value = nn.Linear(feature_dim, 1)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Orthogonal weights (gain 0.01 policy, 1 value), zero biases."""
        with torch.no_grad():
            for layer, gain in ((self.policy, 0.01), (self.value, 1.0)):
                weight = torch.empty(layer.weight.shape)
                if generator is None:
                    nn.init.orthogonal_(weight, gain=gain)
                else:
                    nn.init.orthogonal_(weight, gain=gain, generator=generator)
                layer.weight.copy_(weight)
                layer.bias.zero_()

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy(features), self.value(features).squeeze(-1)


class ActorCritic(nn.Module):
    """A shared encoder from `models/` with a policy and value head per game.

    Leap meta-learns `encoder.*` only; a task re-initializes its game's head at the start
    of every inner loop. A head for a game the agent has never seen is added on demand.
    Works with any encoder `(B, C, 84, 84) -> (B, feature_dim)`, and with a stateful one
    exposing `initial_state(batch_size)`, `step(x, state) -> (features, state)` and
    `reset_state(state, done_mask) -> state`.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, action_counts: dict[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.heads = nn.ModuleDict(
            {game: GameHead(feature_dim, n) for game, n in action_counts.items()}
        )
        self.channels_last = True
        self.autocast_bf16 = False

    def configure(self, config: A2CConfig) -> None:
        """Adopt the learner's input layout and precision (items 12, `precision`)."""
        self.channels_last = config.channels_last
        self.autocast_bf16 = config.precision == "bf16"

    @property
    def recurrent(self) -> bool:
        """Whether the encoder carries state across environment steps."""
        return callable(getattr(self.encoder, "step", None))

    @property
    def stateful(self) -> StatefulEncoder:
        """The encoder, seen through its stateful interface."""
        return cast(StatefulEncoder, self.encoder)

    def head(self, game: str, num_actions: int) -> GameHead:
        """The head of `game`, added (on the encoder's device) if the agent has none."""
        if game not in self.heads:
            device = next(self.encoder.parameters()).device
            self.heads[game] = GameHead(self.feature_dim, num_actions).to(device)
        head = self.heads[game]
        assert isinstance(head, GameHead)
        if head.policy.out_features != num_actions:
            raise UserError(
                f"the agent's head for {game!r} has {head.policy.out_features} actions, "
                f"the environment {num_actions}"
            )
        return head

    def initial_state(self, batch_size: int) -> State:
        """The encoder's initial state on the agent's device (None for a feedforward encoder)."""
        if not self.recurrent:
            return None
        device = next(self.encoder.parameters()).device
        return map_state(lambda t: t.to(device), self.stateful.initial_state(batch_size))

    def reset_state(self, state: State, episode_start: Tensor) -> State:
        """Reset the state of the games whose observation starts a new episode (item 11)."""
        if not self.recurrent:
            return state
        return self.stateful.reset_state(state, episode_start)

    def forward(self, obs: Tensor, game: str, state: State = None) -> tuple[Tensor, Tensor, State]:
        """uint8 observations `(B, C, 84, 84)` -> (action logits, values, next state)."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = obs.to(dtype=torch.float32, memory_format=layout).mul_(1.0 / 255.0)  # item 12
        with torch.autocast(obs.device.type, torch.bfloat16, enabled=self.autocast_bf16):
            if self.recurrent:
                features, state = self.stateful.step(x, state)
            else:
                features = self.encoder(x)
            logits, value = self.heads[game](features)
        return logits.float(), value.float(), state


# ------------------------------------------------------------------- returns and loss


def clip_rewards(rewards: Tensor, bound: float | None) -> Tensor:
    """Rewards clipped to [-bound, bound] (item 5); unchanged when `bound` is None."""
    return rewards if bound is None else rewards.clamp(-bound, bound)


def nstep_returns(
    rewards: Tensor,
    values: Tensor,
    bootstrap: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
) -> Tensor:
    """n-step bootstrapped returns over a rollout of shape (T, N) (items 2-4).

    Args:
        rewards: r_t, (T, N).
        values: V(s_t) of the observation fed at step t, detached, (T, N).
        bootstrap: V(s_T), the value of the observation after the rollout, (N,).
        terminated: the episode ended in a terminal state at step t, (T, N) bool.
        truncated: the episode was cut by the time limit at step t, (T, N) bool.
        gamma: discount.

    R_t = r_t                              if terminated[t]
    R_t = r_t + gamma * V(s_{t+1})         if truncated[t] (s_{t+1} is the final observation)
    R_t = r_t + gamma * R_{t+1}            otherwise, with R_T = V(s_T).
    The step after an episode end (an autoreset step) gets a meaningless R_t; the loss masks it.
    """
    returns = torch.empty_like(rewards)
    next_return = bootstrap
    next_value = bootstrap
    for t in reversed(range(rewards.shape[0])):
        future = torch.where(truncated[t], next_value, next_return)
        returns[t] = rewards[t] + gamma * (~terminated[t]).to(rewards.dtype) * future
        next_return = returns[t]
        next_value = values[t]
    return returns


@dataclass
class Rollout:
    """`unroll` steps from every game. Tensors are (T, N); `log_probs`, `values` and
    `entropies` carry the autograd graph when the rollout was collected with grad enabled."""

    log_probs: Tensor
    values: Tensor
    entropies: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor
    bootstrap: Tensor


def a2c_loss(rollout: Rollout, config: A2CConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """The A2C loss of a rollout (item 6) and its parts, averaged over valid steps."""
    rewards = clip_rewards(rollout.rewards, config.reward_clip)
    values = rollout.values.detach()
    returns = nstep_returns(
        rewards, values, rollout.bootstrap, rollout.terminated, rollout.truncated, config.gamma
    )
    mask = rollout.valid.to(values.dtype)
    count = mask.sum().clamp_min(1.0)
    advantages = returns - values
    policy_loss = -(rollout.log_probs * advantages * mask).sum() / count
    value_loss = ((returns - rollout.values).square() * mask).sum() / count
    entropy = (rollout.entropies * mask).sum() / count
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    parts = {
        "policy_loss": policy_loss.detach(),
        "value_loss": value_loss.detach(),
        "entropy": entropy.detach(),
    }
    return loss, parts


# ------------------------------------------------------------------------- the learner


@dataclass
class Episode:
    """A finished episode: the environment step count when it ended and its raw return."""

    env_steps: int
    episode_return: float
    length: int
    env_index: int


class A2C:
    """Steps `num_envs` copies of one game with the agent; keeps what lives across updates
    (the last observation, episode boundaries, the encoder state, running returns)."""

    def __init__(
        self,
        agent: ActorCritic,
        game: str,
        env: gymnasium.vector.VectorEnv,
        config: A2CConfig,
        seed: int,
        seed_env: bool = True,
    ) -> None:
        self.agent = agent
        self.game = game
        self.env = env
        self.config = config
        self.device = next(agent.parameters()).device
        agent.configure(config)
        self.generator = torch.Generator().manual_seed(seed)
        n = env.num_envs
        obs, _ = env.reset(seed=seed if seed_env else None)  # seeding reloads the ROMs
        self.obs = obs_to_tensor(obs, self.device)
        self.episode_start = torch.ones(n, dtype=torch.bool)  # obs is an episode's first
        self.autoreset = np.zeros(n, dtype=bool)  # the next step is an autoreset step
        self.state = agent.initial_state(n)
        self.running_return = np.zeros(n, dtype=np.float64)
        self.running_length = np.zeros(n, dtype=np.int64)
        self.env_steps = 0
        self.episodes: list[Episode] = []

    def act(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One forward pass on the current observation: action, log-prob, entropy, value."""
        agent = self.agent
        self.state = agent.reset_state(self.state, self.episode_start.to(self.device))
        logits, value, self.state = agent(self.obs, self.game, self.state)
        log_p = F.log_softmax(logits, dim=-1)
        probs = log_p.detach().exp()
        if not bool(torch.isfinite(probs).all()):
            raise Diverged(f"non-finite policy on {self.game!r} after {self.env_steps} env steps")
        action = torch.multinomial(probs.cpu(), 1, generator=self.generator).squeeze(1)
        log_prob = log_p.gather(1, action.to(log_p.device).unsqueeze(1)).squeeze(1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return action, log_prob, entropy, value

    def step(self, action: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the games; track episode returns; return (reward, terminated, truncated, valid)."""
        obs, reward, terminated, truncated, _ = self.env.step(action.numpy())
        valid = ~self.autoreset  # item 4: an autoreset step is not a transition
        reward = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        self.env_steps += len(reward)
        self.running_return += reward
        self.running_length += valid
        done = terminated | truncated
        for i in np.flatnonzero(done):
            self.episodes.append(
                Episode(
                    env_steps=self.env_steps,
                    episode_return=float(self.running_return[i]),
                    length=int(self.running_length[i]),
                    env_index=int(i),
                )
            )
        self.running_return[done] = 0.0
        self.running_length[done] = 0
        self.episode_start = torch.from_numpy(self.autoreset.copy())
        self.autoreset = done
        self.obs = obs_to_tensor(obs, self.device)
        return reward, terminated, truncated, valid

    def rollout(self) -> Rollout:
        """`unroll` steps of every game; the graph is kept when grad is enabled (item 10)."""
        t_steps, n = self.config.unroll, self.env.num_envs
        log_probs, values, entropies = [], [], []
        rewards = np.zeros((t_steps, n), dtype=np.float32)
        terminated = np.zeros((t_steps, n), dtype=bool)
        truncated = np.zeros((t_steps, n), dtype=bool)
        valid = np.zeros((t_steps, n), dtype=bool)
        for t in range(t_steps):
            action, log_prob, entropy, value = self.act()
            rewards[t], terminated[t], truncated[t], valid[t] = self.step(action)
            log_probs.append(log_prob)
            values.append(value)
            entropies.append(entropy)
        with torch.no_grad():  # V(s_T): the state is not advanced, the next rollout does it
            state = self.agent.reset_state(self.state, self.episode_start.to(self.device))
            _, bootstrap, _ = self.agent(self.obs, self.game, state)
        device = self.device
        return Rollout(
            log_probs=torch.stack(log_probs),
            values=torch.stack(values),
            entropies=torch.stack(entropies),
            rewards=torch.from_numpy(rewards).to(device),
            terminated=torch.from_numpy(terminated).to(device),
            truncated=torch.from_numpy(truncated).to(device),
            valid=torch.from_numpy(valid).to(device),
            bootstrap=bootstrap,
        )

    def detach_state(self) -> None:
        """Cut the state's history after an update (item 10)."""
        self.state = detach_state(self.state)


@dataclass
class A2CResult(InnerLoopResult):
    """An inner loop's losses and metrics, plus every finished episode (the learning curve)."""

    episodes: list[Episode] = field(default_factory=list)


def return_curve(
    episodes: Sequence[Episode], points: int, steps_per_point: int, window: int = 10
) -> list[float]:
    """The learning curve of an A2C run, one point per rollout: point k is the mean return
    of the last `window` episodes finished by the end of rollout k (environment step
    (k + 1) * `steps_per_point`), NaN before the first one finishes."""
    ends = [e.env_steps for e in episodes]
    curve = []
    for k in range(points):
        finished = bisect.bisect_right(ends, (k + 1) * steps_per_point)
        recent = [e.episode_return for e in episodes[max(0, finished - window) : finished]]
        curve.append(float(np.mean(recent)) if recent else math.nan)
    return curve


def train(
    agent: ActorCritic,
    game: str,
    env: gymnasium.vector.VectorEnv,
    inner: InnerLoopConfig,
    config: A2CConfig,
    seed: int,
    hook: TrajectoryHook | None = None,
    seed_env: bool = True,
) -> A2CResult:
    """`inner.steps` A2C updates of `agent` on `game`, from the agent's current encoder.

    The hook sees f(theta_i) after each backward pass, before clipping and the update;
    then, once, f(theta_K): the loss of one more rollout collected at the final
    parameters (no backward). Its environment steps and episodes are counted.
    The caller initializes the game's head. `seed` seeds the action sampling and, with
    `seed_env`, the environments' reset (slow for ALE: it reloads the ROMs).

    A run whose policy or loss stops being finite stops there: the missing losses are NaN,
    `metrics["diverged"]` is 1, and `hook.on_end` is not called (a meta-learner drops
    such a task).
    """
    num_actions = int(env.single_action_space.n)  # type: ignore[attr-defined]
    head = agent.head(game, num_actions)
    params = [p for p in agent.encoder.parameters() if p.requires_grad]
    params += list(head.parameters())
    inner = replace(inner, rmsprop_alpha=config.rmsprop_alpha, rmsprop_eps=config.rmsprop_eps)
    optimizer = make_optimizer(params, inner)
    learner = A2C(agent, game, env, config, seed, seed_env)
    was_training = agent.training
    agent.train()
    losses: list[Tensor] = []
    diverged = False
    try:
        for _ in range(inner.steps):
            rollout = learner.rollout()
            loss, _ = a2c_loss(rollout, config)
            if not bool(torch.isfinite(loss)):
                raise Diverged(f"non-finite A2C loss on {game!r}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            detached = loss.detach()
            if hook is not None:
                hook.on_step(detached)
            if config.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            learner.detach_state()
            losses.append(detached)
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            final, _ = a2c_loss(learner.rollout(), config)
        if hook is not None:
            hook.on_end(final)
        losses.append(final)
    except Diverged:
        diverged = True
        optimizer.zero_grad(set_to_none=True)
        losses += [torch.tensor(math.nan, device=learner.device)] * (inner.steps + 1 - len(losses))
    agent.train(was_training)
    returns = [e.episode_return for e in learner.episodes]
    metrics = {
        "episode_return": float(np.mean(returns)) if returns else math.nan,
        "episodes": float(len(returns)),
        "env_steps": float(learner.env_steps),
        "diverged": float(diverged),
    }
    return A2CResult(losses=torch.stack(losses).cpu(), metrics=metrics, episodes=learner.episodes)


def play(
    agent: ActorCritic,
    game: str,
    env: gymnasium.vector.VectorEnv,
    seed: int,
    config: A2CConfig | None = None,
    seed_env: bool = True,
) -> list[float]:
    """One episode in each game of `env` with actions sampled from the policy, in eval mode,
    without gradients; returns the raw episode returns. Bound the cost with the env's
    `max_episode_frames` (a truncated episode counts with its partial return). Raises
    `Diverged` if the policy is not finite."""
    num_actions = int(env.single_action_space.n)  # type: ignore[attr-defined]
    agent.head(game, num_actions)
    was_training = agent.training
    agent.eval()
    config = replace(config or A2CConfig(), num_envs=env.num_envs)
    learner = A2C(agent, game, env, config, seed, seed_env)
    first: dict[int, float] = {}
    try:
        with torch.no_grad():
            while len(first) < env.num_envs:
                action, *_ = learner.act()
                seen = len(learner.episodes)
                learner.step(action)
                for episode in learner.episodes[seen:]:
                    first.setdefault(episode.env_index, episode.episode_return)
    finally:
        agent.train(was_training)
    return [first[i] for i in sorted(first)]
