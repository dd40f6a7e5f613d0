"""The `leap analyze` subcommand: its arguments and its entry point.

    leap analyze --model rgc_intermediate --compare-model rgc_intermediate_ff \\
        --compare-checkpoint shared --stimuli skimage:16 --image-size 64
    leap analyze --checkpoint runs/x/init.pt --neural v4_it --stimuli neural
    leap analyze --study leap_vs_scratch --checkpoint runs/x/init.pt
"""

from __future__ import annotations

import argparse
import os

DESCRIPTION = """\
Read a model's features at every layer and time step on a stimulus set, and compare them
with another model's (RSA: an RDM per layer and step, compared by Spearman or Kendall
correlation) and/or with neural responses (cross-validated ridge per neuron and time bin,
with the split-half noise ceiling when the file holds repetitions). Maps of layer x time
step go to W&B (images and tables) and to <out-dir>/<name>/. A bad value is a one-line
error and exit code 2."""

EPILOG = """\
stimulus sets: glyphs[:N] (N glyph images, default 64), skimage[:N] (scikit-image's bundled
images), neural (the 'images' of the neural file), or a .npy/.npz path holding (N, H, W),
(N, C, H, W) or (N, H, W, C) images (an npz under the key 'images').
neural file: .npy (images, neurons[, bins]) or .npz with 'responses' (images, neurons, bins)
and/or 'repetitions' (repeats, images, neurons, bins) and optionally 'images'; a bare name
is read from <data-root>/neural/NAME.npz (e.g. V4 / IT recordings you have put there).
studies: leap_vs_scratch (needs --checkpoint: a Leap init of convrnn_glyph on glyphs)."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma list of integers (e.g. 0,1,2)"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one time step")
    return values


def _names(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one layer name")
    return values


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `analyze` on the `leap` command's subparsers."""
    text = "compare a model's layer x time-step representations with a model or neural data"
    p = sub.add_parser(
        "analyze",
        help=text,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model A (the model analyzed)")
    g.add_argument("--model", default=None, help="a registered model name, e.g. convrnn_glyph")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="an initialization or trained-model checkpoint (init.pt); names its own model",
    )
    g.add_argument("--seed", type=int, default=0, help="draws a model that has no checkpoint")
    g.add_argument(
        "--layers", type=_names, default=None, help="comma list of layers (default: all)"
    )
    g.add_argument(
        "--steps",
        "--times",
        dest="steps",
        type=_int_list,
        default=None,
        help="comma list of time steps, 0-based (default: every unrolled step)",
    )
    g.add_argument(
        "--pool",
        type=int,
        default=None,
        help="average-pool each layer's maps to POOL x POOL before flattening (default: none)",
    )
    g = p.add_argument_group("stimuli")
    g.add_argument(
        "--stimuli", default="glyphs:64", help="stimulus set (see below; default: glyphs:64)"
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side of the images shown to a model without checkpoint (default: the set's)",
    )
    g = p.add_argument_group("model B (RSA)")
    g.add_argument("--compare-model", default=None, help="the model to compare with (RSA)")
    g.add_argument(
        "--compare-checkpoint",
        default=None,
        help="its checkpoint, or 'shared': model A's weights for the parameters both have "
        "(e.g. a ConvRNN and its _ff twin); default: drawn from seed+1",
    )
    g.add_argument(
        "--metric",
        default="spearman",
        help="RDM comparison: spearman or kendall (tau-b) (default: spearman)",
    )
    g.add_argument(
        "--distance",
        default="correlation",
        help="RDM distance: correlation (1 - Pearson r) or euclidean (default: correlation)",
    )
    g = p.add_argument_group("neural data (fits)")
    g.add_argument("--neural", default=None, help="neural file or data-set name (see below)")
    g.add_argument(
        "--fit-metric", default="r2", help="score of the fits: r2 or pearson (default: r2)"
    )
    g.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    g = p.add_argument_group("run")
    g.add_argument(
        "--study",
        default=None,
        help="run a packaged study instead (leap_vs_scratch); --checkpoint is its Leap init",
    )
    g.add_argument(
        "--study-tasks", type=int, default=3, help="held-out tasks of a study (default: 3)"
    )
    g.add_argument(
        "--study-steps",
        type=int,
        default=None,
        help="inner steps on each task of a study (default: the experiment's eval.steps)",
    )
    g.add_argument(
        "--data-root",
        default=os.environ.get("LEAP_DATA_ROOT", "~/.cache/leap-convrnn"),
        help="data.root: glyph cache and neural/NAME.npz (default: $LEAP_DATA_ROOT or "
        "~/.cache/leap-convrnn)",
    )
    g.add_argument("--out-dir", default="runs", help="runs directory (default: runs)")
    g.add_argument("--name", default=None, help="run name (default: from models and stimuli)")
    g.add_argument("--tracker", default="wandb", help="wandb (offline without an API key) or none")
    g.add_argument("--project", default="leap-convrnn", help="W&B project")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run `leap analyze` for parsed `args`; UserError propagates to the CLI (exit 2)."""
    from experiments.analysis.analyze import AnalysisRequest, analyze

    request = AnalysisRequest(
        model=args.model,
        checkpoint=args.checkpoint,
        seed=args.seed,
        stimuli=args.stimuli,
        image_size=args.image_size,
        layers=args.layers,
        steps=args.steps,
        pool=args.pool,
        compare_model=args.compare_model,
        compare_checkpoint=args.compare_checkpoint,
        metric=args.metric,
        distance=args.distance,
        neural=args.neural,
        fit_metric=args.fit_metric,
        folds=args.folds,
        data_root=args.data_root,
        out_dir=args.out_dir,
        name=args.name,
        tracker=args.tracker,
        project=args.project,
        device=args.device,
    )
    if args.study is not None:
        from experiments.analysis.study import run_study

        run_study(args.study, request, tasks=args.study_tasks, steps=args.study_steps)
        return 0
    result = analyze(request)
    print(f"figures and tables in {result.run_dir}")
    return 0
