"""`leap results`: the evidence suite, run by one command, written to docs/results.md.

Studies (each a set of `leap train` runs, then one `leap evaluate` that trains every
initialization and Scratch on the same held-out tasks):

- comparison: Leap, Reptile, FOMAML, MAML, multi-headed finetuning and Scratch on the
  glyph alphabets (the Leap paper's Omniglot protocol, `experiment=suite_glyphs`), for
  conv4, `convrnn_glyph` and its feedforward twin `convrnn_glyph_ff`, several training
  seeds each, with the same budget of inner-loop steps for every method.
- alphabets (the Leap paper's Figure 3): held-out AUC against the number of meta-training
  alphabets, for Leap, Reptile, finetuning and Scratch, on conv4 and `convrnn_glyph`.
- ablation (the paper's Appendix C) on `convrnn_glyph`: length vs energy metric, the loss
  coordinate off, the stabilizer off.
- multicv (the paper's Table 1) on `multicv_offline`: test error, train error and AUC for
  Leap, finetuning and Scratch.
- representations (with the comparison, when it runs `convrnn_glyph`): `leap analyze
  --study leap_vs_scratch` on the comparison's first Leap `convrnn_glyph` initialization,
  on held-out tasks of the same budget.

The scale (`--scale full|quick|tiny`) sets the budget; `full` is the one docs/results.md
reports, `quick` checks the whole pipeline in minutes, `tiny` is what the tests run.
Runs go under `--work-dir` (W&B offline runs in `<work-dir>/wandb`); every figure lands in
`<docs>/results.json`, the tables and plots in `<docs>/results.md` and `<docs>/figures/`.
Training runs go `--jobs` at a time (processes of one thread each), the costliest first.
A finished job leaves a marker in `<work-dir>/finished/`, so a killed suite, run again with
the same arguments, starts where it stopped; the ablation's Leap runs are the comparison's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from leap_convrnn.errors import UserError

METHODS = ("leap", "reptile", "fomaml", "maml", "finetune")
MODELS = ("conv4", "convrnn_glyph", "convrnn_glyph_ff")


@dataclass(frozen=True)
class Scale:
    """The budget of a suite: the same for every method of a study."""

    seeds: tuple[int, ...]
    meta_steps: int
    meta_batch_size: int
    inner_steps: int
    eval_tasks: int
    eval_seeds: tuple[int, ...]
    models: tuple[str, ...] = MODELS
    alphabet_counts: tuple[int, ...] = (1, 3, 5, 10, 15, 20, 25)
    alphabet_models: tuple[str, ...] = ("conv4", "convrnn_glyph")
    alphabet_counts_by_model: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """(model, counts) pairs that replace `alphabet_counts` for that model (the costly
    recurrent model runs fewer points of Figure 3)."""
    alphabet_meta_steps: int = 0
    """Meta-steps of each Figure-3 run (0: `meta_steps`)."""
    multicv_meta_steps: int = 0
    """Meta-steps of each Table-1 run (0: `meta_steps`)."""
    glyph_options: tuple[str, ...] = ()
    """Overrides added to every glyph run (the tiny scale shrinks the data)."""
    model_options: tuple[tuple[str, str], ...] = ()
    """(model, override) pairs added to that model's runs (the tiny scale shrinks them)."""
    multicv_options: tuple[str, ...] = ()
    """Overrides added to every Multi-CV run (the tiny scale shrinks the data)."""

    def counts(self, model: str) -> tuple[int, ...]:
        """The numbers of meta-training alphabets of `model`'s Figure-3 runs."""
        return dict(self.alphabet_counts_by_model).get(model, self.alphabet_counts)


SCALES = {
    "full": Scale(
        seeds=(0, 1, 2),
        meta_steps=25,
        meta_batch_size=5,
        inner_steps=40,
        eval_tasks=10,
        eval_seeds=(0,),
        alphabet_meta_steps=15,
        alphabet_counts_by_model=(("convrnn_glyph", (1, 5, 15, 25)),),
        multicv_meta_steps=15,
        model_options=(("conv4", "model.options.width=32"),),
    ),
    "quick": Scale(
        seeds=(0,),
        meta_steps=6,
        meta_batch_size=3,
        inner_steps=20,
        eval_tasks=5,
        eval_seeds=(0,),
        alphabet_counts=(1, 5, 25),
        alphabet_models=("conv4",),
        model_options=(("conv4", "model.options.width=32"),),
    ),
    "tiny": Scale(
        seeds=(0,),
        meta_steps=1,
        meta_batch_size=2,
        inner_steps=2,
        eval_tasks=2,
        eval_seeds=(0,),
        models=("conv4", "convrnn_glyph"),
        alphabet_counts=(1, 3),
        alphabet_models=("conv4",),
        glyph_options=(
            "task.options.alphabets=12",
            "task.options.train_alphabets=6",
            "task.options.test_alphabets=3",
            "task.options.ways=5",
        ),
        model_options=(
            ("conv4", "model.options.width=4"),
            ("convrnn_glyph", "++model.options.width=0.125"),
            ("convrnn_glyph_ff", "++model.options.width=0.125"),
        ),
        multicv_options=("task.options.glyph_alphabets=2", "task.options.test_examples=20"),
    ),
}


