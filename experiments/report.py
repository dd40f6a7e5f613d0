"""Tables printed for people: evaluation results and run comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from experiments.stats import format_ci, higher_is_better, mean_ci

if TYPE_CHECKING:  # evaluation imports torch; `leap compare` does not need it
    from experiments.evaluate import Evaluation


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
) -> None:
    """Print a table with rich, or as Markdown."""
    if markdown:
        print(f"**{title}**\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=False).print(table)


FIGURE_NAMES = {"auc": "train-loss AUC", "return_auc": "return-curve area"}


def _figure(name: str) -> str:
    """A column title for a figure: the AUC by its meaning, held-out metrics as such."""
    return FIGURE_NAMES.get(name, f"held-out {name.replace('_', ' ')}")


def _source(initializations: Sequence[str]) -> str:
    """A short description of what a method starts from: its run directory, how many
    runs, or "random" for a baseline."""
    paths = [line.split(", ")[0] for line in initializations]
    if not all(path.endswith(".pt") for path in paths):
        return "random"
    return Path(paths[0]).parent.name if len(paths) == 1 else f"{len(paths)} runs"


def print_per_task(evaluation: Evaluation, markdown: bool = False) -> None:
    """Each method's figures per held-out task (mean ± 95% CI over seeds and replicates),
    when every task was met more than once (Atari games: their scores differ in scale, so
    the pooled table mixes them); nothing for vision tasks, drawn anew for each seed."""
    results = evaluation.results
    tasks = sorted({t for r in results for t in r.tasks})
    if not tasks or any(r.tasks.count(t) < 2 for r in results for t in set(r.tasks)):
        return
    figures = list(results[0].figures())
    rows = []
    values = {r.method: r.figures() for r in results}
    for task in tasks:
        for r in results:
            index = [k for k, t in enumerate(r.tasks) if t == task]
            cells = [format_ci(*mean_ci([values[r.method][f][k] for k in index])) for f in figures]
            rows.append([task, r.method, *cells, str(len(index))])
    columns = ["task", "method", *[_figure(f) for f in figures], "runs"]
    print_table("per held-out task (mean ± 95% CI)", columns, rows, markdown=markdown)


def print_evaluation(evaluation: Evaluation, title: str, markdown: bool = False) -> None:
    """Two tables: each method's figures (mean ± 95% CI over tasks, seeds and replicates)
    and what it starts from; then, per method and figure, the paired difference to the
    reference (± 95% paired-t CI over tasks), the interquartile mean and the probability
    of being better than the reference (95% stratified-bootstrap CIs). A third, per
    held-out task, where tasks repeat (`print_per_task`)."""
    results = evaluation.results
    figures = list(results[0].figures()) if results else []
    direction = {f: "higher" if higher_is_better(f) else "lower" for f in figures}
    rows = [
        [
            r.method,
            _source(r.initializations),
            *[format_ci(*mean_ci(r.figures().get(f, []))) for f in figures],
            str(len(r.auc)),
        ]
        for r in results
    ]
    columns = [
        "method",
        "initialization",
        *[f"{_figure(f)} ({direction[f]} is better)" for f in figures],
        "runs",
    ]
    print_table(title, columns, rows, markdown=markdown)
    ref = evaluation.reference
    rows = []
    for figure, comparisons in evaluation.comparisons.items():
        for c in comparisons:
            a = c.aggregate
            rows.append(
                [
                    c.method,
                    _figure(figure),
                    "reference" if c.method == ref else format_ci(c.diff, c.diff_ci95),
                    f"{a.iqm:.3f} [{a.iqm_low:.3f}, {a.iqm_high:.3f}]",
                    "reference"
                    if c.method == ref
                    else f"{a.improvement:.2f} [{a.improvement_low:.2f}, {a.improvement_high:.2f}]",
                ]
            )
    if rows:
        print_table(
            f"each method against {ref}: paired difference (method - {ref}, 95% CI over tasks), "
            "interquartile mean and probability of being better (95% stratified-bootstrap CIs)",
            ["method", "figure", f"difference to {ref}", "IQM", f"P(better than {ref})"],
            rows,
            markdown=markdown,
        )
    print_per_task(evaluation, markdown=markdown)
