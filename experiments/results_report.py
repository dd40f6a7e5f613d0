"""docs/results.md from the suite's record (`experiments.results`): tables, plots and the
paper's claims beside ours. Every number comes from the record, which is written next to
the report as results.json; nothing here is typed in by hand.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.stats import format_ci, higher_is_better

FIGURES = {
    "auc": "train-loss AUC",
    "loss": "held-out loss",
    "accuracy": "held-out accuracy",
}
LABELS = {
    "leap": "Leap",
    "reptile": "Reptile",
    "fomaml": "FOMAML",
    "maml": "MAML",
    "finetune": "Finetune",
    "scratch": "Scratch",
    "energy": "Leap, energy metric",
    "no_loss": "Leap, no loss coordinate",
    "no_stabilizer": "Leap, no stabilizer",
    "ff": "feedforward twin (Scratch)",
}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _value(summary: dict[str, Any], method: str, figure: str, digits: int = 3) -> str:
    mean = summary.get(f"eval/{method}/{figure}", math.nan)
    half = summary.get(f"eval/{method}/{figure}_ci95", math.nan)
    return format_ci(float(mean), float(half), digits)


def _methods(evaluation: dict[str, Any]) -> list[str]:
    return list(evaluation["curves"])


def method_table(
    evaluation: dict[str, Any],
    train_seconds: dict[str, float],
    figures: Sequence[str] = tuple(FIGURES),
) -> str:
    """Method | each figure (mean ± 95% CI over tasks, seeds and replicates) | held-out
    runs | meta-training wall time (summed over training seeds; `train_seconds`)."""
    summary = evaluation["summary"]
    rows = []
    for method in _methods(evaluation):
        curves = evaluation["curves"][method]
        spent = train_seconds.get(method)
        rows.append(
            [
                _label(method),
                *[_value(summary, method, f) for f in figures],
                str(len(curves["auc"])),
                f"{spent:.0f}" if spent is not None else "none",
            ]
        )
    columns = [
        "method",
        *[
            f"{FIGURES.get(f, f)} ({'higher' if higher_is_better(f) else 'lower'} is better)"
            for f in figures
        ],
        "held-out runs",
        "meta-training (s)",
    ]
    return _table(columns, rows)


def train_seconds(record: dict[str, Any], study: str, point: str) -> dict[str, float]:
    """Method -> meta-training seconds of `study` at `point` (summed over seeds)."""
    spent = record.get("job_seconds", {}).get(study, {})
    prefix = f"{point}/"
    return {k.removeprefix(prefix): v for k, v in spent.items() if k.startswith(prefix)}


def paired_table(evaluation: dict[str, Any], figures: Sequence[str] = ("auc", "accuracy")) -> str:
    """Per method: the paired difference to the reference and the probability of being
    better than it, with the interquartile mean, for each figure."""
    summary = evaluation["summary"]
    reference = summary["eval/reference"]
    rows = []
    for method in _methods(evaluation):
        cells = [_label(method)]
        for f in figures:
            prefix = f"eval/{method}/{f}"
            iqm = (
                f"{summary[prefix + '_iqm']:.3f} "
                f"[{summary[prefix + '_iqm_low']:.3f}, {summary[prefix + '_iqm_high']:.3f}]"
            )
            if method == reference:
                cells += ["reference", "reference", iqm]
                continue
            diff = format_ci(summary[prefix + "_diff"], summary[prefix + "_diff_ci95"])
            better = (
                f"{summary[prefix + '_p_improvement']:.2f} "
                f"[{summary[prefix + '_p_improvement_low']:.2f}, "
                f"{summary[prefix + '_p_improvement_high']:.2f}]"
            )
            cells += [diff, better, iqm]
        rows.append(cells)
    columns = ["method"]
    for f in figures:
        name = FIGURES.get(f, f)
        columns += [
            f"{name}: difference to {_label(reference)}",
            f"{name}: P(better than {_label(reference)})",
            f"{name}: IQM",
        ]
    return _table(columns, rows)


def _mean(summary: dict[str, Any], method: str, figure: str) -> float:
    return float(summary.get(f"eval/{method}/{figure}", math.nan))


def _save(figure: Any, axes: Any, labels: tuple[str, str, str], path: Path) -> None:
    """Title and label one plot's axes, add the grid and legend, write the PNG."""
    title, x, y = labels
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def plot_curves(evaluation: dict[str, Any], title: str, path: Path) -> None:
    """Each method's mean training-loss curve over the held-out tasks, with a 95% CI band."""
    from matplotlib.figure import Figure

    from experiments.stats import mean_ci

    figure = Figure(figsize=(6.5, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for method in _methods(evaluation):
        curves = np.asarray(evaluation["curves"][method]["curves"]["train_loss"], dtype=float)
        stats = [mean_ci(curves[:, k].tolist()) for k in range(curves.shape[1])]
        means = np.array([m for m, _ in stats])
        halves = np.nan_to_num(np.array([h for _, h in stats]))
        steps = np.arange(len(means))
        line = axes.plot(steps, means, label=_label(method))[0]
        axes.fill_between(steps, means - halves, means + halves, color=line.get_color(), alpha=0.15)
    _save(figure, axes, (title, "inner step on a held-out task", "training loss"), path)


def alphabet_points(study: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """model -> method -> [(alphabets, AUC mean, CI half-width)] of the Figure 3 study."""
    out: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for point, evaluation in study["evaluations"].items():
        model, _, count = point.rpartition("-")
        summary = evaluation["summary"]
        for method in _methods(evaluation):
            out.setdefault(model, {}).setdefault(method, []).append(
                (
                    int(count),
                    _mean(summary, method, "auc"),
                    float(summary.get(f"eval/{method}/auc_ci95", math.nan)),
                )
            )
    for methods in out.values():
        for values in methods.values():
            values.sort()
    return out


def plot_alphabets(
    points: dict[str, list[tuple[int, float, float]]], model: str, path: Path
) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for method, values in points.items():
        counts = [v[0] for v in values]
        means = np.array([v[1] for v in values])
        halves = np.nan_to_num(np.array([v[2] for v in values]))
        axes.errorbar(counts, means, yerr=halves, marker="o", capsize=3, label=_label(method))
        axes.set_xticks(counts)
    labels = (
        f"{model}: held-out AUC against meta-training alphabets",
        "meta-training alphabets",
        "train-loss AUC on held-out alphabets",
    )
    _save(figure, axes, labels, path)


META_PARTS = {
    "meta/objective": "objective",
    "meta/path_distance": "parameter distance",
    "meta/path_loss_change": "loss change",
}


def meta_parts(study: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """For each Leap meta-training run: metric -> values over meta-steps."""
    out: dict[str, dict[str, list[float]]] = {}
    for run, rows in study.get("meta_training", {}).items():
        series: dict[str, list[float]] = {}
        for row in rows:
            for key in (*META_PARTS, "task/auc", "task/loss_first", "task/loss_final"):
                # The energy metric logs its parts squared, under `_sq` names.
                name = key if key in row else f"{key}_sq"
                if name in row:
                    series.setdefault(key, []).append(float(row[name]))
        if series:
            out[run] = series
    return out


def plot_meta_parts(series: dict[str, list[float]], title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.2), layout="constrained")
    keys = [k for k in (*META_PARTS, "task/auc") if k in series]
    for index, key in enumerate(keys, start=1):
        axes = figure.add_subplot(1, len(keys), index)
        axes.plot(series[key])
        axes.set_title(META_PARTS.get(key, "meta-batch training-loss AUC"), fontsize=9)
        axes.set_xlabel("meta-step", fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _ordering(summary: dict[str, Any], methods: Sequence[str], figure: str) -> list[str]:
    values = [(m, _mean(summary, m, figure)) for m in methods if f"eval/{m}/{figure}" in summary]
    reverse = higher_is_better(figure)
    return [m for m, _ in sorted(values, key=lambda item: item[1], reverse=reverse)]


def claims(record: dict[str, Any]) -> list[list[str]]:
    """The Leap paper's findings on Omniglot beside ours, each judged from the record."""
    rows = []
    studies = record["studies"]
    comparison = studies.get("comparison", {}).get("evaluations", {})
    claimed = ["leap", "reptile", "finetune", "scratch"]
    for model, evaluation in comparison.items():
        order = _ordering(evaluation["summary"], claimed, "auc")
        agrees = order == claimed
        rows.append(
            [
                f"AUC ordering on {model}",
                "Leap < Reptile < Finetune < Scratch",
                " < ".join(_label(m) for m in order),
                "yes" if agrees else "no",
            ]
        )
    ablation = studies.get("ablation", {}).get("evaluations", {}).get("evaluate")
    if ablation:
        s = ablation["summary"]
        pairs = [
            ("length beats energy (AUC)", "leap", "energy", "auc"),
            ("the loss coordinate lowers the held-out error", "leap", "no_loss", "accuracy"),
            ("the stabilizer speeds convergence (AUC)", "leap", "no_stabilizer", "auc"),
        ]
        for claim, ours, other, figure in pairs:
            a, b = _mean(s, ours, figure), _mean(s, other, figure)
            if figure == "accuracy":
                text = f"error {1 - a:.3f} ({_label(ours)}), {1 - b:.3f} ({_label(other)})"
                better = a > b
            else:
                text = f"AUC {a:.3f} ({_label(ours)}), {b:.3f} ({_label(other)})"
                better = a < b
            diff = s.get(f"eval/{other}/{figure}_diff", math.nan)
            half = s.get(f"eval/{other}/{figure}_diff_ci95", math.nan)
            significant = not math.isnan(half) and abs(diff) > half
            verdict = ("yes" if better else "no") + ("" if significant else " (within the CI)")
            paper = "roughly halves the error" if figure == "accuracy" else "yes"
            rows.append([claim, paper, text, verdict])
    return rows


def representations_section(study: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The Leap-vs-Scratch representation study: per pair of networks, the top layer's
    RSA at each time step (mean over held-out tasks), and the networks' accuracies."""
    layers, steps = study["layers"], study["steps"]
    top = len(layers) - 1
    rows = [
        [pair, *[f"{grid[top][j]:.3f}" for j in range(len(steps))]]
        for pair, grid in study["maps"].items()
    ]
    accuracy = ", ".join(f"{_label(k)} {v:.3f}" for k, v in study["accuracy"].items())
    budget = record["budget"]
    return [
        "## Do Leap's ConvRNN representations differ from Scratch's?",
        "",
        "`leap analyze --study leap_vs_scratch` on the comparison's Leap `convrnn_glyph` "
        f"(training seed {budget['seeds'][0]}): on {min(5, budget['eval_tasks'])} held-out "
        f"tasks, `convrnn_glyph` from Leap and from Scratch and its feedforward twin from "
        f"Scratch, read out before and after {budget['inner_steps']} inner steps. Spearman "
        f"RSA of the top layer (`{layers[top]}`) at each time step, mean over tasks (the "
        "twin has one step; each step of the ConvRNN is compared with it). Held-out "
        f"accuracy after the inner loop: {accuracy} (`ff`: the feedforward twin). "
        "docs/analysis.md describes the tool and its maps.",
        "",
        _table(["pair", *[f"step {t}" for t in steps]], rows),
        "",
    ]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def model_text(model: str, costs: dict[str, float] | None) -> str:
    """One line: the model's parameter count and forward FLOPs per image."""
    if not costs:
        return f"`{model}`."
    return (
        f"`{model}`: {costs['parameters'] / 1e3:,.1f}k parameters, "
        f"{costs['forward_flops'] / 1e6:,.2f} MFLOPs per image in the forward pass "
        "(a training step costs about three times that)."
    )


def budget_text(record: dict[str, Any]) -> str:
    b = record["budget"]
    inner = b["meta_steps"] * b["meta_batch_size"] * b["inner_steps"]
    minutes = {k: sum(v.values()) / 60 for k, v in record.get("job_seconds", {}).items()}
    spent = ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items())
    return (
        f"Budget per training run: {b['meta_steps']} meta-steps x {b['meta_batch_size']} "
        f"tasks x {b['inner_steps']} inner steps = {inner} inner steps, the same for every "
        f"method (MAML adapts for its own 5 steps per task, so it takes fewer), training seeds "
        f"{list(b['seeds'])}; held-out evaluation: {b['eval_tasks']} tasks x eval seeds "
        f"{list(b['eval_seeds'])}, {b['inner_steps']} steps each. Figure 3 runs: "
        f"{b['alphabet_meta_steps'] or b['meta_steps']} meta-steps, training seed 0; Table 1 "
        f"runs: {b['multicv_meta_steps'] or b['meta_steps']} meta-steps; the ablation's "
        "default Leap variant is the comparison's Leap run. Wall-clock: "
        f"{record['wall_seconds'] / 60:.1f} min for the whole suite with {record['jobs']} "
        f"runs at a time (process time per study, summed over runs: {spent})."
    )


def write_report(record: dict[str, Any], docs: Path) -> Path:
    """Write `<docs>/results.json`, the figures and `<docs>/results.md`."""
    docs.mkdir(parents=True, exist_ok=True)
    figures = docs / "figures"
    (docs / "results.json").write_text(json.dumps(record, indent=1, default=str))
    studies = record["studies"]
    out = [
        "# Results",
        "",
        f"Written by `leap results --scale {record['scale']}` on "
        f"{datetime.date.today():%Y-%m-%d} ({_machine()}, commit {_commit()}); every number "
        "below comes from `results.json` beside this file, which the same command rewrites. "
        "Figures: mean ± 95% Student-t CI over held-out tasks, evaluation seeds and training "
        "seeds; paired differences: mean ± 95% paired-t CI over tasks (each task's figures "
        "averaged over training seeds); IQM and P(better): 95% stratified-bootstrap CIs "
        "(training seeds resampled within tasks, tasks resampled).",
        "",
        budget_text(record),
        "",
    ]
    comparison = studies.get("comparison", {}).get("evaluations", {})
    if comparison:
        out += ["## Which initialization learns new tasks fastest?", ""]
        for model, evaluation in comparison.items():
            plot = figures / f"comparison_{model}.png"
            plot_curves(evaluation, f"{model}: training loss on held-out tasks", plot)
            out += [
                f"### {model}",
                "",
                model_text(model, record.get("models", {}).get(model)),
                "",
                method_table(evaluation, train_seconds(record, "comparison", model)),
                "",
                paired_table(evaluation),
                "",
                f"![{model}](figures/{plot.name})",
                "",
            ]
    alphabet_study = studies.get("alphabets", {})
    if alphabet_study.get("evaluations"):
        out += ["## Held-out AUC against the number of meta-training alphabets (Figure 3)", ""]
        for model, points in alphabet_points(alphabet_study).items():
            plot = figures / f"alphabets_{model}.png"
            plot_alphabets(points, model, plot)
            counts = sorted({c for values in points.values() for c, _, _ in values})
            rows = [
                [
                    _label(method),
                    *[format_ci(m, h) for c in counts for count, m, h in values if count == c],
                ]
                for method, values in points.items()
            ]
            out += [
                f"### {model}",
                "",
                _table(["method", *[f"{c} alphabets" for c in counts]], rows),
                "",
                f"![{model}](figures/{plot.name})",
                "",
            ]
    ablation = studies.get("ablation", {}).get("evaluations", {}).get("evaluate")
    if ablation:
        out += [
            "## Leap's options on convrnn_glyph (Appendix C)",
            "",
            method_table(ablation, train_seconds(record, "ablation", "convrnn_glyph")),
            "",
            paired_table(ablation),
            "",
        ]
    multicv = studies.get("multicv", {}).get("evaluations", {}).get("conv4")
    if multicv:
        s = multicv["summary"]
        rows = []
        for method in _methods(multicv):
            rows.append(
                [
                    _label(method),
                    format_ci(
                        1 - _mean(s, method, "accuracy"),
                        s.get(f"eval/{method}/accuracy_ci95", math.nan),
                    ),
                    format_ci(
                        1 - _mean(s, method, "train_accuracy"),
                        s.get(f"eval/{method}/train_accuracy_ci95", math.nan),
                    ),
                    _value(s, method, "auc"),
                ]
            )
        out += [
            "## Multi-CV (Table 1), on the offline sets",
            "",
            _table(["method", "test error", "train error", "train-loss AUC"], rows),
            "",
            paired_table(multicv),
            "",
        ]
    parts = {}
    for name in ("comparison", "ablation"):
        parts.update(meta_parts(studies.get(name, {})))
    if parts:
        out += ["## What the meta-objective does", ""]
        rows = []
        for run, series in parts.items():
            cells = [run]
            for key in (*META_PARTS, "task/auc", "task/loss_first"):
                values = series.get(key, [])
                cells.append(f"{values[0]:.3g} → {values[-1]:.3g}" if values else "")
            rows.append(cells)
        first = next(iter(parts))
        plot = figures / "meta_objective.png"
        plot_meta_parts(parts[first], first, plot)
        out += [
            "Each Leap run's path length (the objective), split into its two parts, the "
            "distance travelled in parameter space and the change of the loss (squared, "
            "for the energy metric), first and last meta-step, beside the meta-batch's "
            "training-loss AUC and its initial loss:",
            "",
            _table(
                [
                    "run",
                    "objective",
                    "parameter distance",
                    "loss change",
                    "task AUC",
                    "initial loss",
                ],
                rows,
            ),
            "",
            f"![meta-objective](figures/{plot.name})",
            "",
        ]
    table = claims(record)
    if table:
        out += [
            "## Beside the Leap paper",
            "",
            _table(["finding", "paper (Omniglot)", "ours (glyphs)", "agrees"], table),
            "",
        ]
    study = studies.get("representations")
    if study:
        out += representations_section(study, record)
    path = docs / "results.md"
    path.write_text("\n".join(out))
    return path
