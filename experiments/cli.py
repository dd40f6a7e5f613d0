"""The `leap` command: train, evaluate, compare, search, sweep-config, results, analyze.

    leap train experiment=glyphs_leap meta.inner_steps=50
    leap train -m meta=leap,reptile seed=0,1
    leap evaluate experiment=glyphs_leap eval.init=runs/.../init.pt
    leap compare --dir . --group glyphs_demo
    leap analyze --model rgc_intermediate --compare-model rgc_intermediate_ff ...

Arguments after the subcommand are Hydra overrides of the configs in
`experiments/conf/`. A bad value ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.analysis.cli import add_parser as add_analyze_parser
from experiments.results import add_arguments as add_results_arguments
from leap_convrnn.errors import UserError


def _run_one(job: str, overrides: Sequence[str]) -> int:
    """Compose, check and run one job (`train` with distributed=N > 1, outside torchrun,
    runs as N local processes); returns its exit code."""
    from experiments import distributed
    from experiments.config import compose
    from experiments.folders import check_folders

    cfg = compose(overrides)
    check_folders(cfg)
    if job == "train" and cfg.distributed > 1 and not distributed.under_launcher():
        return distributed.launch(["train", *overrides], cfg.distributed)
    (_train if job == "train" else _evaluate)(cfg)
    return 0


def hydra_job(job: str, launched_from: str, node: Any) -> int:
    """The task function Hydra's launcher runs for each job of a sweep (in this process,
    in joblib workers, or on a SLURM node through submitit): the job's overrides are
    composed and checked as `leap train` does, then run in the directory the sweep was
    launched from (where it exists: joblib reuses workers across sweeps, whose working
    directory is the first sweep's). Returns the exit code, so that one-line errors stay
    one line wherever the job runs."""
    import os

    from hydra.core.hydra_config import HydraConfig

    from leap_convrnn.errors import RunStopped

    if os.path.isdir(launched_from):
        os.chdir(launched_from)

    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    print(f"[job {hydra.job.num}] {' '.join(overrides)}", file=sys.stderr)
    try:
        return _run_one(job, overrides)
    except UserError as error:
        print(f"leap: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stopped:
        print(f"leap: {stopped}", file=sys.stderr)
        return stopped.exit_code


def _multirun(job: str, overrides: Sequence[str]) -> int:
    """`-m`: a sweep through Hydra's launcher (`hydra/launcher=basic` by default, `joblib`
    for local processes, `submitit_slurm` for a SLURM cluster). Every job is composed and
    checked first, so a bad value stops the sweep before any job starts."""
    import functools
    import os

    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments.config import CONF_DIR, compose, expand_sweep, store_nodes
    from experiments.folders import check_folders

    is_hydra = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    sweep = expand_sweep([o for o in overrides if o not in is_hydra])
    for cfg in [compose([*job_overrides, *is_hydra]) for job_overrides in sweep]:
        check_folders(cfg)
    print(f"sweep: {len(sweep)} job(s)", file=sys.stderr)
    store_nodes()
    GlobalHydra.instance().clear()
    try:
        from hydra.core.utils import JobReturn, JobStatus
        from hydra.version import setbase

        setbase("1.3")
        hydra = Hydra.create_main_hydra2(
            task_name=f"leap-{job}", config_search_path=create_config_search_path(str(CONF_DIR))
        )
        from experiments.config import normalize_overrides

        returns = hydra.multirun(
            config_name="config",
            task_function=functools.partial(hydra_job, job, os.getcwd()),
            overrides=normalize_overrides(overrides),
        )
    except (HydraException, OmegaConfBaseException) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UserError(f"sweep: {' '.join(lines[:2])}") from None
    finally:
        GlobalHydra.instance().clear()
    codes = []
    for batch in returns or []:
        for result in batch if isinstance(batch, list) else [batch]:
            if isinstance(result, JobReturn):
                done = result.status == JobStatus.COMPLETED
                codes.append(int(result.return_value) if done else 1)
    return next((code for code in codes if code), 0)


def _run_jobs(job: Callable[[Any], Any], overrides: Sequence[str], multirun: bool) -> int:
    """Run `job` (`_train` or `_evaluate`) on the config of `overrides`, or, with
    `multirun`, on every job of the sweep through Hydra's launcher. Returns the first
    non-zero exit code, or 0."""
    name = "train" if job is _train else "evaluate"
    if multirun:
        return _multirun(name, overrides)
    return _run_one(name, overrides)


def _print_config(overrides: Sequence[str]) -> int:
    """`--cfg job`: the composed config as YAML, every key with its value."""
    from omegaconf import OmegaConf

    from experiments.config import compose

    print(OmegaConf.to_yaml(OmegaConf.structured(compose(overrides))), end="")
    return 0


def _train(cfg: Any) -> None:
    from experiments.runner import train

    summary = train(cfg)
    print(f"initialization saved to {summary['checkpoint']}")


def _evaluate(cfg: Any) -> None:
    from experiments.evaluate import evaluate
    from experiments.report import print_evaluation

    print_evaluation(evaluate(cfg), title=f"{cfg.experiment}: {cfg.model.name} on {cfg.task.name}")


def _compare(args: argparse.Namespace) -> int:
    from experiments.compare import compare
    from experiments.config import TrackerConfig
    from experiments.runs import load_runs
    from experiments.tracking import resolve_wandb_mode

    project = args.project
    if project is None and args.dir is None and resolve_wandb_mode("auto") == "online":
        defaults = TrackerConfig()
        project = f"{defaults.entity}/{defaults.project}" if defaults.entity else defaults.project
    runs = load_runs(Path(args.dir or "."), project=project, group=args.group)
    compare(
        runs,
        metrics=args.metric or None,
        markdown=args.markdown,
        plots=Path(args.plots) if args.plots else None,
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from experiments.search import load_space, print_search, search

    result = search(
        load_space(args.space),
        args.overrides,
        trials=args.trials,
        study=args.study,
        storage=args.storage,
        seed=args.seed,
        objective=args.objective,
    )
    print_search(result)
    return 0


def config_help() -> str:
    """The config groups and their choices, the experiments, and how to see every key."""
    from experiments.config import GROUPS, group_options

    lines = ["config groups (choose with GROUP=CHOICE):"]
    for group in GROUPS:
        lines.append(f"  {group}: {', '.join(group_options(group))}")
    lines += [
        "experiments (experiment=NAME) set a task, model, method and budget together;",
        "  a method swapped in (meta=NAME) keeps its own optimizer and learning rates.",
        "every key and its default: `leap train --cfg job [OVERRIDES]` (the composed",
        "  config; --cfg job experiment=glyphs_demo shows an experiment's values)",
        "override any key: KEY=VALUE (meta.inner_steps=50, model.options.width=32);",
        "  sweep with -m and comma lists (leap train -m meta=leap,reptile seed=0,1)",
    ]
    return "\n".join(lines)


def _link_artifacts(args: argparse.Namespace) -> int:
    from experiments.tracking import link_artifacts

    linked = link_artifacts(args.project, args.group)
    for line in linked:
        print(f"linked {line}")
    print(f"{len(linked)} run(s) linked to their input artifact", file=sys.stderr)
    return 0


def _sweep_config(args: argparse.Namespace) -> int:
    from experiments.search import load_space
    from experiments.wandb_sweep import sweep_config, to_yaml

    config = sweep_config(
        load_space(args.space),
        args.overrides,
        method=args.method,
        metric=args.metric,
        goal=args.goal,
        project=args.project,
    )
    text = to_yaml(config)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}: run `wandb sweep {args.output}`, then `wandb agent SWEEP_ID`")
    else:
        print(text, end="")
    return 0


def build_parser(with_choices: bool = False) -> argparse.ArgumentParser:
    """The `leap` parser; `with_choices` adds the config groups and their choices to
    each subcommand's help (it imports the registries, so only for --help)."""
    parser = argparse.ArgumentParser(
        prog="leap",
        description="Meta-learn ConvRNN initializations with Leap; evaluate and compare them.",
    )
    epilog = config_help() if with_choices else None
    formatter = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("train", "meta-train a method; writes <out_dir>/<run>/init.pt and a W&B run"),
        ("evaluate", "transfer evaluation of an initialization on held-out tasks"),
    ):
        p = sub.add_parser(
            name, help=text, description=text, epilog=epilog, formatter_class=formatter
        )
        p.add_argument("-m", "--multirun", action="store_true", help="sweep over comma lists")
        p.add_argument(
            "--cfg",
            choices=["job"],
            default=None,
            help="print the composed config (every key with its value) and exit",
        )
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. meta.inner_steps=50")
    p = sub.add_parser(
        "compare",
        help="runs side by side: mean and 95%% CI over seeds",
        description="runs side by side: mean and 95%% CI over seeds; runs whose settings "
        "differ in any key but the seed are separate rows",
        epilog=epilog,
        formatter_class=formatter,
    )
    p.add_argument(
        "--dir", default=None, help="read the local runs under DIR/wandb (default: ., when offline)"
    )
    p.add_argument(
        "--project",
        default=None,
        metavar="ENTITY/PROJECT",
        help="read the runs of this W&B project through the public API "
        "(default when logged in: leap-convrnn)",
    )
    p.add_argument("--group", default=None, help="only runs of this experiment group")
    p.add_argument("--metric", action="append", help="a metric to show and plot (repeatable)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--plots",
        default=None,
        metavar="DIR",
        help="write PNG learning curves with 95%% CI bands to DIR",
    )
    text = "TPE search (Optuna) over a search space, e.g. the ConvRNN cell hyperparameters"
    p = sub.add_parser(
        "search", help=text, description=text, epilog=epilog, formatter_class=formatter
    )
    p.add_argument(
        "--space",
        default="convrnn_cell",
        help="a search space in experiments/conf/sweep/ or a YAML path (default: convrnn_cell)",
    )
    p.add_argument(
        "--trials", type=int, default=20, help="finished trials the study should hold (default: 20)"
    )
    p.add_argument("--study", default=None, help="study name (default: the space's name)")
    p.add_argument(
        "--storage",
        default="search.db",
        help="Optuna storage: a SQLite file path or a URL (default: search.db)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument(
        "--objective",
        default=None,
        choices=("auc", "accuracy", "loss"),
        help="held-out figure to optimize (default: the space's; accuracy is maximized)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides of every trial's config")
    text = (
        "a W&B Sweeps YAML from a search space: `wandb sweep` it, and each `wandb agent` "
        "run is `leap train` with the sampled overrides"
    )
    p = sub.add_parser(
        "sweep-config", help=text, description=text, epilog=epilog, formatter_class=formatter
    )
    p.add_argument("--space", default="convrnn_cell", help="a search space (as in leap search)")
    p.add_argument("--method", default="bayes", help="bayes, random or grid (default: bayes)")
    p.add_argument(
        "--metric", default="task/auc", help="the training run's summary metric to optimize"
    )
    p.add_argument("--goal", default=None, help="minimize or maximize (default: the space's)")
    p.add_argument("--project", default=None, help="the W&B project of the sweep")
    p.add_argument("-o", "--output", default=None, help="write the YAML here (default: stdout)")
    p.add_argument("overrides", nargs="*", help="fixed Hydra overrides of every run")
    text = (
        "after `wandb sync` of offline runs: declare each evaluate run's initialization "
        "artifact (recorded offline as input_artifact) through the public API, for lineage"
    )
    p = sub.add_parser("link-artifacts", help=text, description=text)
    p.add_argument("--project", required=True, metavar="ENTITY/PROJECT", help="the W&B project")
    p.add_argument("--group", default=None, help="only runs of this experiment group")
    text = "the evidence suite: every method, model and study; writes docs/results.md"
    p = sub.add_parser("results", help=text, description=text)
    add_results_arguments(p)
    add_analyze_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `leap` console command; returns the exit code.

    Exit codes: 0 done; 1 stopped because every task of a meta-batch was dropped
    (after a checkpoint); 2 a bad value in the input (one line on stderr); 130 / 143
    stopped by SIGINT / SIGTERM (after a checkpoint, when meta-training). Under a
    distributed launcher only rank 0 prints to stdout and reports errors.
    """
    import contextlib
    import os
    import warnings

    from leap_convrnn.errors import LeapWarning, RunStopped, show_warning

    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_choices=bool({"-h", "--help"} & set(arguments)))
    args = parser.parse_args(arguments)
    quiet = os.environ.get("RANK", "0") != "0"
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("always", LeapWarning)
        warnings.showwarning = show_warning
        if quiet:
            devnull = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(devnull))

        def report(message: str) -> None:
            if not quiet:
                print(message, file=sys.stderr)

        try:
            if args.command in ("train", "evaluate") and args.cfg:
                return _print_config(args.overrides)
            if args.command == "train":
                return _run_jobs(_train, args.overrides, args.multirun)
            if args.command == "evaluate":
                return _run_jobs(_evaluate, args.overrides, args.multirun)
            if args.command == "search":
                return _search(args)
            if args.command == "sweep-config":
                return _sweep_config(args)
            if args.command == "link-artifacts":
                return _link_artifacts(args)
            if args.command == "results":
                from experiments.results import run_suite

                return run_suite(args)
            if args.command == "analyze":
                from experiments.analysis.cli import run as analyze

                return analyze(args)
            return _compare(args)
        except UserError as error:
            report(f"leap: error: {error}")
            return 2
        except RunStopped as stopped:
            report(f"leap: {stopped}")
            return stopped.exit_code
        except KeyboardInterrupt:
            report("leap: interrupted")
            return 130


if __name__ == "__main__":
    sys.exit(main())
