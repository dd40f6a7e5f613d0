"""Transfer evaluation (the Leap paper's protocol): from each initialization under test and
from each baseline, train on every held-out task for K steps and score it.

Every initialization (each method's training runs, one replicate per training seed, and
any extra ones named in `eval.inits`) and every baseline (Scratch: seeded random draws)
trains on the same held-out tasks, with the same minibatches (a task draws its
minibatches from its own seed), so that figures can be compared task by task.

Reports, per method: the area under the training-loss curve (trapezoid / K) and the task
family's held-out metrics (vision: accuracy and loss; Atari: episode return and
normalized score), each as mean and 95% Student-t CI over tasks, seeds and replicates;
the paired difference to a reference method (Leap by default) with its paired-t CI over
tasks; and the interquartile mean and the probability of improving on the reference,
with stratified-bootstrap CIs (Agarwal et al. 2021; `experiments.stats.aggregates`).
Learning curves and a per-task table go to the tracker; the curves per held-out task
(mean and 95% CI per method) are drawn to `<run dir>/plots/<task>__<curve>.png`.
"""

from __future__ import annotations

import datetime
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from experiments.checkpoint import load_initialization, read_initialization
from experiments.config import Config, resolve_device, run_name
from experiments.plots import plot_task_curves
from experiments.runner import (
    architecture,
    build_model,
    seed_everything,
    task_distribution,
    tracker_for,
)
from experiments.signals import GracefulStop, signal_exit_code
from experiments.stats import (
    Aggregate,
    aggregates,
    higher_is_better,
    mean_ci,
    nanmean,
    paired_difference,
)
from experiments.tracking import Tracker, resolve_initialization
from leap_convrnn.errors import RunStopped, UserError
from models import reinitialize
from tasks.base import InnerLoopResult, TaskDistribution

SCRATCH_SEED_STRIDE = 1_000_003
"""Scratch's draw for eval seed s, task i and replicate r uses seed s * 100_003 + i +
r * SCRATCH_SEED_STRIDE: a fresh, reproducible random initialization per task."""


@dataclass(frozen=True)
class Source:
    """One initialization under test: a method label, its replicate index (the training
    seed's position), the checkpoint file and the W&B artifact it came from, if any."""

    label: str
    replicate: int
    path: Path
    artifact: str | None = None

    def describe(self) -> str:
        """Path, run, method, meta-steps and when the file was written."""
        blob = read_initialization(self.path)
        meta = blob.get("metadata", {})
        written = datetime.datetime.fromtimestamp(self.path.stat().st_mtime)
        parts = [
            str(self.path),
            f"run {self.path.parent.name}",
            f"meta-trained by {meta.get('meta', '?')} for {meta.get('meta_steps', '?')} steps",
            f"written {written:%Y-%m-%d %H:%M:%S}",
        ]
        if self.artifact:
            parts.insert(1, f"artifact {self.artifact}")
        return ", ".join(parts)


