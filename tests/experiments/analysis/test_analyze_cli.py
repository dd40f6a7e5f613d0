"""`leap analyze` end to end on tiny models: RSA of a model with itself is 1, neural fits
run from files, W&B gets the maps, and every bad input is one line with exit code 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from experiments.checkpoint import save_initialization
from experiments.cli import main

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny convrnn_glyph checkpoint, 12 stimuli, and neural files for them."""
    root = tmp_path_factory.mktemp("analyze")
    torch.manual_seed(0)
    options = {"width": 0.25}
    model = models.build("convrnn_glyph", SHAPE, 5, **options)
    arch = {
        "model": "convrnn_glyph",
        "options": options,
        "input_shape": list(SHAPE),
        "num_outputs": 5,
    }
    save_initialization(root / "init.pt", model, arch, {})
    rng = np.random.default_rng(0)
    np.save(root / "stimuli.npy", rng.random((12, 16, 16)).astype(np.float32))
    reps = rng.normal(size=(2, 12, 3, 2))
    np.savez(root / "neural.npz", repetitions=reps)
    np.savez(root / "neural13.npz", responses=rng.normal(size=(13, 3, 2)))
    return {
        "root": root,
        "init": root / "init.pt",
        "stimuli": root / "stimuli.npy",
        "neural": root / "neural.npz",
        "neural13": root / "neural13.npz",
    }


def _run(*argv: str) -> int:
    return main(["analyze", *argv])


def test_help_documents_every_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--model",
        "--checkpoint",
        "--stimuli",
        "--neural",
        "--layers",
        "--steps",
        "--metric",
        "--fit-metric",
        "--compare-model",
        "--compare-checkpoint",
    ):
        assert flag in text
    for word in ("spearman", "kendall", "r2", "glyphs", "skimage", "repetitions", "data-root"):
        assert word in text


def test_rsa_of_a_model_with_itself_is_one(files: dict[str, Path], tmp_path: Path) -> None:
    code = _run(
        "--checkpoint",
        str(files["init"]),
        "--compare-checkpoint",
        str(files["init"]),
        "--stimuli",
        str(files["stimuli"]),
        "--tracker",
        "none",
        "--out-dir",
        str(tmp_path),
        "--name",
        "self",
    )
    assert code == 0
    table = json.loads((tmp_path / "self" / "rsa_matched_table.json").read_text())
    assert table["columns"] == ["layer", "0", "1", "2"]
    values = np.array([row[1:] for row in table["rows"]], dtype=float)
    np.testing.assert_allclose(values, 1.0, atol=1e-9)
    assert (tmp_path / "self" / "rsa_matched.png").stat().st_size > 0