@dataclass(frozen=True)
class Job:
    """One `leap` command (argv after `leap`), the study it belongs to, and the label its
    time is counted under (the point of the study and the method)."""

    study: str
    argv: tuple[str, ...]
    label: str = "evaluate"
    cost: float = 0.0
    """Its relative cost (inner steps times the model's step cost); costlier jobs start
    first, so the last ones to finish are short."""

    @property
    def key(self) -> str:
        """A name for the job that changes with any of its arguments."""
        return hashlib.sha1("\0".join(self.argv).encode()).hexdigest()[:16]


@dataclass
class Study:
    """A study's training jobs, its evaluate jobs (after every training job of the
    suite), and where its runs live."""

    name: str
    train: list[Job] = field(default_factory=list)
    evaluate: list[Job] = field(default_factory=list)


def _budget(scale: Scale, model: str, meta_steps: int | None = None) -> list[str]:
    """The scale's budget for a run of `model`, the same for every method."""
    steps = meta_steps or scale.meta_steps
    return [
        f"meta.meta_steps={steps}",
        f"meta.meta_batch_size={scale.meta_batch_size}",
        f"meta.inner_steps={scale.inner_steps}",
        f"eval.steps={scale.inner_steps}",
        f"eval.tasks={scale.eval_tasks}",
        f"eval.seeds=[{','.join(map(str, scale.eval_seeds))}]",
        "progress=false",
        "checkpoint_every=1000000",
        *[override for name, override in scale.model_options if name == model],
    ]


STEP_COST = {"conv4": 1.0, "convrnn_glyph": 6.0, "convrnn_glyph_ff": 2.0}
"""A training step's cost relative to conv4's (measured on one CPU thread), for ordering."""
ADAPTATION_CAP = {"maml": 5, "fomaml": 5}
"""Methods whose meta-training adapts for at most this many steps (meta/NAME.yaml)."""


def _cost(scale: Scale, model: str, method: str, meta_steps: int | None = None) -> float:
    steps = min(scale.inner_steps, ADAPTATION_CAP.get(method, scale.inner_steps))
    total = (meta_steps or scale.meta_steps) * scale.meta_batch_size * steps
    return total * STEP_COST.get(model, 1.0)


def _evaluation_cost(scale: Scale, model: str, initializations: int) -> float:
    runs = initializations * scale.eval_tasks * len(scale.eval_seeds)
    return runs * scale.inner_steps * STEP_COST.get(model, 1.0)


def _comparison_base(scale: Scale, work: Path, model: str) -> list[str]:
    """The overrides shared by the comparison's runs of `model`, training and evaluate."""
    base = ["experiment=suite_glyphs", f"model={model}", *_budget(scale, model)]
    return [*base, *scale.glyph_options, *_where(work, "comparison", model)]


def _train_job(
    scale: Scale, work: Path, study: str, model: str, method: str, seed: int, label: str
) -> Job:
    """The comparison's run of `method` on `model` with training seed `seed`, counted
    under `study` and `label` (the ablation's Leap variant is this run too)."""
    argv = ("train", *_comparison_base(scale, work, model), f"meta={method}", f"seed={seed}")
    return Job(study, argv, label, _cost(scale, model, method))


def _where(work: Path, study: str, point: str) -> list[str]:
    return [f"out_dir={work / 'runs' / study / point}", f"tracker.dir={work}"]


