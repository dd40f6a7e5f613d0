"""Atari games as Leap tasks: `AtariTask` (one game) and `AtariDistribution` (a game pool).

A task's inner loop is A2C training on its game (`envs.a2c.train`) for `steps` updates of
`num_envs * unroll` environment steps each; Leap accumulates the meta-gradient over the
encoder's trajectory through the hook. The agent is an `ActorCritic`: one encoder from
`models/` shared by all games, plus a policy and value head per game. Leap meta-learns
the encoder (`meta_parameters`); every inner loop starts its game's head afresh.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

from envs import a2c
from envs.a2c import A2CConfig, A2CResult, ActorCritic
from envs.games import normalized_score, num_actions, resolve_pool
from envs.make_env import EnvConfig, make_env
from leap_convrnn.errors import UserError
from tasks.base import InnerLoopConfig, Task, TaskDistribution, TrajectoryHook
from tasks.registry import register as register_task

A2C_INNER = InnerLoopConfig(steps=100, optimizer="rmsprop", lr=1e-4)
"""The inner-loop optimizer of the Leap paper's Atari runs (RMSprop, lr 1e-4); `steps`
(A2C updates per task, here 100 x 160 = 16,000 environment steps) is the experiment's."""


@dataclass(frozen=True)
class GameEvalConfig:
    """How a game task evaluates its agent (episodes, truncation) and keeps its environments
    open between tasks (the cache size)."""

    eval_episodes: int = 4
    """Episodes per evaluation, played in parallel, one per environment."""

    eval_max_frames: int = 18_000
    """Each evaluation episode is truncated after this many emulator frames (5 minutes of
    play); a truncated episode counts with its partial return."""

    env_cache_size: int = 32
    """Vector envs a game pool keeps open for its tasks (least recently used closed first).
    Creating and seeding an env reloads each game's ROM (~0.1-0.2 s per game instance on
    2 cores); an open instance holds ~1.7 MB. 32 keeps all 23 games of the Leap pool."""

    def __post_init__(self) -> None:
        if self.eval_episodes < 1 or self.eval_max_frames < 1 or self.env_cache_size < 1:
            raise UserError("eval_episodes, eval_max_frames and env_cache_size must be >= 1")


@dataclass(frozen=True)
class AtariSettings:
    """Everything a game pool needs: preprocessing, learner, evaluation and env caching."""

    env: EnvConfig = field(default_factory=EnvConfig)
    a2c: A2CConfig = field(default_factory=A2CConfig)
    evaluation: GameEvalConfig = field(default_factory=GameEvalConfig)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AtariSettings:
        """Route flat options (`num_envs=8`, `frames=4`, ...) to their configs."""
        groups: dict[type, dict[str, Any]] = {EnvConfig: {}, A2CConfig: {}, GameEvalConfig: {}}
        owners = {f.name: kind for kind in groups for f in fields(kind)}
        for key, value in options.items():
            if key not in owners:
                raise UserError(
                    f"unknown option {key!r} for Atari games; accepted: {', '.join(owners)}"
                )
            groups[owners[key]][key] = value
        return cls(
            env=EnvConfig(**groups[EnvConfig]),
            a2c=A2CConfig(**groups[A2CConfig]),
            evaluation=GameEvalConfig(**groups[GameEvalConfig]),
        )


EnvKey = tuple[str, str]


def _close_all(envs: OrderedDict[EnvKey, gymnasium.vector.VectorEnv]) -> None:
    while envs:
        _, env = envs.popitem(last=False)
        env.close()


