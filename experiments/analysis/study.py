"""The Leap-versus-Scratch representation study (`leap analyze --study leap_vs_scratch`).

Question: does a Leap-learned initialization, or the training that starts from it, make
a ConvRNN's representations, time step by time step, more like another network's?

Protocol, on `tasks` held-out glyph tasks (the test alphabets of `experiment=NAME`,
default glyphs_demo_convrnn, drawn as `leap evaluate` draws them):

1. `convrnn_glyph` from the Leap initialization (`--checkpoint`) and from Scratch (a fresh
   draw per task, seeded as `leap evaluate` seeds it), and its feedforward twin
   `convrnn_glyph_ff` from Scratch (seeds of its own), each read out on the task's held-out images
   (BatchNorm statistics re-estimated on the task's training images) -> "before";
2. each trains on the task for the experiment's evaluation inner loop (eval.steps) and is
   read out again -> "after" (its held-out accuracy is recorded too);
3. RSA (an RDM per layer and step, Spearman or Kendall) for the pairs in `PAIRS`; the
   ConvRNN's layer at step t is compared with the same layer of the twin (one step).

Figures (mean over tasks): one layer x step map per pair, and a line plot of the top
layer's similarity over time steps. Everything lands in `<out_dir>/<name>/` and W&B.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

import models
from experiments.analysis import rsa
from experiments.analysis.analyze import AnalysisRequest, analysis_tracker
from experiments.analysis.extract import read_features
from experiments.analysis.report import format_grid, log_map
from experiments.checkpoint import load_initialization, read_initialization
from experiments.config import compose
from experiments.runner import architecture, build_model, task_distribution
from experiments.tracking import git_state
from leap_convrnn.errors import UserError
from models.features import Features

STUDIES = ("leap_vs_scratch",)
MODEL = "convrnn_glyph"
TWIN = "convrnn_glyph_ff"
#: Added to the twin's seeds, so that its layers are not the Scratch ConvRNN's draws.
TWIN_SEED_OFFSET = 50_000
#: (label, A, B): A and B are (network, phase) with network leap | scratch | ff.
PAIRS = (
    ("leap vs scratch, before", ("leap", "before"), ("scratch", "before")),
    ("leap vs scratch, after", ("leap", "after"), ("scratch", "after")),
    ("leap vs ff twin, before", ("leap", "before"), ("ff", "before")),
    ("scratch vs ff twin, before", ("scratch", "before"), ("ff", "before")),
    ("leap vs ff twin, after", ("leap", "after"), ("ff", "after")),
    ("scratch vs ff twin, after", ("scratch", "after"), ("ff", "after")),
    ("leap before vs after", ("leap", "before"), ("leap", "after")),
    ("scratch before vs after", ("scratch", "before"), ("scratch", "after")),
)


def run_study(
    name: str,
    request: AnalysisRequest,
    tasks: int = 3,
    steps: int | None = None,
    experiment: str = "glyphs_demo_convrnn",
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the study `name` (see the module docstring) with the Leap init
    `request.checkpoint` on `tasks` held-out tasks, `steps` inner steps each (None: the
    experiment's eval.steps); `overrides` are further Hydra overrides of the experiment
    (e.g. a smaller glyph set). Returns the mean maps and accuracies."""
    if tasks < 1 or (steps is not None and steps < 1):
        raise UserError(f"the study needs tasks >= 1 and steps >= 1, got {tasks} and {steps}")
    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; accepted: {', '.join(STUDIES)}")
    if not request.checkpoint:
        raise UserError(f"study {name} needs --checkpoint: a Leap initialization of {MODEL}")
    if request.metric not in rsa.METRICS:
        raise UserError(
            f"unknown RSA metric {request.metric!r}; accepted: {', '.join(rsa.METRICS)}"
        )
    saved = read_initialization(request.checkpoint)["architecture"]
    if saved.get("model") != MODEL:
        raise UserError(
            f"study {name} compares {MODEL} initializations; {request.checkpoint!r} holds "
            f"a {saved.get('model')!r}"
        )
    root = str(Path(request.data_root).expanduser())
    cfg = compose(
        [
            f"experiment={experiment}",
            f"data.root='{root}'",
            f"seed={request.seed}",
            "tracker=none",
            *overrides,
        ]
    )
    dist = task_distribution(cfg, "test")
    leap_model = build_model(cfg, dist)
    load_initialization(request.checkpoint, leap_model, architecture(cfg, dist))
    leap_state = {k: v.clone() for k, v in leap_model.state_dict().items()}
    twin = models.build(TWIN, dist.input_shape, dist.num_outputs, **cfg.model.options)
    inner = cfg.meta.inner()
    if (steps or cfg.eval.steps) is not None:
        inner = replace(inner, steps=steps or cfg.eval.steps)
    held_out = dist.sample(tasks, np.random.default_rng(10_000 + request.seed))
    values: dict[str, list[np.ndarray]] = {label: [] for label, _, _ in PAIRS}
    accuracy: dict[str, list[float]] = {"leap": [], "scratch": [], "ff": []}
    layers: list[str] = []
    columns: list[int] = []
    for index, task in enumerate(held_out):
        x_test = task.x_test  # type: ignore[attr-defined]
        calibration = task.calibration_images()  # type: ignore[attr-defined]
        features: dict[tuple[str, str], Features] = {}
        for network in ("leap", "scratch", "ff"):
            model: nn.Module = twin if network == "ff" else leap_model
            if network == "leap":
                model.load_state_dict(leap_state)
            else:  # Scratch as `leap evaluate` draws it; the twin from seeds of its own
                offset = TWIN_SEED_OFFSET if network == "ff" else 0
                models.reinitialize(model, request.seed * 100_003 + index + offset)
            features[(network, "before")] = read_features(
                model, x_test, None, None, request.pool, calibration
            )
            task.inner_loop(model, inner)
            accuracy[network].append(task.evaluate(model)["accuracy"])
            features[(network, "after")] = read_features(
                model, x_test, None, None, request.pool, calibration
            )
        for label, a, b in PAIRS:
            similarity = rsa.similarity_table(
                features[a], features[b], request.metric, request.distance
            )
            layers, columns, grid = rsa.matched_map(similarity)
            values[label].append(grid)
        print(
            f"task {index + 1}/{tasks} ({task.name}): held-out accuracy after "
            f"{inner.steps} steps: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in accuracy.items())
        )
    return _report(name, request, values, accuracy, layers, columns, inner.steps, tasks, experiment)