def _listed(values: Sequence[Any]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def comparison(scale: Scale, work: Path) -> Study:
    """Every method on every model, `scale.seeds` training seeds each."""
    study = Study("comparison")
    for model in scale.models:
        for method in METHODS:
            for seed in scale.seeds:
                study.train.append(
                    _train_job(scale, work, study.name, model, method, seed, f"{model}/{method}")
                )
        argv = (
            "evaluate",
            *_comparison_base(scale, work, model),
            f"eval.methods={_listed(METHODS)}",
            f"eval.train_seeds={_listed(scale.seeds)}",
        )
        cost = _evaluation_cost(scale, model, (len(METHODS) + 1) * len(scale.seeds))
        study.evaluate.append(Job(study.name, argv, cost=cost))
    return study


ALPHABET_METHODS = ("leap", "reptile", "finetune")


def alphabets(scale: Scale, work: Path) -> Study:
    """Figure 3: each method meta-trained on 1, 3, ... training alphabets."""
    study = Study("alphabets")
    for model in scale.alphabet_models:
        for count in scale.counts(model):
            point = f"{model}-{count}"
            base = [
                "experiment=suite_glyphs",
                f"model={model}",
                *_budget(scale, model, scale.alphabet_meta_steps),
                *scale.glyph_options,
                f"task.options.train_alphabets={count}",
                *_where(work, study.name, point),
            ]
            for method in ALPHABET_METHODS:
                argv = ("train", *base, f"meta={method}", "seed=0")
                cost = _cost(scale, model, method, scale.alphabet_meta_steps)
                study.train.append(Job(study.name, argv, f"{point}/{method}", cost))
            argv = ("evaluate", *base, f"eval.methods={_listed(ALPHABET_METHODS)}")
            cost = _evaluation_cost(scale, model, len(ALPHABET_METHODS) + 1)
            study.evaluate.append(Job(study.name, argv, cost=cost))
    return study


ABLATIONS = {
    "leap": (),
    "energy": ("meta.options.metric=energy",),
    "no_loss": ("meta.options.loss_in_manifold=false",),
    "no_stabilizer": ("meta.options.stabilizer=false",),
}
"""Appendix C's variants of Leap: label -> the options that differ from the default."""


def ablation(scale: Scale, work: Path) -> Study:
    """Leap's options on `convrnn_glyph`, one initialization per variant and seed (the
    default variant is the comparison's Leap run of the same seed)."""
    study = Study("ablation")
    model = "convrnn_glyph"
    inits = []
    for label, options in ABLATIONS.items():
        base = ["experiment=suite_glyphs", f"model={model}", "meta=leap"]
        base += [*_budget(scale, model), *scale.glyph_options, *_where(work, study.name, label)]
        where = work / "runs" / (f"{study.name}/{label}" if options else f"comparison/{model}")
        for seed in scale.seeds:
            if options:
                argv = ("train", *base, *options, f"seed={seed}")
                job = Job(study.name, argv, f"{model}/{label}", _cost(scale, model, "leap"))
            else:
                job = _train_job(scale, work, study.name, model, "leap", seed, f"{model}/{label}")
            study.train.append(job)
        paths = [where / f"suite_glyphs-leap-{model}-seed{s}" / "init.pt" for s in scale.seeds]
        inits.append(f"+eval.inits.{label}={_listed(paths)}")
    evaluate = ["experiment=suite_glyphs", f"model={model}", *_budget(scale, model)]
    evaluate += [*scale.glyph_options, *_where(work, study.name, "evaluate")]
    cost = _evaluation_cost(scale, model, (len(ABLATIONS) + 1) * len(scale.seeds))
    argv = ("evaluate", *evaluate, *inits, "eval.reference=leap")
    study.evaluate.append(Job(study.name, argv, cost=cost))
    return study


MULTICV_METHODS = ("leap", "finetune")
MULTICV_OPTIONS = {"leap": ("meta.options.metric=energy",)}
"""Per method, the Multi-CV protocol's own options (Appendix E: Leap with the energy metric)."""


def multicv(scale: Scale, work: Path) -> Study:
    """Table 1: Leap, finetuning and Scratch on the offline Multi-CV sets."""
    study = Study("multicv")
    base = ["experiment=suite_multicv", *_budget(scale, "conv4", scale.multicv_meta_steps)]
    base += [*scale.multicv_options, *_where(work, study.name, "conv4")]
    for method in MULTICV_METHODS:
        options = MULTICV_OPTIONS.get(method, ())
        for seed in scale.seeds:
            argv = ("train", *base, f"meta={method}", *options, f"seed={seed}")
            cost = _cost(scale, "conv4", method, scale.multicv_meta_steps)
            study.train.append(Job(study.name, argv, f"conv4/{method}", cost))
    argv = (
        "evaluate",
        *base,
        f"eval.methods={_listed(MULTICV_METHODS)}",
        f"eval.train_seeds={_listed(scale.seeds)}",
    )
    cost = _evaluation_cost(scale, "conv4", (len(MULTICV_METHODS) + 1) * len(scale.seeds))
    study.evaluate.append(Job(study.name, argv, cost=cost))
    return study


STUDIES: dict[str, Callable[[Scale, Path], Study]] = {
    "comparison": comparison,
    "alphabets": alphabets,
    "ablation": ablation,
    "multicv": multicv,
}


def _worker_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["WANDB_SILENT"] = "true"


def _run(job: Job) -> tuple[Job, int, float, str]:
    """Run one job (`leap train` or `leap evaluate`) in this process; its exit code (as
    the `leap` command's), seconds and error line."""
    from experiments.config import compose
    from experiments.evaluate import evaluate
    from experiments.runner import train
    from leap_convrnn.errors import RunStopped

    started = time.perf_counter()
    command, *overrides = job.argv
    code, error = 0, ""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cfg = compose(overrides)
            if command == "train":
                train(cfg)
            else:
                evaluate(cfg)
        except UserError as failure:
            code, error = 2, str(failure)
        except RunStopped as stopped:
            code, error = stopped.exit_code, str(stopped)
    return job, code, time.perf_counter() - started, error


def _mark_finished(marker: Path, job: Job, seconds: float) -> None:
    from experiments.checkpoint import atomic_write

    record = json.dumps({"argv": list(job.argv), "seconds": seconds}).encode()

    def write(out: IO[bytes]) -> None:
        out.write(record)

    atomic_write(marker, write)


def run_jobs(
    jobs: Sequence[Job], workers: int, log: Callable[[str], None], finished: Path
) -> dict[str, dict[str, float]]:
    """Run `jobs` on `workers` processes, the costliest first, once each (a job listed
    twice runs once and its seconds count once, under the first study that lists it);
    stop at the first failure with its error. A job that finished before (its marker is
    in `finished`) is not run again; its recorded seconds count. Returns the seconds
    spent per study and label (summed over seeds)."""
    seconds: dict[str, dict[str, float]] = {}

    def count(job: Job, spent: float) -> None:
        spent_by_label = seconds.setdefault(job.study, {})
        spent_by_label[job.label] = spent_by_label.get(job.label, 0.0) + spent

    unique: dict[tuple[str, ...], Job] = {}
    for job in jobs:
        unique.setdefault(job.argv, job)
    pending = []
    for job in unique.values():
        marker = finished / f"{job.key}.json"
        if marker.is_file():
            count(job, float(json.loads(marker.read_text())["seconds"]))
        else:
            pending.append(job)
    if len(pending) < len(unique):
        log(f"leap results: {len(unique) - len(pending)} jobs finished before are not run again")
    pending.sort(key=lambda job: job.cost, reverse=True)
    finished.mkdir(parents=True, exist_ok=True)
    context = get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, context, _worker_setup, (threads,)) as pool:
        for index, (job, code, spent, err) in enumerate(pool.map(_run, pending), start=1):
            log(f"[{index}/{len(pending)}] {spent:6.1f}s  leap {' '.join(job.argv[:4])} ...")
            if code != 0:
                raise UserError(
                    f"`leap {' '.join(job.argv)}` failed with exit code {code}: "
                    + (err or "no message")
                )
            count(job, spent)
            _mark_finished(finished / f"{job.key}.json", job, spent)
    return seconds


