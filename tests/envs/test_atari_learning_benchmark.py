"""`python -m benchmarks.atari_learning`: its learning check, end to end on one game."""

from __future__ import annotations

import math

import pytest

from benchmarks import atari_learning


def test_welch_difference_by_hand():
    diff, se = atari_learning.welch_difference([1.0, 3.0], [0.0, 0.0, 3.0])
    assert diff == pytest.approx(2.0 - 1.0)
    # standard errors: sqrt(2/2) = 1 and sqrt(3/3) = 1
    assert se == pytest.approx(math.sqrt(2.0))


def test_untrained_agents_play_one_episode_per_environment():
    settings = atari_learning.leap_settings("nature_cnn", 1, None, "atari_small")
    returns = atari_learning.initial_policy_returns("breakout", settings, episodes=2, seed=0)
    assert len(returns) == 2 and all(r >= 0 for r in returns)


def test_leap_mode_reports_whether_the_inner_loop_learned(capsys):
    report = atari_learning.main(
        [
            "--mode",
            "leap",
            "--experiment",
            "atari_small",
            "--games",
            "breakout",
            "--seeds",
            "1",
            "--leap-updates",
            "2",
            "--random-episodes",
            "2",
            "--points",
            "2",
            "--threads",
            "1",
        ]
    )
    result = report["leap"]["breakout"]
    assert report["leap"]["settings"]["experiment"] == "atari_small"
    assert result["env_steps"] == 2 * 16 * 5
    assert result["initial_policy_episodes"] == 2 and result["random_episodes"] == 2
    # no training episode finishes in 160 env steps: nothing to compare, so not "learned"
    assert math.isnan(result["trained_return"]) and result["learned"] is False
    assert "learned: False" in capsys.readouterr().out