class EnvCache:
    """Open vector envs keyed by (game, purpose), shared by the tasks of one game pool.

    An env is seeded once, when it is created (seeding reloads the ROMs, which is what
    makes creation slow); each inner loop or evaluation then starts with an unseeded
    reset, so a run is reproducible for a given sequence of tasks. Least recently used
    envs are closed beyond `capacity`; the rest close with `close()` or when the cache
    is garbage collected.
    """

    def __init__(self, settings: AtariSettings, capacity: int) -> None:
        self.settings = settings
        self.capacity = capacity
        self._envs: OrderedDict[EnvKey, gymnasium.vector.VectorEnv] = OrderedDict()
        self._finalizer = weakref.finalize(self, _close_all, self._envs)

    def __len__(self) -> int:
        return len(self._envs)

    def get(self, game: str, purpose: str, seed: int) -> gymnasium.vector.VectorEnv:
        """The env for `game` and `purpose` ("train": A2C, "eval": evaluation episodes)."""
        key = (game, purpose)
        if key in self._envs:
            self._envs.move_to_end(key)
            return self._envs[key]
        s = self.settings
        if purpose == "train":
            env = make_env(game, s.a2c.num_envs, s.env)
        else:
            eval_env = replace(
                s.env, episodic_life=False, max_episode_frames=s.evaluation.eval_max_frames
            )
            env = make_env(game, s.evaluation.eval_episodes, eval_env)
        env.reset(seed=seed)
        self._envs[key] = env
        while len(self._envs) > self.capacity:
            _, old = self._envs.popitem(last=False)
            old.close()
        return env

    def close(self, game: str | None = None) -> None:
        """Close every env, or those of `game`."""
        for key in [k for k in self._envs if game is None or k[0] == game]:
            self._envs.pop(key).close()


class AtariTask(Task):
    """One game: A2C training as the inner loop, a few evaluation episodes as `evaluate`.

    Environments come from `cache` (the game pool's, shared by its tasks), or from a
    cache of the task's own; `close()` closes this game's envs in it.
    """

    def __init__(
        self, game: str, settings: AtariSettings, seed: int, cache: EnvCache | None = None
    ) -> None:
        self.name = game
        self.game = game
        self.settings = settings
        self.seed = seed
        self.num_outputs = num_actions(game, settings.env.full_action_space)
        self.cache = cache if cache is not None else EnvCache(settings, capacity=2)

    def __repr__(self) -> str:
        return f"AtariTask({self.game!r}, seed={self.seed})"

    def env(self, purpose: str) -> gymnasium.vector.VectorEnv:
        """The vector env for "train" (A2C) or "eval" (evaluation episodes), created once."""
        return self.cache.get(self.game, purpose, self.seed)

    def close(self) -> None:
        """Close this game's environments (re-created if the task is used again)."""
        self.cache.close(self.game)

    def _agent(self, model: nn.Module) -> ActorCritic:
        if not isinstance(model, ActorCritic):
            raise UserError(
                f"an Atari task trains an ActorCritic agent (AtariDistribution.make_model), "
                f"got {type(model).__name__}"
            )
        return model

    def inner_loop(
        self,
        model: nn.Module,
        config: InnerLoopConfig,
        hook: TrajectoryHook | None = None,
    ) -> A2CResult:
        """`config.steps` A2C updates on this game from the model's current encoder.

        The game's head is re-initialized first (seeded by the task). The environments
        start with a reset (seeded only when the env was created, see `EnvCache`); the
        task's seed drives the action sampling. RMSprop uses the paper's alpha and eps
        when `config.optimizer == "rmsprop"` (see `A2C_INNER`).
        Metrics: `episode_return` (mean raw return of the episodes finished during the
        loop, NaN if none), `normalized_score` (of that mean), `episodes`, `env_steps`
        (agent steps x environments, including the final loss rollout), `frames`, and
        `diverged` (1 if the run stopped on a non-finite policy or loss; see `a2c.train`),
        logged under `atari/` during meta-training. Curves (`a2c.return_curve`, one point
        per rollout): `episode_return` and its `normalized_score`.
        """
        agent = self._agent(model)
        head = agent.head(self.game, self.num_outputs)
        generator = torch.Generator().manual_seed(self.seed)
        head.reset_parameters(generator)
        env = self.env("train")
        result = a2c.train(
            agent, self.game, env, config, self.settings.a2c, self.seed, hook, seed_env=False
        )
        metrics = result.metrics
        metrics["normalized_score"] = normalized_score(self.game, metrics["episode_return"])
        metrics["frames"] = metrics["env_steps"] * self.settings.env.frameskip
        per_rollout = self.settings.a2c.num_envs * self.settings.a2c.unroll
        returns = a2c.return_curve(result.episodes, len(result.losses), per_rollout)
        result.curves = {
            "episode_return": returns,
            "normalized_score": [normalized_score(self.game, r) for r in returns],
        }
        result.log_prefix = "atari"
        return result

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """`eval_episodes` episodes (each at most `eval_max_frames` frames) with the policy's
        sampled actions: mean raw `episode_return` and its `normalized_score` (NaN for a
        policy that is not finite)."""
        agent = self._agent(model)
        env = self.env("eval")
        try:
            returns = a2c.play(
                agent, self.game, env, self.seed + 1, self.settings.a2c, seed_env=False
            )
        except a2c.Diverged:
            returns = []
        mean = float(np.mean(returns)) if returns else math.nan
        return {"episode_return": mean, "normalized_score": normalized_score(self.game, mean)}


