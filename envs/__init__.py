"""Atari: environments, preprocessing, the actor-critic learner, game pools.

envs.build("leap", "train", num_envs=32)   -> AtariDistribution (a TaskDistribution)
dist.make_model("nature_cnn", {})           -> ActorCritic (encoder + a head per game)
dist.meta_parameters(model)                 -> the encoder's parameter names
dist.sample(n, rng)                         -> [AtariTask]; task.inner_loop(...) is A2C
envs.make_env("breakout", 32, EnvConfig())  -> a preprocessed vector env (native ALE)
"""

from leap_convrnn.optional import require

# Before any submodule: without the `atari` extra, importing envs is one line naming it.
gymnasium = require("gymnasium", "Atari games")
ale_py = require("ale_py", "Atari games")

from envs.a2c import A2CConfig, A2CResult, ActorCritic, Diverged, Episode, nstep_returns
from envs.games import (
    POOLS,
    REFERENCE_SCORES,
    SPLITS,
    normalized_score,
    num_actions,
    resolve_game,
    resolve_pool,
)
from envs.make_env import EnvConfig, make_env, obs_to_tensor
from envs.tasks import (
    A2C_INNER,
    AtariDistribution,
    AtariSettings,
    AtariTask,
    EnvCache,
    GameEvalConfig,
    build,
)

gymnasium.register_envs(ale_py)

__all__ = [
    "A2C_INNER",
    "POOLS",
    "REFERENCE_SCORES",
    "SPLITS",
    "A2CConfig",
    "A2CResult",
    "ActorCritic",
    "AtariDistribution",
    "AtariSettings",
    "AtariTask",
    "Diverged",
    "EnvCache",
    "EnvConfig",
    "Episode",
    "GameEvalConfig",
    "build",
    "make_env",
    "normalized_score",
    "nstep_returns",
    "num_actions",
    "obs_to_tensor",
    "resolve_game",
    "resolve_pool",
]
