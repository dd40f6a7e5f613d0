"""Learning-curve plots for `leap compare --plots DIR`: mean over seeds with a 95% CI band.

One PNG per experiment and curve kind, `<experiment>__<kind>.png`, one line per group
of runs (method, model, task). Drawn with matplotlib's object API on the Agg canvas, so
no display and no pyplot state are involved.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.runs import RunRecord
from experiments.stats import mean_ci_by_step


@dataclass(frozen=True)
class CurveKind:
    """A kind of learning curve: the metrics it draws and how the figure is labelled.

    `pattern` matches metric names; a named group `method` (as in
    `eval/<method>/train_loss`) splits one run's metrics into several lines.
    """

    stem: str
    title: str
    pattern: str
    xlabel: str
    ylabel: str


CURVES = (
    CurveKind("meta_objective", "Meta-objective", r"meta/objective", "meta-step", "objective"),
    CurveKind(
        "heldout_loss",
        "Training loss on held-out tasks (its area / K is the held-out AUC)",
        r"eval/(?P<method>[^/]+)/train_loss",
        "inner step",
        "training loss",
    ),
    CurveKind("task_auc", "Training-loss AUC of the meta-batch", r"task/auc", "meta-step", "AUC"),
    CurveKind(
        "heldout_normalized_score",
        "Atari normalized score while training on held-out games (last 10 episodes)",
        r"eval/(?P<method>[^/]+)/train_normalized_score",
        "A2C update",
        "normalized score",
    ),
    CurveKind(
        "atari_normalized_score",
        "Atari normalized score",
        r"atari/normalized_score",
        "step",
        "normalized score",
    ),
)


def _file_part(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "runs"


def _kinds(extra_metrics: Iterable[str]) -> list[CurveKind]:
    kinds = list(CURVES)
    for metric in extra_metrics:
        if not any(re.fullmatch(k.pattern, metric) for k in kinds):
            kinds.append(CurveKind(_file_part(metric), metric, re.escape(metric), "step", metric))
    return kinds


def _series(runs: Sequence[RunRecord], kind: CurveKind) -> dict[str, list[list[tuple[int, float]]]]:
    """Line label -> one curve per run, for the runs that logged a matching metric."""
    series: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
    for run in runs:
        _, _, method, model, task = run.key
        for metric in sorted(run.metric_names()):
            match = re.fullmatch(kind.pattern, metric)
            if match is None:
                continue
            curve = run.curve(metric)
            if not curve:
                continue
            label = f"{method} · {model} · {task}"
            if run.settings:
                label += f" ({run.settings})"
            if "method" in match.groupdict():
                label += f" → {match['method']}"
            series[label].append(curve)
    return dict(series)


def plot_kind(
    series: dict[str, list[list[tuple[int, float]]]],
    kind: CurveKind,
    experiment: str,
    path: Path,
) -> None:
    """Draw each line's mean over its runs with a 95% CI band, and save a PNG at `path`."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for label in sorted(series):
        stats = mean_ci_by_step(series[label])
        steps = [s[0] for s in stats]
        means = [s[1] for s in stats]
        line = axes.plot(steps, means, label=f"{label} (n={len(series[label])})")[0]
        band = [(s, m - h, m + h) for s, m, h, _ in stats if not math.isnan(h)]
        if band:
            axes.fill_between(
                [b[0] for b in band],
                [b[1] for b in band],
                [b[2] for b in band],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    axes.set_title(f"{experiment}: {kind.title}", fontsize=10)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(kind.xlabel)
    axes.set_ylabel(kind.ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, title="mean and 95% CI over runs", title_fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def plot_learning_curves(
    runs: Sequence[RunRecord], out_dir: Path, extra_metrics: Iterable[str] = ()
) -> list[Path]:
    """Write `<out_dir>/<experiment>__<kind>.png` for every experiment and curve kind
    that has data (the built-in kinds plus `extra_metrics`); return the paths."""
    by_experiment: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_experiment[run.group].append(run)
    written: list[Path] = []
    for experiment in sorted(by_experiment):
        for kind in _kinds(extra_metrics):
            series = _series(by_experiment[experiment], kind)
            if series:
                path = out_dir / f"{_file_part(experiment)}__{kind.stem}.png"
                plot_kind(series, kind, experiment, path)
                written.append(path)
    return written


MAX_TASK_PANELS = 6
"""`plot_task_curves` draws one figure per held-out task up to this many tasks; with
more, or with tasks met only once (vision tasks are sampled anew per seed), one pooled
figure."""


def plot_task_curves(
    by_method: dict[str, dict[str, list[list[tuple[int, float]]]]],
    curve: str,
    experiment: str,
    out_dir: Path,
) -> list[Path]:
    """Write `<out_dir>/<task>__<curve>.png`: per held-out task, each method's learning
    curve `curve` (mean over seeds and replicates, 95% CI band). `by_method` maps method
    -> task -> curves of (inner step, value) pairs. Returns the paths written."""
    tasks = sorted({task for groups in by_method.values() for task in groups})
    repeated = all(len(c) > 1 for groups in by_method.values() for c in groups.values())
    if len(tasks) > MAX_TASK_PANELS or not repeated:
        by_method = {
            method: {"held-out tasks": [c for curves in groups.values() for c in curves]}
            for method, groups in by_method.items()
        }
        tasks = ["held-out tasks"]
    label = curve.removeprefix("train_").replace("_", " ")
    written = []
    for task in tasks:
        series = {m: groups[task] for m, groups in by_method.items() if groups.get(task)}
        kind = CurveKind(
            f"{_file_part(task)}__{curve}",
            f"{task}, {label} while training from each initialization",
            re.escape(curve),
            "inner step (A2C update for Atari)",
            label,
        )
        path = out_dir / f"{kind.stem}.png"
        plot_kind(series, kind, experiment, path)
        written.append(path)
    return written
