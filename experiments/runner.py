"""The runner: meta-training and transfer evaluation, for any model, task family and method.

    config -> runner -> meta-learner.adapt(model, task) -> task.inner_loop(model, hook)
                     -> meta-learner.end_meta_batch() -> meta-optimizer.step()
                     -> tracker.log / checkpoint
"""

from __future__ import annotations

import inspect
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

import meta
import tasks
from experiments.checkpoint import (
    load_initialization,
    read_initialization,
    save_initialization,
)
from experiments.config import Config, MetaConfig, run_name
from experiments.stats import mean_ci
from experiments.tracking import Tracker
from meta.base import MetaLearner
from models import reinitialize
from tasks.base import InnerLoopResult, TaskDistribution


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def data_root(cfg: Config) -> str:
    return str(Path(cfg.data.root).expanduser())


def task_distribution(cfg: Config, split: str) -> TaskDistribution:
    return tasks.build(cfg.task.name, split, data_root(cfg), **cfg.task.options)


def architecture(cfg: Config, dist: TaskDistribution) -> dict[str, Any]:
    """What identifies a network's shape: stored in checkpoints and checked on load."""
    return {
        "model": cfg.model.name,
        "options": dict(sorted(cfg.model.options.items())),
        "input_shape": list(dist.input_shape),
        "num_outputs": dist.num_outputs,
    }


def build_learner(
    name: str, model: nn.Module, options: dict[str, Any], dist: TaskDistribution, seed: int
) -> MetaLearner:
    """Build a meta-learner, passing the task family's parameter subset and the seed if used."""
    accepted = inspect.signature(meta.META_LEARNERS.get(name).__init__).parameters
    options = dict(options)
    if "parameters" in accepted and "parameters" not in options:
        options["parameters"] = dist.meta_parameters(model)
    if "seed" in accepted and "seed" not in options:
        options["seed"] = seed
    learner: MetaLearner = meta.build(name, model, **options)
    return learner


def meta_optimizer(params: list[nn.Parameter], cfg: MetaConfig) -> torch.optim.Optimizer | None:
    if not params:
        return None
    if cfg.meta_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.meta_lr)
    return torch.optim.SGD(params, lr=cfg.meta_lr)


def tracker_for(cfg: Config, job: str, dist: TaskDistribution) -> Tracker:
    name = run_name(cfg, job)
    return Tracker(
        cfg.tracker,
        run_dir=Path(cfg.out_dir) / name,
        name=name,
        group=cfg.experiment,
        job_type="meta-train" if job == "train" else "evaluate",
        tags=[cfg.meta.name, cfg.model.name, cfg.task.name],
        run_config=OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),  # type: ignore[arg-type]
    )


def task_metrics(results: list[InnerLoopResult], held_out: list[dict[str, float]]) -> dict[str, float]:
    """Meta-batch means of the inner loops' figures, under `task/`."""
    return {
        "task/loss_first": float(np.mean([float(r.losses[0]) for r in results])),
        "task/loss_final": float(np.mean([float(r.losses[-1]) for r in results])),
        "task/auc": float(np.mean([r.auc for r in results])),
        "task/test_accuracy": float(np.mean([h["accuracy"] for h in held_out])),
        "task/test_loss": float(np.mean([h["loss"] for h in held_out])),
    }