@dataclass
class MethodResult:
    """Per-task results of one method on the evaluation tasks.

    Entry k is the run on task `keys[k]` = (eval seed, task index, replicate), named
    `tasks[k]` (the task's name: an Atari game's, a vision task's own). `held_out`
    maps each metric of `Task.evaluate` (vision: `accuracy`, `loss`; Atari:
    `episode_return`, `normalized_score`) to its value per entry; `curves` maps
    `train_loss` and each of the inner loop's own curves to one curve per entry.
    `initializations` says what the method starts from (one line per replicate);
    `inner_metrics` holds the inner loop's own figures (e.g. `train_accuracy`, on the last
    training minibatch), reported but not compared. `return_auc` (Atari) is the area under
    each run's return curve (`return_curve_area`).
    """

    method: str
    initializations: list[str] = field(default_factory=list)
    keys: list[tuple[int, int, int]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    auc: list[float] = field(default_factory=list)
    held_out: dict[str, list[float]] = field(default_factory=dict)
    inner_metrics: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    return_auc: list[float] = field(default_factory=list)

    def add(
        self, key: tuple[int, int, int], task: str, run: InnerLoopResult, held: dict[str, float]
    ) -> None:
        """Record one task's inner loop and held-out metrics."""
        self.keys.append(key)
        self.tasks.append(task)
        self.auc.append(run.auc)
        for name, value in held.items():
            self.held_out.setdefault(name, []).append(value)
        for name, value in run.metrics.items():
            if name.startswith("train_"):
                self.inner_metrics.setdefault(name, []).append(float(value))
        self.curves.setdefault("train_loss", []).append(run.losses.tolist())
        for name, curve in run.curves.items():
            self.curves.setdefault(f"train_{name}", []).append(list(curve))
        if "episode_return" in run.curves:
            self.return_auc.append(return_curve_area(run.curves["episode_return"]))

    def figures(self) -> dict[str, list[float]]:
        """Every scored figure per entry: the training curve's area (`auc`, of the loss; for
        Atari `return_auc`, of the episode return, since the A2C loss can be negative and
        says little of how well the agent plays) and the held-out metrics."""
        if self.return_auc:
            return {"return_auc": self.return_auc, **self.held_out}
        return {"auc": self.auc, **self.held_out}

    def replicates(self) -> int:
        return 1 + max((key[2] for key in self.keys), default=0)

    def matrix(self, figure: str) -> np.ndarray:
        """`figure` as a (replicates x tasks) matrix, tasks in (seed, index) order."""
        values = np.asarray(self.figures()[figure], dtype=np.float64)
        order = sorted(range(len(self.keys)), key=lambda k: self.keys[k])
        return values[order].reshape(-1, self.replicates()).T

    def summary(self) -> dict[str, float]:
        """`eval/<method>/<figure>` and its `_ci95` half-width over every entry, for every
        figure and inner-loop metric."""
        out: dict[str, float] = {}
        for name, values in {**self.figures(), **self.inner_metrics}.items():
            mean, half = mean_ci(values)
            out[f"eval/{self.method}/{name}"] = mean
            out[f"eval/{self.method}/{name}_ci95"] = half
        return out

    def curves_by_task(self, name: str) -> dict[str, list[list[tuple[int, float]]]]:
        """Curve `name` of every entry as (inner step, value) pairs without its NaN points,
        grouped by task name."""
        out: dict[str, list[list[tuple[int, float]]]] = {}
        if name not in self.curves:
            return out
        for task, curve in zip(self.tasks, self.curves[name], strict=True):
            points = [(k, v) for k, v in enumerate(curve) if math.isfinite(v)]
            out.setdefault(task, []).append(points)
        return out

    def mean_curve(self, name: str) -> list[float]:
        """Per point, the mean over entries of curve `name`, ignoring NaN points."""
        curves = self.curves.get(name, [])
        return [nanmean(list(points)) for points in zip(*curves, strict=True)]


@dataclass
class Comparison:
    """One method against the reference on one figure: the paired difference (method
    minus reference, per task, replicates averaged) with its paired-t CI half-width, and
    the IQM and probability of improvement from `experiments.stats.aggregates`."""

    method: str
    figure: str
    diff: float
    diff_ci95: float
    aggregate: Aggregate

    def summary(self, reference: str) -> dict[str, float]:
        prefix = f"eval/{self.method}/{self.figure}"
        a = self.aggregate
        out = {
            f"{prefix}_iqm": a.iqm,
            f"{prefix}_iqm_low": a.iqm_low,
            f"{prefix}_iqm_high": a.iqm_high,
        }
        if self.method != reference:
            out.update(
                {
                    f"{prefix}_diff": self.diff,
                    f"{prefix}_diff_ci95": self.diff_ci95,
                    f"{prefix}_p_improvement": a.improvement,
                    f"{prefix}_p_improvement_low": a.improvement_low,
                    f"{prefix}_p_improvement_high": a.improvement_high,
                }
            )
        return out


@dataclass
class Evaluation:
    """What `evaluate` measured: each method's results, the reference method, and the
    comparisons of every method with it (figure -> one `Comparison` per method)."""

    results: list[MethodResult]
    reference: str
    comparisons: dict[str, list[Comparison]]

    def __iter__(self) -> Any:
        return iter(self.results)

    def __getitem__(self, index: int) -> MethodResult:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eval/reference": self.reference}
        for r in self.results:
            out.update(r.summary())
        for comparisons in self.comparisons.values():
            for c in comparisons:
                out.update(c.summary(self.reference))
        return out


def return_curve_area(curve: list[float]) -> float:
    """Area under an agent's return curve divided by its length: the mean of the curve's
    points (each the mean return of the latest episodes) over those where an episode had
    finished; NaN if none had. Higher is better."""
    finite = [v for v in curve if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def compare_methods(results: list[MethodResult], reference: str) -> dict[str, list[Comparison]]:
    """Paired differences, IQMs and probabilities of improvement of every method against
    `reference`, for every figure they all have."""
    by_name = {r.method: r for r in results}
    figures = [f for f in by_name[reference].figures() if all(f in r.figures() for r in results)]
    out: dict[str, list[Comparison]] = {}
    for figure in figures:
        matrices = {r.method: r.matrix(figure) for r in results}
        finite = all(np.isfinite(m).all() for m in matrices.values())
        stats = aggregates(matrices, reference, higher_is_better(figure)) if finite else None
        task_means = {name: m.mean(axis=0) for name, m in matrices.items()}
        rows = []
        for r in results:
            diff, half = paired_difference(task_means[r.method], task_means[reference])
            nan = Aggregate(*(6 * [math.nan]))
            rows.append(Comparison(r.method, figure, diff, half, stats[r.method] if stats else nan))
        out[figure] = rows
    return out


def log_evaluation_curves(
    tracker: Tracker, results: list[MethodResult], rows: list[list[Any]]
) -> None:
    """Log the evaluation's learning curves: per inner step, each method's mean curve
    (`eval/<method>/train_loss`, `eval/<method>/train_episode_return`, ...; points where
    no task has a value are left out); every run's curves as W&B line series; and the
    per-task table `eval/tasks` (`rows`: method, replicate, seed, task index, task, AUC,
    then the held-out metrics)."""
    means = {f"eval/{r.method}/{name}": r.mean_curve(name) for r in results for name in r.curves}
    for k in range(max((len(curve) for curve in means.values()), default=0)):
        point = {key: curve[k] for key, curve in means.items() if not math.isnan(curve[k])}
        if point:
            tracker.log(point, step=k)
    held_keys = list(results[0].held_out) if results else []
    columns = ["method", "replicate", "seed", "task_index", "task", "auc", *held_keys]
    tracker.table("eval/tasks", columns, rows)
    for r in results:
        several = r.replicates() > 1
        keys = [f"seed{s}/task{i}" + (f"/replicate{k}" if several else "") for s, i, k in r.keys]
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
    """The `init.pt` of the training run that `cfg` names (its method, model, seed)."""
    return Path(cfg.out_dir) / run_name(cfg, "train") / "init.pt"


def initialization_sources(cfg: Config) -> list[Source]:
    """The initializations under test: each of `eval.methods` (default: meta.name) from
    the training run of each of `eval.train_seeds` (default: seed), or `eval.init` for a
    single one; then every initialization listed in `eval.inits`."""
    methods = cfg.eval.methods or ([] if cfg.eval.inits else [cfg.meta.name])
    seeds = cfg.eval.train_seeds or [cfg.seed]
    if cfg.name and (len(methods) > 1 or len(seeds) > 1):
        raise UserError(
            f"name={cfg.name!r} names one training run; evaluate several methods or "
            "training seeds without name=, or list them in eval.inits"
        )
    artifacts = Path(cfg.out_dir) / "artifacts"
    sources = []
    for method in methods:
        for replicate, seed in enumerate(seeds):
            run = replace(cfg, meta=replace(cfg.meta, name=method), seed=seed)
            chosen = cfg.eval.init if method == cfg.meta.name else None
            path, artifact = resolve_initialization(
                chosen, default_init_path(run), cfg.tracker, artifacts
            )
            sources.append(Source(method, replicate, path, artifact))
    for label, references in cfg.eval.inits.items():
        if label in methods:
            raise UserError(f"eval.inits label {label!r} is also in eval.methods; rename it")
        for replicate, reference in enumerate(references):
            path, artifact = resolve_initialization(reference, Path(), cfg.tracker, artifacts)
            sources.append(Source(label, replicate, path, artifact))
    return sources


def load_states(
    cfg: Config, sources: list[Source], dist: TaskDistribution, model: nn.Module
) -> list[dict[str, torch.Tensor]]:
    """Each source's initialization as the model's state dict (checked against the model's
    architecture; a family with a head per task loads the shared part only)."""
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    shared = dist.meta_parameters(model) if dist.heads_per_task else None
    states = []
    for source in sources:
        model.load_state_dict(fresh)
        load_initialization(source.path, model, architecture(cfg, dist), shared)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def choose_reference(cfg: Config, labels: list[str]) -> str:
    """`eval.reference`, else leap if it is evaluated, else the first initialization."""
    if cfg.eval.reference is not None:
        if cfg.eval.reference not in labels:
            raise UserError(
                f"eval.reference={cfg.eval.reference!r} is not evaluated; "
                f"accepted: {', '.join(labels)}"
            )
        return cfg.eval.reference
    return "leap" if "leap" in labels else labels[0]


def evaluate(cfg: Config) -> Evaluation:
    """Transfer evaluation (Leap paper protocol): from every initialization under test
    and every baseline, train on each held-out task for K steps; report the area under
    the training-loss curve and the task's held-out metrics after training, over tasks x
    seeds x replicates, and the comparison of each method with the reference.

    Stops at SIGINT / SIGTERM after the current inner loop (exit code 130 / 143, recorded
    in W&B); nothing is saved then."""
    seed_everything(cfg.seed)
    sources = initialization_sources(cfg)
    for source in sources:
        read_initialization(source.path)  # fail fast, before any data is loaded
    dist = task_distribution(cfg, cfg.eval.split)
    model = build_model(cfg, dist).to(resolve_device(cfg.device))
    states = load_states(cfg, sources, dist, model)
    labels = list(dict.fromkeys(s.label for s in sources))
    replicates = max(s.replicate for s in sources) + 1
    baselines = [b for b in cfg.eval.baselines if b not in labels]
    results = {label: MethodResult(label) for label in [*labels, *baselines]}
    for source in sources:
        results[source.label].initializations.append(source.describe())
    for baseline in baselines:
        results[baseline].initializations = [
            f"random initialization, drawn afresh for each task ({replicates} per task)"
        ]
    reference = choose_reference(cfg, labels)
    inner = cfg.meta.inner()
    if cfg.eval.steps is not None:
        inner = replace(inner, steps=cfg.eval.steps)
    print(f"evaluating {len(sources)} initialization(s); reference for paired figures: {reference}")
    for source in sources:
        print(f"  {source.label} [{source.replicate}]: {source.describe()}")
    tracker = tracker_for(cfg, "eval", dist)
    for source in sources:
        if source.artifact is not None:
            tracker.use_artifact(source.artifact, "initialization")
    runs: list[tuple[str, int, dict[str, torch.Tensor] | None]] = [
        (s.label, s.replicate, state) for s, state in zip(sources, states, strict=True)
    ]
    runs += [(b, r, None) for b in baselines for r in range(replicates)]
    exit_code = 1
    try:
        with GracefulStop(then="finishing the current inner loop, then stopping") as stop:
            started = time.perf_counter()
            rows = _run_all(cfg, dist, model, inner, runs, results, stop)
            seconds = time.perf_counter() - started
        evaluation = Evaluation(
            list(results.values()), reference, compare_methods(list(results.values()), reference)
        )
        log_evaluation_curves(tracker, evaluation.results, rows)
        for name in evaluation.results[0].curves:
            by_method = {r.method: r.curves_by_task(name) for r in evaluation.results}
            plot_task_curves(by_method, name, cfg.experiment, tracker.run_dir / "plots")
        summary: dict[str, Any] = {
            "eval/steps": inner.steps,
            "perf/tasks_per_s": len(rows) / seconds,
            **{f"eval/{r.method}/init": " | ".join(r.initializations) for r in results.values()},
            **evaluation.summary(),
        }
        tracker.summary(summary)
        (tracker.run_dir / "curves.json").write_text(
            json.dumps({m: asdict(r) for m, r in results.items()})
        )
        exit_code = 0
        return evaluation
    except RunStopped as stopped:
        exit_code = stopped.exit_code
        raise
    finally:
        tracker.finish(exit_code)


def _run_all(
    cfg: Config,
    dist: TaskDistribution,
    model: nn.Module,
    inner: Any,
    runs: list[tuple[str, int, dict[str, torch.Tensor] | None]],
    results: dict[str, MethodResult],
    stop: GracefulStop,
) -> list[list[Any]]:
    """Train every run on every held-out task (its data on the model's device); return
    the per-task table's rows."""
    device = next(model.parameters()).device
    rows: list[list[Any]] = []
    total = len(cfg.eval.seeds) * cfg.eval.tasks * len(runs)
    bar = tqdm(total=total, desc="evaluate", disable=not cfg.progress, dynamic_ncols=True)
    with bar:
        for seed in cfg.eval.seeds:
            rng = np.random.default_rng(10_000 + seed)
            held_out_tasks = [t.to(device) for t in dist.sample(cfg.eval.tasks, rng)]
            for index, task in enumerate(held_out_tasks):
                for label, replicate, state in runs:
                    if state is not None:
                        model.load_state_dict(state)
                    else:
                        reinitialize(
                            model, seed * 100_003 + index + replicate * SCRATCH_SEED_STRIDE
                        )
                    run = task.inner_loop(model, inner)
                    held = task.evaluate(model)
                    results[label].add((seed, index, replicate), task.name, run, held)
                    rows.append([label, replicate, seed, index, task.name, run.auc, *held.values()])
                    bar.update()
                    if stop.signum is not None:
                        name = signal.Signals(stop.signum).name
                        raise RunStopped(
                            f"{name}: evaluation stopped after {len(rows)} of {total} inner "
                            "loops; nothing was saved",
                            exit_code=signal_exit_code(stop.signum),
                        )
    return rows