def evaluation_summary(run_dir: Path) -> dict[str, Any]:
    """The summary and per-task curves an evaluate run wrote to its run directory."""
    summary = json.loads((run_dir / "summary.json").read_text())
    curves = json.loads((run_dir / "curves.json").read_text())
    return {"summary": summary, "curves": curves}


def collect(work: Path, studies: Sequence[Study]) -> dict[str, Any]:
    """Every evaluate run's summary and curves, by study and point, and every Leap
    meta-training run's `meta/` curves."""
    out: dict[str, Any] = {}
    for study in studies:
        points: dict[str, Any] = {}
        for run_dir in sorted((work / "runs" / study.name).glob("*/*-eval")):
            points[run_dir.parent.name] = evaluation_summary(run_dir)
        meta_curves: dict[str, Any] = {}
        for metrics in sorted((work / "runs" / study.name).glob("*/*-leap-*-seed*/metrics.jsonl")):
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
            meta_curves[f"{metrics.parent.parent.name}/{metrics.parent.name}"] = [
                {k: v for k, v in row.items() if k.startswith(("meta/", "task/", "_step"))}
                for row in rows
            ]
        out[study.name] = {"evaluations": points, "meta_training": meta_curves}
    return out


def model_costs(overrides: Sequence[str]) -> dict[str, float]:
    """The parameter count and forward FLOPs per image of the model that `overrides`
    compose to (FLOPs counted by torch's FlopCounterMode on one input of the task's
    shape; a training step costs about three times the forward pass)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from experiments.config import compose
    from experiments.runner import build_model, task_distribution

    cfg = compose(list(overrides))
    dist = task_distribution(cfg, "train")
    model = build_model(cfg, dist)
    counter = FlopCounterMode(display=False)
    model.eval()
    with counter:
        model(torch.zeros(1, *dist.input_shape))
    return {
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "forward_flops": float(counter.get_total_flops()),
    }


REPRESENTATION_TASKS = 5
"""Held-out tasks of the representations study (at most; fewer when the scale has fewer)."""


def representations(scale: Scale, work: Path) -> dict[str, Any]:
    """`leap analyze --study leap_vs_scratch` on the comparison's Leap `convrnn_glyph`
    (training seed `scale.seeds[0]`): RSA between Leap, Scratch and the feedforward twin,
    before and after each held-out task's inner loop. Returns the study's maps."""
    from experiments.analysis.analyze import AnalysisRequest
    from experiments.analysis.study import MODEL, run_study

    run = f"suite_glyphs-leap-{MODEL}-seed{scale.seeds[0]}"
    request = AnalysisRequest(
        checkpoint=str(work / "runs" / "comparison" / MODEL / run / "init.pt"),
        data_root=os.environ.get("LEAP_DATA_ROOT", "~/.cache/leap-convrnn"),
        out_dir=str(work / "runs" / "representations"),
        name="leap_vs_scratch",
    )
    overrides = [*scale.glyph_options, *[o for m, o in scale.model_options if m == MODEL]]
    with contextlib.redirect_stdout(io.StringIO()):
        return run_study(
            "leap_vs_scratch",
            request,
            tasks=min(REPRESENTATION_TASKS, scale.eval_tasks),
            steps=scale.inner_steps,
            experiment="suite_glyphs",
            overrides=[f"model={MODEL}", *overrides],
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `leap results`."""
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="full",
        help="the budget: full (docs/results.md, 79 min on 2 cores), quick (minutes), "
        "tiny (the tests')",
    )
    parser.add_argument("--studies", nargs="+", choices=list(STUDIES), default=list(STUDIES))
    parser.add_argument("--work-dir", default="suite", help="where the runs go (default: suite)")
    parser.add_argument("--docs", default="docs", help="where the report goes (default: docs)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from finished runs"
    )