def _report(
    name: str,
    request: AnalysisRequest,
    values: dict[str, list[np.ndarray]],
    accuracy: dict[str, list[float]],
    layers: list[str],
    steps: list[int],
    inner_steps: int,
    tasks: int,
    experiment: str,
) -> dict[str, Any]:
    run_name = request.name or f"study-{name}"
    run_dir = Path(request.out_dir).expanduser() / run_name
    tracker = analysis_tracker(
        request,
        run_dir,
        ["analyze", name, MODEL],
        {
            "study": name,
            "checkpoint": request.checkpoint,
            "tasks": tasks,
            "experiment": experiment,
            "inner_steps": inner_steps,
            "metric": request.metric,
            "seed": request.seed,
            **git_state(),
        },
    )
    columns = [str(t) for t in steps]
    label = f"RSA ({request.metric})"
    out: dict[str, Any] = {"layers": layers, "steps": steps, "maps": {}, "sd": {}}
    rows = []
    exit_code = 1
    try:
        for pair, grids in values.items():
            stack = np.stack(grids)
            mean, sd = stack.mean(0), stack.std(0)
            out["maps"][pair] = mean.tolist()
            out["sd"][pair] = sd.tolist()
            key = "study/" + pair.replace(" ", "_").replace(",", "")
            title = f"{MODEL}: {pair} ({label}, mean of {tasks} tasks)"
            log_map(tracker, key, mean, layers, columns, title, run_dir, label, vmin=-0.2, vmax=1.0)
            print(format_grid(mean, layers, columns, title))
            for i, layer in enumerate(layers):
                for j, t in enumerate(steps):
                    rows.append([pair, layer, t, float(mean[i, j]), float(sd[i, j])])
        tracker.table("study/rsa", ["pair", "layer", "step", "mean", "sd"], rows)
        _line_plot(values, layers, steps, run_dir / "study_top_layer.png", label, tasks)
        tracker.image("study/top_layer", run_dir / "study_top_layer.png")
        out["accuracy"] = {k: float(np.mean(v)) for k, v in accuracy.items()}
        print(
            "held-out accuracy after the inner loop (mean over tasks): "
            + ", ".join(f"{k} {v:.3f}" for k, v in out["accuracy"].items())
        )
        tracker.summary({f"study/accuracy_{k}": v for k, v in out["accuracy"].items()})
        (run_dir / "study.json").write_text(json.dumps(out, indent=2))
        exit_code = 0
    finally:
        tracker.finish(exit_code)
    print(f"figures and tables in {run_dir}")
    return out


def _line_plot(
    values: dict[str, list[np.ndarray]],
    layers: list[str],
    steps: list[int],
    path: Path,
    label: str,
    tasks: int,
) -> None:
    """The top layer's similarity over time steps, one line per pair (mean +- sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for pair, grids in values.items():
        stack = np.stack(grids)[:, -1]
        mean, sd = stack.mean(0), stack.std(0)
        style = "--" if "before vs after" in pair else "-"
        ax.errorbar(steps, mean, yerr=sd, label=pair, capsize=3, linestyle=style, marker="o")
    ax.set_xticks(steps)
    ax.set_xlabel("time step")
    ax.set_ylabel(label)
    ax.set_title(f"{MODEL}, layer {layers[-1]}: mean +- sd over {tasks} held-out tasks", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
