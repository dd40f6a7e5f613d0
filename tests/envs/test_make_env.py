"""The one `make_env`: both backends, shapes, truncation and autoreset semantics."""

from __future__ import annotations

import numpy as np
import pytest

from envs.make_env import EnvConfig, make_env, obs_to_tensor
from leap_convrnn.errors import UserError


@pytest.mark.parametrize("backend", ["native", "gymnasium"])
@pytest.mark.parametrize("grayscale", [True, False])
def test_both_backends_give_the_same_layout(backend: str, grayscale: bool) -> None:
    config = EnvConfig(backend=backend, grayscale=grayscale, frames=3)
    env = make_env("Pong", 2, config)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.dtype == np.uint8
        expected = (2, 3, 84, 84) if grayscale else (2, 3, 84, 84, 3)
        assert obs.shape == expected
        assert tuple(obs_to_tensor(obs).shape[1:]) == config.observation_shape
        assert env.single_action_space.n == 6  # type: ignore[attr-defined]
    finally:
        env.close()


def test_obs_to_tensor_folds_rgb_frame_major() -> None:
    obs = np.zeros((1, 2, 84, 84, 3), dtype=np.uint8)
    obs[0, 1, :, :, 2] = 7  # frame 1, blue
    x = obs_to_tensor(obs)
    assert x.shape == (1, 6, 84, 84)
    assert int(x[0, 5].max()) == 7 and int(x[0, :5].max()) == 0


@pytest.mark.parametrize("backend", ["native", "gymnasium"])
def test_time_limit_is_truncation_then_next_step_autoresets(backend: str) -> None:
    """100 frames = 25 agent steps: `truncated`, never `terminated`; the next step returns
    the first observation of a new episode with reward 0 (Gymnasium NEXT_STEP)."""
    env = make_env("pong", 1, backend=backend, noop_max=0, max_episode_frames=100)
    try:
        env.reset(seed=0)
        noop = np.zeros(1, dtype=np.int64)
        steps = 0
        while steps < 40:
            _, reward, terminated, truncated, info = env.step(noop)
            steps += 1
            assert not terminated[0]
            if truncated[0]:
                break
        assert steps == 25
        _, reward, terminated, truncated, info = env.step(noop)
        assert reward[0] == 0 and not terminated[0] and not truncated[0]
        assert int(info["episode_frame_number"][0]) == 0
    finally:
        env.close()


def test_make_env_overrides_and_unknown_game() -> None:
    with pytest.raises(UserError, match="close matches: breakout"):
        make_env("breakot", 1)
    with pytest.raises(UserError, match="accepted: native, gymnasium"):
        EnvConfig(backend="envpool")
    with pytest.raises(UserError, match="fire_reset"):
        EnvConfig(backend="gymnasium", fire_reset=True)
    with pytest.raises(UserError, match="frames must be >= 1"):
        EnvConfig(frames=0)
