"""Transfer evaluation (the Leap paper's protocol): from an initialization and from each
baseline, train on every held-out task for K steps and score it.

Reports the area under the training-loss curve and the task family's held-out metrics
(vision: accuracy and loss; Atari: episode return and normalized score), per task and
as mean and 95% CI over tasks and seeds, and logs the learning curves to the tracker.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from experiments.checkpoint import load_initialization, read_initialization
from experiments.config import Config, run_name
from experiments.runner import (
    architecture,
    build_model,
    seed_everything,
    task_distribution,
    tracker_for,
)
from experiments.stats import mean_ci, nanmean
from experiments.tracking import Tracker, resolve_initialization
from models import reinitialize
from tasks.base import InnerLoopResult


@dataclass
class MethodResult:
    """Per-task results of one method on the evaluation tasks.

    `held_out` maps each metric of `Task.evaluate` (vision: `accuracy`, `loss`; Atari:
    `episode_return`, `normalized_score`) to its value on every task; `curves` maps
    `train_loss` and each of the inner loop's own curves to one curve per task.
    """

    method: str
    auc: list[float] = field(default_factory=list)
    held_out: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, run: InnerLoopResult, held: dict[str, float]) -> None:
        """Record one task's inner loop and held-out metrics."""
        self.auc.append(run.auc)
        for key, value in held.items():
            self.held_out.setdefault(key, []).append(value)
        self.curves.setdefault("train_loss", []).append(run.losses.tolist())
        for key, curve in run.curves.items():
            self.curves.setdefault(f"train_{key}", []).append(list(curve))

    def summary(self) -> dict[str, float]:
        """`eval/<method>/<metric>` and its `_ci95` half-width, for the AUC and every
        held-out metric."""
        out: dict[str, float] = {}
        for key, values in {"auc": self.auc, **self.held_out}.items():
            mean, half = mean_ci(values)
            out[f"eval/{self.method}/{key}"] = mean
            out[f"eval/{self.method}/{key}_ci95"] = half
        return out

    def mean_curve(self, name: str) -> list[float]:
        """Per point, the mean over tasks of curve `name`, ignoring NaN points."""
        curves = self.curves.get(name, [])
        return [nanmean(list(points)) for points in zip(*curves, strict=True)]


def log_evaluation_curves(
    tracker: Tracker, results: list[MethodResult], rows: list[list[Any]]
) -> None:
    """Log the evaluation's learning curves: per inner step, each method's mean curve
    (`eval/<method>/train_loss`, `eval/<method>/train_episode_return`, ...; points where
    no task has a value are left out); every task's curves as W&B line series; and the
    per-task table `eval/tasks` (`rows`: method, seed, task index, task, AUC, then the
    held-out metrics)."""
    means = {f"eval/{r.method}/{name}": r.mean_curve(name) for r in results for name in r.curves}
    for k in range(max((len(curve) for curve in means.values()), default=0)):
        point = {key: curve[k] for key, curve in means.items() if not math.isnan(curve[k])}
        if point:
            tracker.log(point, step=k)
    held_keys = list(results[0].held_out) if results else []
    tracker.table("eval/tasks", ["method", "seed", "task_index", "task", "auc", *held_keys], rows)
    for r in results:
        keys = [f"seed{row[1]}/task{row[2]}" for row in rows if row[0] == r.method]
        for name, curves in r.curves.items():
            chart = "task_curves" if name == "train_loss" else f"task_{name}_curves"
            tracker.line_series(
                f"eval/{r.method}/{chart}",
                xs=list(range(len(curves[0]))),
                ys=curves,
                keys=keys,
                title=f"{r.method}: {name.replace('_', ' ')} on each held-out task",
                xname="inner step",
            )


def default_init_path(cfg: Config) -> Path:
    return Path(cfg.out_dir) / run_name(cfg, "train") / "init.pt"


def evaluate(cfg: Config) -> list[MethodResult]:
    """Transfer evaluation (Leap paper protocol): from each initialization, train on
    every held-out task for K steps; report the area under the training-loss curve and
    the task's held-out metrics after training (vision: accuracy and loss; Atari: episode
    return and normalized score), over tasks x seeds, beside the baselines."""
    seed_everything(cfg.seed)
    init_path, init_artifact = resolve_initialization(
        cfg.eval.init, default_init_path(cfg), cfg.tracker, Path(cfg.out_dir) / "artifacts"
    )
    read_initialization(init_path)  # fail fast, before any data is loaded
    dist = task_distribution(cfg, cfg.eval.split)
    model = build_model(cfg, dist)
    load_initialization(
        init_path,
        model,
        architecture(cfg, dist),
        dist.meta_parameters(model) if dist.heads_per_task else None,
    )
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    inner = cfg.meta.inner()
    if cfg.eval.steps is not None:
        inner = replace(inner, steps=cfg.eval.steps)
    methods = [cfg.meta.name, *[b for b in cfg.eval.baselines if b != cfg.meta.name]]
    results = {m: MethodResult(m) for m in methods}
    tracker = tracker_for(cfg, "eval", dist)
    if init_artifact is not None:
        tracker.use_artifact(init_artifact, "initialization")
    exit_code = 1
    try:
        started = time.perf_counter()
        rows: list[list[Any]] = []
        total = len(cfg.eval.seeds) * cfg.eval.tasks * len(methods)
        bar = tqdm(total=total, desc="evaluate", disable=not cfg.progress, dynamic_ncols=True)
        for seed in cfg.eval.seeds:
            held_out_tasks = dist.sample(cfg.eval.tasks, np.random.default_rng(10_000 + seed))
            for index, task in enumerate(held_out_tasks):
                for method in methods:
                    if method == cfg.meta.name:
                        model.load_state_dict(initial_state)
                    else:
                        reinitialize(model, seed * 100_003 + index)
                    run = task.inner_loop(model, inner)
                    held = task.evaluate(model)
                    results[method].add(run, held)
                    rows.append([method, seed, index, task.name, run.auc, *held.values()])
                    bar.update()
        bar.close()
        seconds = time.perf_counter() - started
        log_evaluation_curves(tracker, list(results.values()), rows)
        summary: dict[str, Any] = {
            "eval/init": str(init_path),
            "eval/steps": inner.steps,
            "perf/tasks_per_s": len(rows) / seconds,
        }
        for r in results.values():
            summary.update(r.summary())
        tracker.summary(summary)
        (tracker.run_dir / "curves.json").write_text(
            json.dumps({m: asdict(r) for m, r in results.items()})
        )
        exit_code = 0
        return list(results.values())
    finally:
        tracker.finish(exit_code)
