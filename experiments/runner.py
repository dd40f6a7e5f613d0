"""The runner: meta-training for any model, task family and method (and the pieces that
`experiments.evaluate` shares with it: building the task family, the model, the tracker).

config -> runner -> meta-learner.adapt(model, task) -> task.inner_loop(model, hook)
                 -> meta-learner.end_meta_batch() -> meta-optimizer.step()
                 -> tracker.log / checkpoint
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

import meta
import tasks
from experiments import distributed, resume
from experiments.checkpoint import (
    TrainStateStore,
    save_initialization,
)
from experiments.config import Config, MetaConfig, resolve_device, run_name
from experiments.families import load_task_family
from experiments.folders import check_folders, remove_stale_initialization
from experiments.resume import Resumed
from experiments.signals import GracefulStop, signal_exit_code
from experiments.stats import nanmean
from experiments.tracking import Tracker, git_state
from leap_convrnn.errors import AllTasksDropped, RunStopped, UserError, warn
from meta.base import MetaLearner
from tasks.base import InnerLoopConfig, InnerLoopResult, Task, TaskDistribution


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def data_root(cfg: Config) -> str:
    return str(Path(cfg.data.root).expanduser())


def task_distribution(cfg: Config, split: str) -> TaskDistribution:
    """The task family of `cfg` for `split` (a family registered above tasks/, as Atari,
    is imported first)."""
    load_task_family(cfg.task.name)
    return tasks.build(cfg.task.name, split, data_root(cfg), **cfg.task.options)


def architecture(cfg: Config, dist: TaskDistribution) -> dict[str, Any]:
    """What identifies a network's shape: stored in checkpoints and checked on load.

    The output size is left out for a family whose tasks bring their own heads
    (`heads_per_task`): its initialization transfers to tasks with other action sets.
    """
    shape: dict[str, Any] = {
        "model": cfg.model.name,
        "options": dict(sorted(cfg.model.options.items())),
        "input_shape": list(dist.input_shape),
    }
    if not dist.heads_per_task:
        shape["num_outputs"] = dist.num_outputs
    return shape


def build_learner(
    name: str, model: nn.Module, options: dict[str, Any], dist: TaskDistribution, seed: int
) -> MetaLearner:
    """Build a meta-learner for the task family: it learns the family's meta-learned
    parameters (`dist.meta_parameters`) and seeds its fresh draws with `seed`, unless
    `options` name either itself."""
    common = {"parameters": dist.meta_parameters(model), "seed": seed}
    return meta.build(name, model, **{**common, **options})


def meta_optimizer(params: list[nn.Parameter], cfg: MetaConfig) -> torch.optim.Optimizer | None:
    if not params:
        return None
    if cfg.meta_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.meta_lr)
    return torch.optim.SGD(params, lr=cfg.meta_lr)


def tracker_for(
    cfg: Config,
    job: str,
    dist: TaskDistribution,
    run_id: str | None = None,
    resume_step: int | None = None,
) -> Tracker:
    """The run's tracker: named after the run, grouped by experiment, job type
    `meta-train` or `evaluate`, tagged with method, model and task; its config is the
    resolved config plus the git commit (`git_commit`, `git_dirty`). `run_id` continues
    that W&B run and `resume_step` the local metrics (a resumed meta-training)."""
    name = run_name(cfg, job)
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(resolved, dict)
    return Tracker(
        cfg.tracker,
        run_dir=Path(cfg.out_dir) / name,
        name=name,
        group=cfg.experiment,
        job_type="meta-train" if job == "train" else "evaluate",
        tags=[cfg.meta.name, cfg.model.name, cfg.task.name],
        run_config={**{str(k): v for k, v in resolved.items()}, **git_state()},
        run_id=run_id,
        resume_step=resume_step,
    )


def task_metrics(
    results: list[InnerLoopResult], held_out: list[dict[str, float]]
) -> dict[str, float]:
    """Meta-batch means of the inner loops' figures, under `task/`, and of the metrics of
    inner loops that name a `log_prefix` (e.g. `atari/episode_return`), NaN-aware."""
    metrics = {
        "task/loss_first": float(np.mean([float(r.losses[0]) for r in results])),
        "task/loss_final": float(np.mean([float(r.losses[-1]) for r in results])),
        "task/auc": float(np.mean([r.auc for r in results])),
        **{f"task/test_{key}": nanmean([h[key] for h in held_out]) for key in held_out[0]},
    }
    prefixed: dict[str, list[float]] = {}
    for r in results:
        if r.log_prefix is not None:
            for key, value in r.metrics.items():
                if key != "dropped":
                    prefixed.setdefault(f"{r.log_prefix}/{key}", []).append(value)
    metrics.update({key: nanmean(values) for key, values in prefixed.items()})
    return metrics


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def build_model(cfg: Config, dist: TaskDistribution) -> nn.Module:
    """The task family's network for `cfg.model`, checked with one forward pass of a
    zero input of the family's shape (in eval mode, without gradients).

    A model that cannot be built for, or cannot run on, the family's inputs (a wrong
    image size or number of channels) is a UserError that names the model, its
    options, the task family and the input shape, with the error's last line.
    """
    shape = tuple(dist.input_shape)
    pairing = (
        f"model {cfg.model.name!r} (options {dict(cfg.model.options)}) and task "
        f"{cfg.task.name!r} (inputs of shape (C, H, W) = {shape})"
    )
    try:
        model = dist.make_model(cfg.model.name, cfg.model.options)
    except (ValueError, RuntimeError) as error:
        raise UserError(f"{pairing} do not fit: {_last_line(error)}") from None
    tensor = next(iter(model.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device, dtype=dtype))
    except (ValueError, RuntimeError) as error:
        raise UserError(f"{pairing} do not fit: {_last_line(error)}") from None
    except TypeError:
        pass  # a network whose forward takes more than images (an agent with a head per game)
    finally:
        model.train(was_training)
    return model


def task_failed(result: InnerLoopResult) -> bool:
    """True if a task's inner loop went wrong: its learner flagged it `dropped`, or a
    loss on its curve is NaN or infinite."""
    return bool(result.metrics.get("dropped")) or not bool(torch.isfinite(result.losses).all())


@dataclass
class MetaBatch:
    """What one meta-batch left behind, agreed over every rank."""

    #: Metrics of the meta-batch (task-weighted means over ranks), `meta/dropped_tasks` included.
    metrics: dict[str, float]
    #: Tasks whose contribution is in the meta-gradient (0: every task was dropped).
    tasks: int
    #: The first signal some rank received (None: no stop requested).
    signum: int | None


def run_meta_batch(
    learner: MetaLearner,
    model: nn.Module,
    batch: list[Task],
    inner: InnerLoopConfig,
    ranks: distributed.Ranks,
    step: int,
    stop: GracefulStop,
) -> MetaBatch:
    """Adapt to this rank's share of `batch`, leave the meta-gradient of the whole
    meta-batch in `.grad` of the learner's parameters, and gather the metrics.

    A task whose inner loop fails (`task_failed`) is dropped with a warning naming it;
    its held-out evaluation is skipped. A learner that finds every task of its share
    dropped raises `AllTasksDropped` from `end_meta_batch` and contributes nothing.
    A stop that `stop` received by the end of the meta-batch is agreed over ranks.
    """
    results: list[InnerLoopResult] = []
    held_out: list[dict[str, float]] = []
    dropped = 0
    for task in ranks.shard(batch):
        result = learner.adapt(model, task, inner)
        if task_failed(result):
            dropped += 1
            warn(
                f"meta-step {step}: task {task.name!r} dropped from the meta-batch "
                "(non-finite loss or gradient in its inner loop)"
            )
            continue
        results.append(result)
        held_out.append(task.evaluate(model))
    weight = len(results)
    try:
        metrics = learner.end_meta_batch()
    except AllTasksDropped:
        metrics, weight = {}, 0
    if results:
        metrics.update(task_metrics(results, held_out))
    parts = distributed.gather(ranks, (weight, dropped, metrics, stop.signum))
    total = sum(part[0] for part in parts)
    if ranks.active:
        metrics = distributed.merge_metrics([(part[0], part[2]) for part in parts])
        if total > 0:
            norm = distributed.reduce_meta_gradient(learner.parameters(), weight, total)
            if "meta/grad_norm" in metrics:
                metrics["meta/grad_norm"] = norm
    metrics["meta/dropped_tasks"] = float(sum(part[1] for part in parts))
    signals = [part[3] for part in parts if part[3] is not None]
    return MetaBatch(metrics=metrics, tasks=total, signum=signals[0] if signals else None)


def apply_meta_update(
    learner: MetaLearner, optimizer: torch.optim.Optimizer | None, cfg: MetaConfig, step: int
) -> bool:
    """Clip and apply the meta-gradient; skip it (with a warning) if it is not finite.

    Returns whether the initialization was updated.
    """
    if optimizer is None:
        return False
    grads = [p.grad for p in learner.parameters() if p.grad is not None]
    if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
        warn(f"meta-step {step}: the meta-gradient is not finite; meta-update skipped")
        optimizer.zero_grad(set_to_none=True)
        return False
    if cfg.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.clip_grad_norm)
    optimizer.step()
    return True


def resume_run(
    cfg: Config,
    ranks: distributed.Ranks,
    store: TrainStateStore,
    learner: MetaLearner,
    optimizer: torch.optim.Optimizer | None,
    model: nn.Module,
    sampler: np.random.Generator,
) -> Resumed | None:
    """Find the checkpoint `cfg.resume` asks for on rank 0 and load it on every rank."""
    found: tuple[Path, dict[str, Any]] | None = None
    problem: str | None = None
    if ranks.is_main:
        try:
            found = resume.find(cfg, store, warn)
        except UserError as error:
            problem = str(error)
    found, problem = distributed.broadcast(ranks, (found, problem))
    if problem is not None:
        raise UserError(problem)
    if found is None:
        return None
    return resume.restore(*found, learner, optimizer, model, sampler)


def train(cfg: Config) -> dict[str, Any]:
    """Meta-train `cfg.meta.name` and save the learned initialization as `init.pt`.

    Every `cfg.checkpoint_every` meta-steps (and at the last one) the whole state of
    the run is checkpointed in `<run>/checkpoints/`; `cfg.resume` continues from there.
    Under a distributed launcher each rank adapts to its share of every meta-batch.
    Stops early with `RunStopped` (after a checkpoint) on SIGINT / SIGTERM, or when
    every task of a meta-batch was dropped.
    """
    if cfg.distributed > 1 and not distributed.under_launcher():
        raise UserError(
            f"distributed={cfg.distributed} needs {cfg.distributed} processes: start them with "
            f"`leap train distributed={cfg.distributed} ...` or torchrun"
        )
    check_folders(cfg)
    ranks = distributed.setup(cfg.meta.meta_batch_size)
    try:
        return _meta_train(cfg, ranks)
    finally:
        distributed.teardown(ranks)


def _meta_train(cfg: Config, ranks: distributed.Ranks) -> dict[str, Any]:
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    dist = task_distribution(cfg, "train")
    model = build_model(cfg, dist).to(device)
    learner = build_learner(cfg.meta.name, model, cfg.meta.options, dist, cfg.seed)
    optimizer = meta_optimizer(learner.parameters(), cfg.meta)
    inner = cfg.meta.inner()
    sampler = np.random.default_rng(cfg.seed)
    run_dir = Path(cfg.out_dir) / run_name(cfg, "train")
    store = TrainStateStore(run_dir / "checkpoints", cfg.keep_checkpoints)
    resumed = resume_run(cfg, ranks, store, learner, optimizer, model, sampler)
    if resumed is None and ranks.is_main and remove_stale_initialization(run_dir):
        warn(
            f"removed the init.pt an earlier run left in {str(run_dir)!r} (this run starts afresh)"
        )
    tracker: Tracker | distributed.NullTracker = (
        tracker_for(
            cfg,
            "train",
            dist,
            run_id=resumed.run_id if resumed else None,
            resume_step=resumed.step if resumed else None,
        )
        if ranks.is_main
        else distributed.NullTracker(run_dir)
    )
    total_steps = cfg.meta.meta_steps
    first = resumed.step if resumed else 0
    summary: dict[str, Any] = dict(resumed.summary) if resumed else {}
    spent = resumed.elapsed if resumed else 0.0
    started = time.perf_counter()

    def checkpoint(done: int) -> Path:
        if not ranks.is_main:
            return store.path(done)
        run_id = tracker.run_id or (resumed.run_id if resumed else None)
        elapsed = spent + time.perf_counter() - started
        state = resume.capture(cfg, learner, optimizer, model, sampler, run_id, summary, elapsed)
        return store.save(done, state)

    exit_code = 1
    try:
        with (
            GracefulStop(announce=ranks.is_main) as stop,
            tqdm(
                range(first, total_steps),
                initial=first,
                total=total_steps,
                desc="meta-train",
                disable=not (cfg.progress and ranks.is_main),
                dynamic_ncols=True,
                leave=True,
            ) as bar,
        ):
            for step in bar:
                tick, cpu_tick = time.perf_counter(), time.process_time()
                batch = [t.to(device) for t in dist.sample(cfg.meta.meta_batch_size, sampler)]
                if optimizer is not None:
                    optimizer.zero_grad(set_to_none=True)
                outcome = run_meta_batch(learner, model, batch, inner, ranks, step, stop)
                done = step + 1
                if outcome.tasks == 0:
                    path = checkpoint(done)
                    raise RunStopped(
                        f"every task of meta-step {step} was dropped (non-finite loss or "
                        f"gradient); stopped after checkpointing to {path}. Lower meta.inner_lr "
                        "or check the data, then continue with resume=true",
                        exit_code=1,
                    )
                apply_meta_update(learner, optimizer, cfg.meta, step)
                seconds = time.perf_counter() - tick
                metrics = outcome.metrics
                metrics["perf/seconds_per_meta_step"] = seconds
                metrics["perf/cpu_seconds_per_meta_step"] = time.process_time() - cpu_tick
                metrics["perf/tasks_per_s"] = len(batch) / seconds
                if step % cfg.log_every == 0 or done == total_steps:
                    tracker.log(metrics, step)
                objective = metrics.get("meta/objective", metrics.get("task/auc", math.nan))
                bar.set_postfix(
                    objective=f"{objective:.4g}", tasks_per_s=f"{len(batch) / seconds:.2f}"
                )
                summary = metrics
                if outcome.signum is not None:
                    path = checkpoint(done)
                    name = signal.Signals(outcome.signum).name
                    raise RunStopped(
                        f"{name}: stopped after meta-step {step} ({done} of {total_steps} done); "
                        f"checkpoint saved to {path}; continue with resume=true",
                        exit_code=signal_exit_code(outcome.signum),
                    )
                if done % cfg.checkpoint_every == 0 or done == total_steps:
                    checkpoint(done)
        learner.initialize(model)
        path = run_dir / "init.pt"
        if ranks.is_main:
            save_initialization(
                path,
                model,
                architecture(cfg, dist),
                {
                    "meta": cfg.meta.name,
                    "meta_steps": total_steps,
                    "seed": cfg.seed,
                    "experiment": cfg.experiment,
                },
            )
            tracker.artifact(
                path,
                name=f"init-{run_name(cfg, 'train')}",
                kind="initialization",
                metadata=architecture(cfg, dist),
            )
        summary = {
            **summary,
            "perf/total_seconds": spent + time.perf_counter() - started,
            "checkpoint": str(path),
        }
        tracker.summary(summary)
        exit_code = 0
        return summary
    except RunStopped as stopped:
        exit_code = stopped.exit_code
        raise
    finally:
        tracker.finish(exit_code)
