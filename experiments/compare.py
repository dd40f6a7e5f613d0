"""`leap compare`: runs side by side, read back from W&B (`experiments.runs`).

Runs are grouped by experiment (the W&B group), job type, method, model and task; each
metric is shown as mean and 95% CI over the runs (seeds) of a group, and learning
curves are drawn with CI bands by `experiments.plots`. Runs that ended with a non-zero
exit code (failed or crashed) are left out and counted on stderr.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.report import print_table
from experiments.runs import RunRecord, is_number
from experiments.stats import format_ci, mean_ci

DEFAULT_METRICS = {
    "meta-train": [
        "meta/objective",
        "task/auc",
        "task/test_accuracy",
        "atari/normalized_score",
        "task/test_normalized_score",
        "perf/tasks_per_s",
    ],
    "evaluate": [
        "eval/{method}/auc",
        "eval/{method}/accuracy",
        "eval/{method}/normalized_score",
        "eval/{method}/episode_return",
    ],
}
COLUMNS = ["experiment", "job", "method", "model", "task", "metric", "mean ± 95% CI", "runs"]


@dataclass(frozen=True)
class ComparisonRow:
    """One metric of one group of runs: mean and 95% CI half-width over its runs."""

    experiment: str
    job: str
    method: str
    model: str
    task: str
    metric: str
    mean: float
    ci95: float
    runs: int

    def cells(self) -> list[str]:
        return [
            self.experiment,
            self.job,
            self.method,
            self.model,
            self.task,
            self.metric,
            format_ci(self.mean, self.ci95, digits=4),
            str(self.runs),
        ]


def _default_metrics(job: str, members: Sequence[RunRecord]) -> list[str]:
    if job != "evaluate":
        return DEFAULT_METRICS["meta-train"]
    methods = sorted(
        {
            k.split("/")[1]
            for r in members
            for k in r.summary
            if k.startswith("eval/") and k.endswith("/auc") and k.count("/") == 2
        }
    )
    return [m.format(method=method) for method in methods for m in DEFAULT_METRICS["evaluate"]]


def summarize(
    runs: Sequence[RunRecord], metrics: Sequence[str] | None = None
) -> list[ComparisonRow]:
    """Mean and 95% CI of each metric's summary value over the runs of each group."""
    grouped: dict[tuple[str, str, str, str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.key].append(run)
    rows: list[ComparisonRow] = []
    for key in sorted(grouped):
        members = grouped[key]
        for metric in metrics or _default_metrics(key[1], members):
            values = [float(r.summary[metric]) for r in members if is_number(r.summary.get(metric))]
            if values:
                mean, half = mean_ci(values)
                rows.append(
                    ComparisonRow(*key, metric=metric, mean=mean, ci95=half, runs=len(values))
                )
    return rows


def compare(
    runs: Sequence[RunRecord],
    metrics: Sequence[str] | None = None,
    markdown: bool = False,
    plots: Path | None = None,
) -> list[ComparisonRow]:
    """Print the comparison table of `runs` (and return its rows); with `plots`, write
    PNG learning curves with 95% CI bands there and print their paths."""
    rows = summarize(runs, metrics)
    print_table("leap compare", COLUMNS, [r.cells() for r in rows], markdown=markdown)
    if plots is not None:
        from experiments.plots import plot_learning_curves

        written = plot_learning_curves(runs, plots, extra_metrics=metrics or ())
        for path in written:
            print(f"plot: {path}")
        if not written:
            print("leap compare: no learning curve to plot", file=sys.stderr)
    return rows
