"""Synthetic neural responses with a known answer, to check `leap analyze --neural` end to end.

Each time bin's neurons respond as a random linear map of one (layer, step) of a model's
features (z-scored), scaled to unit variance, plus Gaussian noise on each repetition. The
noise is set so that stimuli explain `explained` of the variance of the mean over the
repetitions: the fits should find each bin's source layer-step, at an R² a little under
`explained` (estimation error), and the noise ceiling should be about `explained`.

    python -m experiments.analysis.synthetic --model convrnn_glyph --stimuli glyphs:200 \\
        --source conv2@0 --source conv4@2 --pool 2 --out synthetic.npz
    leap analyze --model convrnn_glyph --stimuli neural --neural synthetic.npz --pool 2

The file holds `repetitions` (repeats, images, neurons, bins), `images` (the stimuli as
shown, so `--stimuli neural` shows the same ones) and `sources`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.analysis.extract import load_model, read_features
from experiments.analysis.stimuli import load_stimuli, to_shape
from leap_convrnn.errors import UserError


def parse_source(text: str) -> tuple[str, int]:
    """`LAYER@STEP` -> (layer, step)."""
    layer, sep, step = text.partition("@")
    if not sep or not layer or not step.isdigit():
        raise UserError(f"source {text!r} must be LAYER@STEP, e.g. conv4@2")
    return layer, int(step)


def synthetic_repetitions(
    features: dict[tuple[str, int], np.ndarray],
    sources: Sequence[tuple[str, int]],
    neurons: int,
    explained: float,
    repeats: int,
    seed: int = 0,
) -> np.ndarray:
    """(repeats, images, neurons, bins): bin b is a linear map of `features[sources[b]]`
    plus noise, with `explained` of the mean response's variance due to the stimuli."""
    if not 0.0 < explained < 1.0:
        raise UserError(f"explained must be in (0, 1), got {explained}")
    if repeats < 2 or neurons < 1:
        raise UserError(f"need repeats >= 2 and neurons >= 1, got {repeats} and {neurons}")
    rng = np.random.default_rng(seed)
    missing = [s for s in sources if s not in features]
    if missing:
        raise UserError(f"source {missing[0]} is not among the features read: {list(features)}")
    images = next(iter(features.values())).shape[0]
    out = np.empty((repeats, images, neurons, len(sources)))
    noise_sd = np.sqrt((1.0 - explained) / explained * repeats)
    for b, source in enumerate(sources):
        x = np.asarray(features[source], dtype=np.float64)
        z = (x - x.mean(0)) / (x.std(0) + 1e-12)
        signal = z @ rng.normal(size=(z.shape[1], neurons))
        signal = (signal - signal.mean(0)) / (signal.std(0) + 1e-12)
        out[..., b] = signal + noise_sd * rng.normal(size=(repeats, images, neurons))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.synthetic",
        description="Write a neural file whose responses are made from chosen layer-steps.",
    )
    parser.add_argument("--model", default=None, help="a registered model name")
    parser.add_argument("--checkpoint", default=None, help="or a checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="model draw and noise seed")
    parser.add_argument("--stimuli", default="glyphs:200", help="stimulus set (leap analyze's)")
    parser.add_argument("--image-size", type=int, default=None, help="image side, no checkpoint")
    parser.add_argument(
        "--source", action="append", required=True, help="LAYER@STEP of one bin (repeatable)"
    )
    parser.add_argument("--neurons", type=int, default=20)
    parser.add_argument("--explained", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--pool", type=int, default=None, help="as leap analyze --pool")
    parser.add_argument(
        "--data-root", default=os.environ.get("LEAP_DATA_ROOT", "~/.cache/leap-convrnn")
    )
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    try:
        sources = [parse_source(s) for s in args.source]
        stimuli = load_stimuli(args.stimuli, args.data_root)
        size = args.image_size or int(stimuli.images.shape[-1])
        shape = (int(stimuli.images.shape[1]), size, size)
        loaded = load_model(args.model, args.checkpoint, shape, args.seed)
        images = to_shape(stimuli.images, loaded.input_shape)
        layers = sorted({layer for layer, _ in sources})
        steps = sorted({step for _, step in sources})
        features = read_features(loaded.model, images, layers, steps, args.pool)
        reps = synthetic_repetitions(
            {k: v.numpy() for k, v in features.items()},
            sources,
            args.neurons,
            args.explained,
            args.repeats,
            args.seed,
        )
    except UserError as error:
        print(f"synthetic: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    np.savez(
        out,
        repetitions=reps,
        images=images.numpy(),
        sources=np.array([f"{layer}@{step}" for layer, step in sources]),
    )
    print(f"wrote {out}: {reps.shape[1]} images, {args.neurons} neurons, {len(sources)} bins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