def _default_feature_dim(name: str) -> int:
    """The encoder builder's own default `num_outputs`, else 512 (the Nature CNN's)."""
    import models

    builder = models.MODELS.get(name)
    param = inspect.signature(builder).parameters.get("num_outputs")
    if param is not None and isinstance(param.default, int):
        return param.default
    return 512


class AtariDistribution(TaskDistribution):
    """A pool of Atari games for one split; a task is one game with its own seed.

    The pool's tasks share one `EnvCache`, so a game's environments are created once per
    pool, not once per sampled task.

    `input_shape` is the stacked observation (C, 84, 84); `num_outputs` is the largest
    action set in the pool (for reference: the agent has a head sized per game).
    """

    heads_per_task = True

    def __init__(
        self, pool: str | list[str] | tuple[str, ...], split: str, settings: AtariSettings
    ):
        self.games = resolve_pool(pool, split)
        self.name = pool if isinstance(pool, str) else "+".join(self.games)
        self.split = split
        self.settings = settings
        self.input_shape = settings.env.observation_shape
        self.action_counts = {g: num_actions(g, settings.env.full_action_space) for g in self.games}
        self.num_outputs = max(self.action_counts.values())
        self.cache = EnvCache(settings, settings.evaluation.env_cache_size)

    def __repr__(self) -> str:
        return f"AtariDistribution({self.name!r}, split={self.split!r}, games={len(self.games)})"

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """`n` games drawn uniformly (without replacement while n <= pool size), each with a
        seed drawn from `rng`."""
        picks = rng.choice(len(self.games), size=n, replace=n > len(self.games))
        seeds = rng.integers(0, 2**31 - 1, size=n)
        return [
            AtariTask(self.games[i], self.settings, int(s), self.cache)
            for i, s in zip(picks, seeds, strict=True)
        ]

    def tasks(self, seed: int = 0) -> list[AtariTask]:
        """Every game of the pool once, in order (for evaluation over all held-out games)."""
        return [AtariTask(g, self.settings, seed + i, self.cache) for i, g in enumerate(self.games)]

    def close(self) -> None:
        """Close every environment the pool's tasks opened."""
        self.cache.close()

    def make_model(self, name: str, options: dict[str, Any]) -> nn.Module:
        """An `ActorCritic`: encoder `models.build(name, input_shape, feature_dim, **options)`
        plus a head per game of the pool. `options["feature_dim"]` sets the feature size
        (default: the encoder builder's default `num_outputs`, else 512)."""
        import models

        options = dict(options)
        feature_dim = int(options.pop("feature_dim", _default_feature_dim(name)))
        encoder = models.build(name, self.input_shape, feature_dim, **options)
        return ActorCritic(encoder, feature_dim, self.action_counts)

    def meta_parameters(self, model: nn.Module) -> list[str] | None:
        """The encoder's trainable parameters; the heads are per game and start afresh."""
        return [
            n for n, p in model.named_parameters() if n.startswith("encoder.") and p.requires_grad
        ]


def build(
    game_pool: str | list[str] | tuple[str, ...] = "leap", split: str = "train", **options: Any
) -> AtariDistribution:
    """The Atari task distribution of `game_pool` ("leap", "atari57" or a list of games) for
    `split` ("train" | "validation" | "test"). `options` are fields of `EnvConfig`,
    `A2CConfig` and `GameEvalConfig` (see their docstrings), e.g. `num_envs=8, frames=4`."""
    return AtariDistribution(game_pool, split, AtariSettings.from_options(options))


@register_task("atari")
def atari_games(
    split: str, root: str, game_pool: str | list[str] = "leap", **options: Any
) -> AtariDistribution:
    """Atari games as a task family (`task=atari`): `build(game_pool, split, **options)`;
    `root` is unused, since the ROMs ship inside ale-py."""
    return build(game_pool, split, **options)
