"""Does the A2C learner learn? Learning curves on Breakout and Pong against a published one.

    python -m benchmarks.atari_learning                        # both modes, 3 seeds
    python -m benchmarks.atari_learning --mode reference --frames 6000000   # 1.5M agent steps
    python -m benchmarks.atari_learning --mode leap --seeds 3

Two modes, each training agents from scratch with `envs.a2c.train` on every game of
`--games` (default: breakout and pong) for `--seeds` seeds:

- `reference`: the usual A2C settings of OpenAI Baselines' `a2c` (Wu et al. 2017; the
  settings of its Atari benchmark): the Nature CNN, 16 environments, unroll 5, RMSprop
  lr 7e-4, alpha 0.99, eps 1e-5, rewards clipped to [-1, 1], entropy 0.01, value 0.5,
  gradient norm 0.5, FIRE pressed after a reset. Differences, all of them known: the
  learning rate is constant (Baselines decays it linearly to 0 over 10M steps, so at 2M
  steps it is 0.8x), and a lost life does not end the learning episode (Baselines'
  EpisodicLifeEnv does; ale-py's `episodic_life` restarts the whole game instead, which
  changes the returns). The curve (raw game score: the mean of the last 100 finished
  episodes, as Baselines logs it, against emulator frames; mean over seeds) is shown beside
  the published Baselines A2C curve at the same frames, with its shaded band, and the JSON
  says whether the return at the budget lies within that band, and whether the agents
  learned (the check below).
- `leap`: the Leap paper's learner (RMSprop lr 1e-4, eps 1e-4, 32 environments, rewards
  clipped to +-5) for the `atari_leap` experiment's inner-loop budget (its
  `meta.inner_steps` A2C updates); `--experiment atari_small` checks that experiment's
  inner loop (its learner and budget) instead. Did the inner loop learn? Each seed's
  untrained agent (same draw as the one that trains) first plays `--random-episodes`
  episodes with its own stochastic policy; the trained return (the last 100 episodes of
  each seed's training run) is compared with those: "learned" when the difference of
  the means is more than two standard errors (Welch) above zero. A uniformly random
  policy's return is reported beside it, but is not the yardstick: an untrained
  network's policy is not uniform (on qbert the untrained agents scored 118, the uniform
  policy 177), and a run can improve on its start while staying below uniform.

The published reference (`BASELINES_A2C`): OpenAI Baselines, "Atari10M Comparison"
(`benchmarks_atari10M.htm` in github.com/openai/baselines), the `a2c` learning curve of
each game ("X-axis: timesteps, Y-axis: reward (avg. over 6 runs)"). A timestep is one agent
step = 4 emulator frames. The values here are read off that page's vector graphics (the
curve and its shaded band, linearly interpolated between the listed points); the page's
table of final scores comes from a separate run and is not used.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import envs
import models
from envs import a2c
from envs.make_env import make_env
from tasks.base import InnerLoopConfig

FRAMES_PER_STEP = 4
WINDOW = 100
"""Episodes averaged per curve point (Baselines logs the mean of the last 100)."""

BASELINES_SOURCE = (
    "OpenAI Baselines, Atari10M Comparison (benchmarks_atari10M.htm, "
    "github.com/openai/baselines): a2c learning curves, mean of 6 runs and shaded band, "
    "read from the page's SVG; x = agent steps (4 frames each)"
)

# game -> [(agent steps, curve mean, band low, band high)], read from the page's SVG.
BASELINES_A2C: dict[str, list[tuple[float, float, float, float]]] = {
    "breakout": [
        (0.10e6, 1.5, 1.5, 1.5),
        (0.20e6, 1.7, 1.6, 1.7),
        (0.25e6, 1.8, 1.8, 1.9),
        (0.50e6, 2.1, 2.1, 2.1),
        (0.75e6, 2.3, 2.3, 2.4),
        (1.00e6, 2.9, 2.8, 3.0),
        (1.25e6, 4.5, 4.2, 4.8),
        (1.50e6, 7.9, 7.5, 8.3),
        (1.75e6, 12.3, 11.9, 12.7),
        (2.00e6, 18.4, 17.9, 19.0),
        (2.25e6, 25.7, 24.9, 26.6),
        (2.50e6, 33.5, 32.3, 34.7),
        (2.75e6, 42.1, 41.4, 42.8),
        (3.00e6, 49.3, 48.3, 50.3),
        (4.00e6, 79.7, 77.3, 82.0),
        (5.00e6, 112.1, 109.5, 114.6),
    ],
    "pong": [
        (0.10e6, -20.4, -20.4, -20.3),
        (0.20e6, -20.4, -20.4, -20.3),
        (0.25e6, -20.3, -20.4, -20.3),
        (0.50e6, -20.2, -20.3, -20.2),
        (0.75e6, -20.2, -20.2, -20.2),
        (1.00e6, -20.1, -20.1, -20.1),
        (1.25e6, -19.8, -19.8, -19.7),
        (1.50e6, -19.0, -19.1, -18.9),
        (1.75e6, -17.8, -18.0, -17.7),
        (2.00e6, -16.5, -16.9, -16.0),
        (2.25e6, -14.6, -15.2, -14.0),
        (2.50e6, -12.4, -13.2, -11.6),
        (2.75e6, -8.0, -9.5, -6.4),
        (3.00e6, -1.9, -4.3, 0.5),
        (4.00e6, 10.3, 7.6, 12.9),
        (5.00e6, 14.2, 12.2, 16.1),
    ],
}


@dataclass(frozen=True)
class Settings:
    """One learner configuration: `a2c` holds `A2CConfig` and `EnvConfig` options."""

    model: str
    lr: float
    updates: int
    a2c: dict[str, Any]


def reference_settings(frames: int, model: str) -> Settings:
    """Baselines' A2C settings (see the module docstring) for `frames` emulator frames."""
    num_envs, unroll = 16, 5
    options: dict[str, Any] = {
        "num_envs": num_envs,
        "unroll": unroll,
        "rmsprop_eps": 1e-5,
        "reward_clip": 1.0,
        "fire_reset": True,
    }
    updates = max(1, frames // (FRAMES_PER_STEP * num_envs * unroll))
    return Settings(model, 7e-4, updates, options)


def leap_settings(
    model: str, updates: int | None, lr: float | None, experiment: str = "atari_leap"
) -> Settings:
    """An Atari experiment's inner loop (`atari_leap`: the Leap paper's learner): its task
    options, inner learning rate (or `lr`) and `meta.inner_steps` (or `updates`)."""
    from experiments.config import compose

    cfg = compose([f"experiment={experiment}", "tracker=none"])
    options = {k: v for k, v in cfg.task.options.items() if k != "game_pool"}
    return Settings(model, lr or cfg.meta.inner_lr, updates or cfg.meta.inner_steps, options)


def published(game: str, steps: float) -> dict[str, Any] | None:
    """The Baselines A2C curve at `steps` agent steps (interpolated), or None outside it."""
    table = BASELINES_A2C.get(game)
    if table is None or not table[0][0] <= steps <= table[-1][0]:
        return None
    xs = [row[0] for row in table]
    mean, low, high = (float(np.interp(steps, xs, [row[i] for row in table])) for i in (1, 2, 3))
    return {"value": mean, "range": [low, high], "steps": steps, "source": BASELINES_SOURCE}


def curve(episodes: list[a2c.Episode], points: list[int]) -> list[float]:
    """Mean return of the last `WINDOW` episodes finished by each agent-step count."""
    ends = [e.env_steps for e in episodes]
    out = []
    for step in points:
        finished = int(np.searchsorted(ends, step, side="right"))
        recent = [e.episode_return for e in episodes[max(0, finished - WINDOW) : finished]]
        out.append(float(np.mean(recent)) if recent else math.nan)
    return out


def train_one(game: str, settings: Settings, seed: int) -> tuple[list[a2c.Episode], float, bool]:
    """A fresh agent trained on `game`: its episodes, env steps/s and whether it diverged."""
    dist = envs.build([game], "train", **settings.a2c)
    agent = dist.make_model(settings.model, {})
    assert isinstance(agent, a2c.ActorCritic)
    models.reinitialize(agent, seed)
    env = make_env(game, dist.settings.a2c.num_envs, dist.settings.env)
    inner = InnerLoopConfig(steps=settings.updates, optimizer="rmsprop", lr=settings.lr)
    started = time.perf_counter()
    result = a2c.train(agent, game, env, inner, dist.settings.a2c, seed)
    rate = result.metrics["env_steps"] / (time.perf_counter() - started)
    env.close()
    return result.episodes, rate, bool(result.metrics["diverged"])


def random_returns(game: str, settings: Settings, episodes: int, seed: int) -> list[float]:
    """Returns of `episodes` games played with uniformly random actions (same preprocessing)."""
    config = envs.build([game], "train", **settings.a2c).settings.env
    env = make_env(game, episodes, config)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    n_actions = int(env.single_action_space.n)  # type: ignore[attr-defined]
    running = np.zeros(episodes)
    first: dict[int, float] = {}
    while len(first) < episodes:
        _, reward, terminated, truncated, _ = env.step(rng.integers(0, n_actions, episodes))
        running += reward
        for i in np.flatnonzero(np.asarray(terminated) | np.asarray(truncated)):
            first.setdefault(int(i), float(running[i]))
            running[i] = 0.0
    env.close()
    return [first[i] for i in sorted(first)]


def initial_policy_returns(game: str, settings: Settings, episodes: int, seed: int) -> list[float]:
    """Returns of `episodes` games played by the untrained agent that `train_one(game,
    settings, seed)` starts from, sampling actions from its policy."""
    dist = envs.build([game], "train", **settings.a2c)
    agent = dist.make_model(settings.model, {})
    assert isinstance(agent, a2c.ActorCritic)
    models.reinitialize(agent, seed)
    env = make_env(game, episodes, dist.settings.env)
    agent.head(game, int(env.single_action_space.n))  # type: ignore[attr-defined]
    learner = a2c.A2C(agent, game, env, dist.settings.a2c, seed)
    first: dict[int, float] = {}
    with torch.no_grad():
        while len(first) < episodes:
            learner.step(learner.act()[0])
            for episode in learner.episodes:
                first.setdefault(episode.env_index, episode.episode_return)
            learner.episodes.clear()
    env.close()
    return [first[i] for i in sorted(first)]


def welch_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of the means of `a` and `b` and its standard error (Welch)."""
    (a_mean, a_se), (b_mean, b_se) = mean_se(a), mean_se(b)
    return a_mean - b_mean, math.hypot(a_se, b_se)


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (NaN without values, 0 for a single one)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), se


def run_game(game: str, settings: Settings, seeds: int, points: int) -> dict[str, Any]:
    """Train `seeds` agents on `game`; the mean curve over seeds and the return at budget."""
    steps_per_update = settings.a2c["num_envs"] * settings.a2c["unroll"]
    total = settings.updates * steps_per_update
    marks = [round(total * (k + 1) / points) for k in range(points)]
    curves, finals, last_episodes, rates, diverged = [], [], [], [], 0
    for seed in range(seeds):
        episodes, rate, bad = train_one(game, settings, seed)
        c = curve(episodes, marks)
        curves.append(c)
        finals.append(c[-1])
        last_episodes += [e.episode_return for e in episodes if e.env_steps <= total][-WINDOW:]
        rates.append(rate)
        diverged += bad
        print(
            f"{game} seed {seed}: {len(episodes)} episodes, return at budget {c[-1]:.2f}, "
            f"first point {c[0]:.2f}, {rate:.0f} env steps/s",
            flush=True,
        )
    mean_curve = [finite_mean(list(p)) for p in zip(*curves, strict=True)]
    return {
        "frames": total * FRAMES_PER_STEP,
        "env_steps": total,
        "return_at_budget": finite_mean(finals),
        "return_at_budget_per_seed": finals,
        "last_episodes": last_episodes,
        "curve": [[m * FRAMES_PER_STEP, v] for m, v in zip(marks, mean_curve, strict=True)],
        "env_steps_per_s": float(np.mean(rates)),
        "diverged_seeds": diverged,
    }


def reference_mode(args: argparse.Namespace) -> dict[str, Any]:
    settings = reference_settings(args.frames, args.model)
    out: dict[str, Any] = {"settings": {"model": settings.model, "lr": settings.lr, **settings.a2c}}
    for game in args.games:
        result = run_game(game, settings, args.seeds, args.points)
        result.update(learning_check(game, settings, args, result.pop("last_episodes")))
        ref = published(game, result["env_steps"])
        result["published"] = ref
        result["published_curve"] = [
            [steps * FRAMES_PER_STEP, mean]
            for steps, mean, _, _ in BASELINES_A2C.get(game, [])
            if steps <= result["env_steps"]
        ]
        value = result["return_at_budget"]
        result["within_range"] = (
            None if ref is None else bool(ref["range"][0] <= value <= ref["range"][1])
        )
        result["at_least_published"] = None if ref is None else bool(value >= ref["range"][0])
        print(
            f"{game}: A2C return at {result['frames']:,} frames {value:.2f}; published "
            + ("(none at this budget)" if ref is None else f"{ref['value']:.1f} {ref['range']}"),
            flush=True,
        )
        out[game] = result
    return out


def learning_check(
    game: str, settings: Settings, args: argparse.Namespace, trained: list[float]
) -> dict[str, Any]:
    """Did training learn? The trained return (`trained`: the last episodes of every
    seed's run) against each seed's untrained agent and a uniformly random policy (see
    the module docstring); prints one line."""
    initial = [
        r
        for seed in range(args.seeds)
        for r in initial_policy_returns(game, settings, args.random_episodes, seed)
    ]
    randoms = random_returns(game, settings, args.random_episodes, seed=12345)
    (t_mean, t_se), (i_mean, i_se), (r_mean, r_se) = map(mean_se, (trained, initial, randoms))
    diff, se = welch_difference(trained, initial)
    random_diff, random_se = welch_difference(trained, randoms)
    out = {
        "initial_policy_return": i_mean,
        "initial_policy_return_se": i_se,
        "initial_policy_episodes": len(initial),
        "trained_return": t_mean,
        "trained_return_se": t_se,
        "trained_minus_initial": diff,
        "trained_minus_initial_se": se,
        "learned": bool(diff > 2 * se),  # False when nothing finished
        "random_return": r_mean,
        "random_return_se": r_se,
        "random_episodes": len(randoms),
        "trained_minus_random": random_diff,
        "trained_minus_random_se": random_se,
    }
    print(
        f"{game}: last episodes {out['trained_return']:.2f} +- {out['trained_return_se']:.2f}"
        f"; untrained agents {out['initial_policy_return']:.2f} +- "
        f"{out['initial_policy_return_se']:.2f}; uniform random {out['random_return']:.2f}"
        f"; learned: {out['learned']}",
        flush=True,
    )
    return out


def leap_mode(args: argparse.Namespace) -> dict[str, Any]:
    settings = leap_settings(args.model, args.leap_updates, args.leap_lr, args.experiment)
    out: dict[str, Any] = {
        "settings": {
            "experiment": args.experiment,
            "model": settings.model,
            "lr": settings.lr,
            "updates": settings.updates,
            **settings.a2c,
        }
    }
    for game in args.games:
        result = run_game(game, settings, args.seeds, args.points)
        result.update(learning_check(game, settings, args, result.pop("last_episodes")))
        out[game] = result
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=("reference", "leap", "both"), default="both")
    parser.add_argument("--games", nargs="+", default=["breakout", "pong"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per game (default: 3)")
    parser.add_argument(
        "--frames",
        type=int,
        default=480_000,
        help=(
            "reference mode: emulator frames per run (default: 480k = 120k agent steps, "
            "about 15 min per game for 3 seeds on one thread of a 2-core machine)"
        ),
    )
    parser.add_argument("--model", default="nature_cnn", help="encoder (default: nature_cnn)")
    parser.add_argument(
        "--leap-updates",
        type=int,
        default=None,
        help="leap mode: A2C updates per run (default: atari_leap's meta.inner_steps)",
    )
    parser.add_argument(
        "--leap-lr", type=float, default=None, help="leap mode: RMSprop lr (default: 1e-4)"
    )
    parser.add_argument(
        "--experiment",
        default="atari_leap",
        help="leap mode: the Atari experiment whose inner loop is checked (default: atari_leap)",
    )
    parser.add_argument(
        "--random-episodes",
        type=int,
        default=32,
        help="leap mode: episodes of each untrained agent and of the uniform policy",
    )
    parser.add_argument("--points", type=int, default=20, help="points per learning curve")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; 1 on a machine shared with other jobs)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.games = [envs.resolve_game(g) for g in args.games]
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "atari_learning",
        "seeds": args.seeds,
        "torch_threads": torch.get_num_threads(),
    }
    if args.mode in ("reference", "both"):
        report["reference"] = reference_mode(args)
    if args.mode in ("leap", "both"):
        report["leap"] = leap_mode(args)
    report["seconds"] = time.perf_counter() - started
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