def train(cfg: Config) -> dict[str, Any]:
    """Meta-train `cfg.meta.name` and save the learned initialization as `init.pt`."""
    seed_everything(cfg.seed)
    dist = task_distribution(cfg, "train")
    model = dist.make_model(cfg.model.name, cfg.model.options)
    learner = build_learner(cfg.meta.name, model, cfg.meta.options, dist, cfg.seed)
    optimizer = meta_optimizer(learner.parameters(), cfg.meta)
    inner = cfg.meta.inner()
    tracker = tracker_for(cfg, "train", dist)
    rng = np.random.default_rng(cfg.seed)
    exit_code = 1
    summary: dict[str, Any] = {}
    try:
        bar = tqdm(range(cfg.meta.meta_steps), desc="meta-train", disable=not cfg.progress,
                   dynamic_ncols=True, leave=True)
        started = time.perf_counter()
        for step in bar:
            tick = time.perf_counter()
            batch = dist.sample(cfg.meta.meta_batch_size, rng)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            results, held_out = [], []
            for task in batch:
                results.append(learner.adapt(model, task, inner))
                held_out.append(task.evaluate(model))
            metrics = learner.end_meta_batch()
            if optimizer is not None:
                if cfg.meta.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.meta.clip_grad_norm)
                optimizer.step()
            seconds = time.perf_counter() - tick
            metrics.update(task_metrics(results, held_out))
            metrics["perf/seconds_per_meta_step"] = seconds
            metrics["perf/tasks_per_s"] = len(batch) / seconds
            if step % cfg.log_every == 0 or step == cfg.meta.meta_steps - 1:
                tracker.log(metrics, step)
            objective = metrics.get("meta/objective", metrics["task/auc"])
            bar.set_postfix(objective=f"{objective:.4g}", tasks_per_s=f"{len(batch) / seconds:.2f}")
            summary = metrics
        learner.initialize(model)
        path = tracker.run_dir / "init.pt"
        save_initialization(path, model, architecture(cfg, dist),
                            {"meta": cfg.meta.name, "meta_steps": cfg.meta.meta_steps,
                             "seed": cfg.seed, "experiment": cfg.experiment})
        tracker.artifact(path, name=f"init-{run_name(cfg, 'train')}", kind="initialization",
                         metadata=architecture(cfg, dist))
        summary = {**summary, "perf/total_seconds": time.perf_counter() - started,
                   "checkpoint": str(path)}
        tracker.summary(summary)
        exit_code = 0
        return summary
    finally:
        tracker.finish(exit_code)


@dataclass
class MethodResult:
    """Per-task results of one method on the evaluation tasks."""

    method: str
    auc: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    curves: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in ("auc", "accuracy", "loss"):
            mean, half = mean_ci(getattr(self, key))
            out[f"eval/{self.method}/{key}"] = mean
            out[f"eval/{self.method}/{key}_ci95"] = half
        return out


def default_init_path(cfg: Config) -> Path:
    return Path(cfg.out_dir) / run_name(cfg, "train") / "init.pt"


def evaluate(cfg: Config) -> list[MethodResult]:
    """Transfer evaluation (Leap paper protocol): from each initialization, train on
    every held-out task for K steps; report the area under the training-loss curve and
    final held-out accuracy and loss, over tasks x seeds, beside the baselines."""
    seed_everything(cfg.seed)
    init_path = Path(cfg.eval.init).expanduser() if cfg.eval.init else default_init_path(cfg)
    read_initialization(init_path)  # fail fast, before any data is loaded
    dist = task_distribution(cfg, cfg.eval.split)
    model = dist.make_model(cfg.model.name, cfg.model.options)
    load_initialization(init_path, model, architecture(cfg, dist))
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    inner = cfg.meta.inner()
    if cfg.eval.steps is not None:
        inner = replace(inner, steps=cfg.eval.steps)
    methods = [cfg.meta.name, *[b for b in cfg.eval.baselines if b != cfg.meta.name]]
    results = {m: MethodResult(m) for m in methods}
    tracker = tracker_for(cfg, "eval", dist)
    exit_code = 1
    try:
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
                    r = results[method]
                    r.auc.append(run.auc)
                    r.accuracy.append(held["accuracy"])
                    r.loss.append(held["loss"])
                    r.curves.append(run.losses.tolist())
                    rows.append([method, seed, index, task.name, run.auc, held["accuracy"], held["loss"]])
                    bar.update()
        bar.close()
        for k in range(inner.steps + 1):
            tracker.log({f"eval/{m}/train_loss": float(np.mean([c[k] for c in results[m].curves]))
                         for m in methods}, step=k)
        tracker.table("eval/tasks", ["method", "seed", "task_index", "task", "auc",
                                     "accuracy", "loss"], rows)
        summary: dict[str, Any] = {"eval/init": str(init_path), "eval/steps": inner.steps}
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