def test_twin_with_shared_weights_and_neural_fits_logged_to_wandb(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(
        "--checkpoint",
        str(files["init"]),
        "--compare-model",
        "convrnn_glyph_ff",
        "--compare-checkpoint",
        "shared",
        "--stimuli",
        str(files["stimuli"]),
        "--neural",
        str(files["neural"]),
        "--folds",
        "3",
        "--layers",
        "conv1,conv4",
        "--steps",
        "0,2",
        "--out-dir",
        str(tmp_path),
        "--name",
        "twin",
    )
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "twin"
    table = json.loads((run / "rsa_matched_table.json").read_text())
    rows = {row[0]: row[1:] for row in table["rows"]}
    assert rows["conv1"] == pytest.approx([1.0, 1.0])  # no cell in conv1: the same sweep
    for name in (
        "neural_r2_bin0.png",
        "neural_r2_bin1.png",
        "neural_fits.json",
        "neural_fits.npz",
        "rsa_pairs.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert "neural/ceiling_median" in summary or "neural/best_bin0" in summary
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = {p.name.rsplit("_", 2)[0] for p in offline.glob("files/media/images/**/*.png")}
    assert {"matched", "best", "r2_bin0", "r2_bin1"} <= logged


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--model", "convrnn_glyph", "--neural", "{neural13}", "--stimuli", "{stimuli}"],
            "holds responses to 13 images, but the stimulus set",
        ),
        (
            ["--model", "convrnn_glyph", "--compare-model", "conv4", "--metric", "pearson"],
            "unknown RSA metric 'pearson'; accepted: spearman, kendall",
        ),
        (
            ["--model", "convrnn_glyph", "--neural", "{neural}", "--fit-metric", "mse"],
            "unknown fit metric 'mse'; accepted: r2, pearson",
        ),
        (
            ["--model", "convrnn_glyph", "--compare-model", "conv4", "--stimuli", "imagenet"],
            "unknown stimulus set 'imagenet'; accepted:",
        ),
        (
            [
                "--checkpoint",
                "{init}",
                "--compare-model",
                "conv4",
                "--stimuli",
                "{stimuli}",
                "--layers",
                "conv9",
            ],
            "unknown layer 'conv9'; accepted: conv1",
        ),
        (
            [
                "--checkpoint",
                "{init}",
                "--compare-model",
                "conv4",
                "--stimuli",
                "{stimuli}",
                "--steps",
                "5",
            ],
            "time step 5 is out of range; accepted: 0..2",
        ),
        (
            ["--model", "convrnn_glyph", "--neural", "v4_it", "--stimuli", "neural"],
            "neural data set 'v4_it' is not at",
        ),
        (["--model", "convrnn_glyph"], "nothing to compare with"),
        (
            ["--model", "convrnn_glyph", "--compare-model", "conv4", "--device", "tpu"],
            "unknown device 'tpu'",
        ),
        (
            ["--model", "convrnn_glyph", "--compare-model", "conv4", "--seed", "-1"],
            "seed must be in [0, 2**32)",
        ),
        (
            ["--model", "convrnn_glyph", "--compare-model", "conv4", "--pool", "0"],
            "pool must be >= 1",
        ),
        (
            ["--checkpoint", "missing.pt", "--compare-model", "conv4", "--stimuli", "{stimuli}"],
            "does not exist",
        ),
        (["--model", "nope", "--compare-model", "conv4", "--stimuli", "{stimuli}"], "nope"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    filled = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    code = _run(
        *filled, "--tracker", "none", "--out-dir", str(tmp_path), "--data-root", str(files["root"])
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_synthetic_neurons_are_traced_to_their_layer_and_step(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.analysis import synthetic

    stimuli = tmp_path / "stimuli.npy"
    np.save(stimuli, np.random.default_rng(1).random((120, 16, 16)).astype(np.float32))
    out = tmp_path / "synthetic.npz"
    code = synthetic.main(
        [
            "--checkpoint",
            str(files["init"]),
            "--stimuli",
            str(stimuli),
            "--source",
            "conv1@0",
            "--source",
            "conv4@2",
            "--pool",
            "1",
            "--neurons",
            "6",
            "--explained",
            "0.7",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    code = _run(
        "--checkpoint",
        str(files["init"]),
        "--stimuli",
        "neural",
        "--neural",
        str(out),
        "--pool",
        "1",
        "--tracker",
        "none",
        "--out-dir",
        str(tmp_path),
        "--name",
        "s",
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["neural/best_bin0"] == "conv1@t0"
    assert summary["neural/best_bin1"] == "conv4@t2"
    assert summary["neural/ceiling_median"] == pytest.approx(0.7, abs=0.1)
    # conv4 has 16 features, a fold 96 training images: the held-out R² is the share less
    # the estimation error (1 - share) d / (n - d).
    assert summary["neural/best_r2_bin1"] == pytest.approx(0.7 - 0.3 * 16 / 80, abs=0.08)


@pytest.mark.slow
def test_leap_vs_scratch_study_runs_on_a_tiny_budget(tmp_path: Path) -> None:
    from experiments.analysis.analyze import AnalysisRequest
    from experiments.analysis.study import PAIRS, run_study
    from tests.conftest import SMALL_GLYPHS

    overrides = [*SMALL_GLYPHS, "task.options.ways=5", "task.options.test_shots=4"]
    assert (
        main(
            [
                "train",
                "experiment=glyphs_demo_convrnn",
                "debug=tiny",
                "tracker=none",
                f"out_dir={tmp_path}",
                "name=tiny",
                *overrides,
            ]
        )
        == 0
    )
    request = AnalysisRequest(
        checkpoint=str(tmp_path / "tiny" / "init.pt"),
        tracker="none",
        out_dir=str(tmp_path),
        data_root=os.environ["LEAP_DATA_ROOT"],
    )
    out = run_study("leap_vs_scratch", request, tasks=2, steps=2, overrides=overrides)
    assert set(out["maps"]) == {label for label, _, _ in PAIRS}
    assert out["layers"] == ["conv1", "conv2", "conv3", "conv4"] and out["steps"] == [0, 1, 2]
    assert (tmp_path / "study-leap_vs_scratch" / "study_top_layer.png").is_file()
