"""Atari throughput: raw vector-env steps/s against A2C training steps/s, in one run.

    python -m benchmarks.atari_throughput [--game pong] [--rounds 6] [--seconds 2]
    python -m benchmarks.atari_throughput --figures mnih2013 mnih2013_bf16
    python -m benchmarks.atari_throughput --device cuda      # network on the GPU

Measured in one process, interleaved round by round so that drift in the machine's load
hits every figure alike (each figure is its best round; DESIGN.md section 5):

- `raw`: ale_py's native `AtariVectorEnv` (through `envs.make_env`, 32 games) stepped with
  uniformly random actions: environment steps per second (one step = 4 emulator frames);
- `train`: A2C training on the same vector env (`envs.a2c.train`: acting, loss, backward,
  gradient clipping, RMSprop; the Leap paper's 32 games x unroll 5) with the Nature CNN,
  the Nature CNN under bfloat16 autocast (`precision="bf16"`), the smaller Mnih et al.
  2013 CNN (`mnih2013`) in fp32 and under bf16 autocast, and `convrnn_atari`
  (reported as absent when that model is not registered): environment steps per second;
  `--figures` picks a subset;
- `gymnasium`: Gymnasium's wrapper path with random actions, once, for reference.

`--device cuda` puts the network (acting, loss, backward, RMSprop) on the GPU while the
games stay on the CPU threads of the native vector env; observations are copied to the
device every step, actions back.

Besides wall-clock rates it records process CPU time per environment step (all threads):
on a machine shared with other jobs, `cpu_bound_train_to_env_ratio` (raw CPU cost over
training CPU cost) is what the wall-clock ratio tends to when both saturate the cores.

The last line is one JSON object; `train_to_env_ratio` is the fp32 Nature CNN's training
throughput over the raw throughput. The target of 0.5 holds for a GPU only: on 2 CPU cores
the network's CPU cost per environment step is about four times the emulator's, which
bounds the CPU ratio near 0.25 (`cpu_bound_train_to_env_ratio`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from dataclasses import replace
from typing import Any

import gymnasium
import numpy as np
import torch

import envs
import models
from envs import a2c
from envs.make_env import make_env
from tasks.base import InnerLoopConfig

TARGET_RATIO = 0.5
TRAINED = (
    ("nature_cnn", "nature_cnn", "fp32"),
    ("nature_cnn_bf16", "nature_cnn", "bf16"),
    ("mnih2013", "mnih2013", "fp32"),
    ("mnih2013_bf16", "mnih2013", "bf16"),
    ("convrnn_atari", "convrnn_atari", "fp32"),
)
"""(figure, model, precision) of each training measurement."""


class Rate:
    """Wall-clock steps/s and CPU microseconds per step of one measurement."""

    def __init__(self, steps: int, wall: float, cpu: float) -> None:
        self.steps_per_s = steps / wall
        self.cpu_us_per_step = 1e6 * cpu / steps


def raw_rate(env: gymnasium.vector.VectorEnv, seconds: float) -> Rate:
    """Steps of `env` with uniformly random actions for about `seconds`."""
    rng = np.random.default_rng(0)
    n, n_actions = env.num_envs, int(env.single_action_space.n)  # type: ignore[attr-defined]
    env.reset()
    for _ in range(10):
        env.step(rng.integers(0, n_actions, n))
    steps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        env.step(rng.integers(0, n_actions, n))
        steps += n
    return Rate(steps, time.perf_counter() - wall0, time.process_time() - cpu0)


class _TimeUp(Exception):
    """Raised by `_Stopwatch` to end a training measurement."""


class _Stopwatch:
    """A trajectory hook that times whole A2C updates, from the first `on_step` on, and
    stops training (by raising `_TimeUp`) once `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.updates = -1  # the first on_step starts the clock
        self.wall0 = self.cpu0 = self.wall = self.cpu = 0.0

    def on_step(self, loss: torch.Tensor) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.updates < 0:
            self.wall0, self.cpu0 = now, cpu
        self.updates += 1
        self.wall, self.cpu = now - self.wall0, cpu - self.cpu0
        if self.wall >= self.seconds:
            raise _TimeUp

    def on_end(self, loss: torch.Tensor) -> None:
        pass


class Trainer:
    """An agent on the shared env; `rate(seconds)` times about that many seconds of A2C
    updates inside `envs.a2c.train` (the env reset that starts a call is not timed).

    Every measurement starts from freshly drawn parameters (`models.reinitialize`), so a
    model that diverges after many updates does not end the benchmark; a measurement cut
    short by divergence still counts the updates it made, and is flagged.
    """

    def __init__(self, model: str, precision: str, game: str, env: Any, device: str) -> None:
        dist = envs.build([game], "train", num_envs=env.num_envs, precision=precision)
        agent = dist.make_model(model, {})
        assert isinstance(agent, a2c.ActorCritic)
        self.agent = agent.to(device)
        self.device = device
        self.config = dist.settings.a2c
        self.game, self.env, self.seed = game, env, 0
        self.diverged = 0
        self.rate(1.0)  # warm-up: oneDNN primitives, allocator

    def rate(self, seconds: float) -> Rate | None:
        self.seed += 1
        models.reinitialize(self.agent, self.seed)
        inner = InnerLoopConfig(steps=10**9, optimizer="rmsprop", lr=1e-4)
        stopwatch = _Stopwatch(seconds)
        with contextlib.suppress(_TimeUp):
            result = a2c.train(
                self.agent,
                self.game,
                self.env,
                inner,
                self.config,
                self.seed,
                stopwatch,
                seed_env=False,
            )
            self.diverged += int(result.metrics["diverged"])
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        if stopwatch.updates < 1:
            return None
        steps = stopwatch.updates * self.config.num_envs * self.config.unroll
        return Rate(steps, stopwatch.wall, stopwatch.cpu)


def machine() -> dict[str, Any]:
    """The machine and library versions, for the JSON record."""
    import ale_py

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ale_py": ale_py.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--game", default="pong", help="ALE game (default: pong)")
    parser.add_argument("--num-envs", type=int, default=32, help="environments (default: 32)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default: 6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="raw seconds per round")
    parser.add_argument(
        "--figures",
        nargs="+",
        default=[key for key, _, _ in TRAINED],
        choices=[key for key, _, _ in TRAINED],
        help="training figures to measure (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="the network's device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    game = envs.resolve_game(args.game)
    env_config = envs.EnvConfig()

    env = make_env(game, args.num_envs, env_config)
    env.reset(seed=0)
    trainers: dict[str, Trainer | None] = {}
    for key, model, precision in TRAINED:
        if key not in args.figures:
            continue
        present = model in models.MODELS
        trainers[key] = Trainer(model, precision, game, env, args.device) if present else None
        if not present:
            print(f"{key}: absent ({model!r} is not registered)", flush=True)

    rounds: list[dict[str, Rate]] = []
    for r in range(args.rounds):
        figures = {"raw": raw_rate(env, args.seconds)}
        for key, trainer in trainers.items():
            rate = None if trainer is None else trainer.rate(2 * args.seconds)
            if rate is not None:
                figures[key] = rate
        rounds.append(figures)
        shown = ", ".join(f"{k} {v.steps_per_s:.0f}" for k, v in figures.items())
        print(f"round {r + 1}: env steps/s: {shown}", flush=True)
    env.close()

    gym_env = make_env(game, args.num_envs, replace(env_config, backend="gymnasium"))
    gym_env.reset(seed=0)
    gym = raw_rate(gym_env, args.seconds)
    gym_env.close()
    print(f"gymnasium wrappers, random actions: {gym.steps_per_s:.0f} env steps/s", flush=True)

    def best(key: str) -> Rate | None:
        rates = [f[key] for f in rounds if key in f]
        return max(rates, key=lambda x: x.steps_per_s) if rates else None

    raw = best("raw")
    assert raw is not None
    rates = {key: best(key) for key in trainers}
    steps = {k: None if v is None else v.steps_per_s for k, v in rates.items()}
    cpu = {k: None if v is None else v.cpu_us_per_step for k, v in rates.items()}

    def ratio(key: str) -> float | None:
        value = steps.get(key)
        return None if value is None else value / raw.steps_per_s

    cnn_ratio = ratio("nature_cnn")
    cnn_cpu = cpu.get("nature_cnn")
    report = {
        "benchmark": "atari_throughput",
        "raw_env_steps_per_s": raw.steps_per_s,
        "train_env_steps_per_s": steps,
        "train_to_env_ratio": cnn_ratio,
        "train_to_env_ratio_bf16": ratio("nature_cnn_bf16"),
        "convrnn_train_to_env_ratio": ratio("convrnn_atari"),
        "mnih2013_train_to_env_ratio": ratio("mnih2013"),
        "mnih2013_train_to_env_ratio_bf16": ratio("mnih2013_bf16"),
        "train_to_env_ratios": {key: ratio(key) for key in trainers},
        "device": args.device,
        "target_ratio": TARGET_RATIO,
        "meets_target": cnn_ratio is not None and cnn_ratio >= TARGET_RATIO,
        "convrnn_atari": "measured" if trainers.get("convrnn_atari") else "absent",
        "diverged_measurements": {k: t.diverged for k, t in trainers.items() if t is not None},
        "cpu_us_per_env_step": {"raw": raw.cpu_us_per_step, **cpu},
        "cpu_bound_train_to_env_ratio": None if cnn_cpu is None else raw.cpu_us_per_step / cnn_cpu,
        "cpu_bound_ratios": {
            k: None if v is None else raw.cpu_us_per_step / v for k, v in cpu.items()
        },
        "gymnasium_env_steps_per_s": gym.steps_per_s,
        "native_to_gymnasium_ratio": raw.steps_per_s / gym.steps_per_s,
        "rounds": [{k: v.steps_per_s for k, v in f.items()} for f in rounds],
        "config": {
            "game": game,
            "num_envs": args.num_envs,
            "unroll": a2c.A2CConfig().unroll,
            "frameskip": env_config.frameskip,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "figures": args.figures,
        },
        "machine": machine(),
    }
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
