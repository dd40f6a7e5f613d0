"""The one `make_env`: a vector of preprocessed Atari games, native ALE or Gymnasium wrappers.

Both backends produce the same thing (Machado et al. 2018 and Mnih et al. 2015 preprocessing):

- frames resized to 84x84, grayscale (or RGB), max-pooled over the last two frames of
  each action repeat, `frameskip` emulator frames per agent step, the last `frames`
  observations stacked: observations `(num_envs, frames, 84, 84)` uint8, or
  `(num_envs, frames, 84, 84, 3)` in RGB (`obs_to_tensor` folds colour into channels);
- up to `noop_max` no-op actions after every reset (Mnih et al. 2015, Methods);
- episodes truncated after `max_episode_frames` emulator frames (108,000 = 30 minutes,
  Machado et al. 2018), reported as `truncated`, not `terminated`;
- Gymnasium's `NEXT_STEP` autoreset: the step that ends an episode returns the episode's
  final observation; the following step ignores its action, resets the game and returns
  the first observation of the next episode with reward 0 (Gymnasium 1.x vector API).

`backend="native"` is ale_py's C++ `AtariVectorEnv` (ale-py >= 0.10), which steps all
games in a thread pool and is about twice as fast as Gymnasium's vector envs on 2 cores.
`backend="gymnasium"` is `AtariEnv` + `AtariPreprocessing` + `FrameStackObservation`
in a `SyncVectorEnv`, the reference path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor

from envs.games import resolve_game
from leap_convrnn.errors import UserError
from leap_convrnn.optional import require

BACKENDS = ("native", "gymnasium")
SCREEN_SIZE = 84


@dataclass(frozen=True)
class EnvConfig:
    """Preprocessing of every Atari environment (see the module docstring)."""

    frames: int = 4
    """Observations stacked into one agent input (Mnih et al. 2015: 4)."""

    grayscale: bool = True
    """Grayscale observations (Mnih et al. 2015); False gives RGB, 3 channels per frame."""

    frameskip: int = 4
    """Emulator frames per agent step; the action is repeated and rewards summed (Mnih 2015)."""

    noop_max: int = 30
    """Maximum number of no-op actions played after a reset (Mnih et al. 2015: 30)."""

    episodic_life: bool = False
    """End the episode when a life is lost. In ale-py >= 0.11 and Gymnasium >= 1.0 this
    restarts the game, so returns become per-life returns (not comparable with the
    reference scores); off by default, as Machado et al. 2018 recommend."""

    reward_clipping: bool = False
    """Clip each step's reward to [-1, 1] in the environment (Mnih et al. 2015). Off by
    default: the A2C learner clips to +-5 itself (Leap paper) and reports raw returns."""

    repeat_action_probability: float = 0.0
    """Sticky actions (Machado et al. 2018 recommend 0.25); 0 is the deterministic
    emulator of the 2013-2016 papers the Leap experiments follow."""

    max_episode_frames: int = 108_000
    """Truncate an episode after this many emulator frames (30 minutes of play)."""

    full_action_space: bool = False
    """Use all 18 Atari actions instead of the game's minimal action set."""

    fire_reset: bool = False
    """Press FIRE after a reset in games that need it to start (native backend only)."""

    backend: str = "native"
    """"native" (ale_py's C++ AtariVectorEnv) or "gymnasium" (Gymnasium wrappers)."""

    num_threads: int = 0
    """Native backend: worker threads stepping the games (0 lets ALE choose)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(
                f"unknown env backend {self.backend!r}; accepted: {', '.join(BACKENDS)}"
            )
        for name in ("frames", "frameskip", "max_episode_frames"):
            if getattr(self, name) < 1:
                raise UserError(f"env option {name} must be >= 1, got {getattr(self, name)}")
        if self.noop_max < 0 or self.num_threads < 0:
            raise UserError("env options noop_max and num_threads must be >= 0")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise UserError(
                f"repeat_action_probability must be in [0, 1], got {self.repeat_action_probability}"
            )
        if self.fire_reset and self.backend != "native":
            raise UserError("fire_reset is only available with backend='native'")

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one agent input after `obs_to_tensor`."""
        per_frame = 1 if self.grayscale else 3
        return (self.frames * per_frame, SCREEN_SIZE, SCREEN_SIZE)

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def make_env(
    game: str, num_envs: int, config: EnvConfig | None = None, **overrides: Any
) -> gymnasium.vector.VectorEnv:
    """A vector of `num_envs` copies of `game`, preprocessed as `config` (plus `overrides`) says.

    `game` is any name `resolve_game` accepts. Seed it through `reset(seed=...)`.
    """
    config = EnvConfig(**overrides) if config is None else config
    if overrides:
        config = EnvConfig(**{**_as_dict(config), **overrides})
    if num_envs < 1:
        raise UserError(f"num_envs must be >= 1, got {num_envs}")
    rom = resolve_game(game)
    if config.backend == "native":
        return _native(rom, num_envs, config)
    return _gymnasium(rom, num_envs, config)


def _as_dict(config: EnvConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def _native(rom: str, num_envs: int, config: EnvConfig) -> gymnasium.vector.VectorEnv:
    """ale_py's C++ vector environment, which does all the preprocessing itself."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        rom,
        num_envs,
        num_threads=config.num_threads,
        max_num_frames_per_episode=config.max_episode_frames,
        repeat_action_probability=config.repeat_action_probability,
        full_action_space=config.full_action_space,
        autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP,
        img_height=SCREEN_SIZE,
        img_width=SCREEN_SIZE,
        grayscale=config.grayscale,
        stack_num=config.frames,
        frameskip=config.frameskip,
        maxpool=True,
        noop_max=config.noop_max,
        episodic_life=config.episodic_life,
        reward_clipping=config.reward_clipping,
        use_fire_reset=config.fire_reset,
    )


def _single_gymnasium(rom: str, config: EnvConfig) -> gymnasium.Env:
    """One game through Gymnasium's wrappers (frame skipping is done by AtariPreprocessing)."""
    import ale_py
    from ale_py.env import AtariEnv

    require("cv2", "backend='gymnasium' (AtariPreprocessing)")
    from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

    gymnasium.register_envs(ale_py)
    env: gymnasium.Env = AtariEnv(
        game=rom,
        obs_type="rgb",
        frameskip=1,
        repeat_action_probability=config.repeat_action_probability,
        full_action_space=config.full_action_space,
        max_num_frames_per_episode=config.max_episode_frames,
    )
    env = AtariPreprocessing(
        env,
        noop_max=config.noop_max,
        frame_skip=config.frameskip,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=config.episodic_life,
        grayscale_obs=config.grayscale,
    )
    if config.reward_clipping:
        env = ClipReward(env, -1.0, 1.0)
    return FrameStackObservation(env, config.frames)


def _gymnasium(rom: str, num_envs: int, config: EnvConfig) -> gymnasium.vector.VectorEnv:
    return gymnasium.vector.SyncVectorEnv(
        [partial(_single_gymnasium, rom, config) for _ in range(num_envs)],
        autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP,
    )


def obs_to_tensor(obs: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """Observations as a uint8 tensor `(N, C, 84, 84)`: RGB frames are folded into channels
    (frame-major: C = frames x 3). No copy on the CPU for grayscale."""
    x = torch.from_numpy(np.asarray(obs))
    if x.dim() == 5:  # (N, frames, H, W, 3) -> (N, frames * 3, H, W)
        n, f, h, w, c = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(n, f * c, h, w)
    return x.to(device, non_blocking=True)