def run_suite(args: argparse.Namespace) -> int:
    """Run the studies that `args` select and write the report; returns the exit code."""
    from experiments.results_report import write_report

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} is not a positive number of runs at a time")
    scale = SCALES[args.scale]
    work = Path(args.work_dir).resolve()
    docs = Path(args.docs)
    studies = [STUDIES[name](scale, work) for name in args.studies]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    seconds: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    if not args.report_only:
        trains = [job for study in studies for job in study.train]
        evaluations = [job for study in studies for job in study.evaluate]
        runs = len({job.argv for job in trains})
        log(f"leap results: {runs} training runs, then {len(evaluations)} evaluations")
        finished = work / "finished"
        for spent in (
            run_jobs(trains, args.jobs, log, finished),
            run_jobs(evaluations, args.jobs, log, finished),
        ):
            for study, by_label in spent.items():
                seconds.setdefault(study, {}).update(by_label)
    studied = collect(work, studies)
    if "comparison" in args.studies and "convrnn_glyph" in scale.models:
        if not args.report_only:
            log("leap results: the representations study (leap analyze --study leap_vs_scratch)")
            representations(scale, work)
        study_file = work / "runs" / "representations" / "leap_vs_scratch" / "study.json"
        if study_file.is_file():
            studied["representations"] = json.loads(study_file.read_text())
    wall = time.perf_counter() - started
    record: dict[str, Any] = {
        "scale": args.scale,
        "budget": asdict(scale),
        "wall_seconds": wall,
        "job_seconds": seconds,
        "jobs": args.jobs,
        "models": {
            model: model_costs(
                [
                    "experiment=suite_glyphs",
                    f"model={model}",
                    *scale.glyph_options,
                    *[o for name, o in scale.model_options if name == model],
                ]
            )
            for model in scale.models
        },
        "studies": studied,
    }
    if args.report_only and (docs / "results.json").is_file():
        previous = json.loads((docs / "results.json").read_text())
        record.update({k: previous[k] for k in ("wall_seconds", "job_seconds", "jobs")})
    path = write_report(record, docs)
    log(f"leap results: wrote {path} ({wall / 60:.1f} min)")
    return 0
