"""`device=`: which names are accepted, a one-line error for CUDA that torch cannot reach,
and (marked `gpu`, where a CUDA device is present) train and evaluate on CUDA giving the
figures of the same run on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.cli import main
from experiments.config import compose, resolve_device
from experiments.evaluate import evaluate
from experiments.runner import train
from leap_convrnn.errors import UserError
from tests.conftest import SMALL_GLYPHS

TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=4",
    "tracker=none",
    "progress=false",
]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "auto"])
def test_device_names_are_accepted(name):
    assert compose([f"device={name}"]).device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "tpu"])
def test_an_unknown_device_is_one_line_with_exit_code_2(name, capsys):
    with pytest.raises(UserError, match=f"unknown device='{name}'; accepted: cpu, cuda"):
        compose([f"device={name}"])
    assert main(["train", f"device={name}", "--cfg", "job"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@NO_CUDA
def test_auto_is_the_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")


@NO_CUDA
def test_cuda_without_cuda_stops_training_before_any_work(tmp_path: Path, capsys):
    code = main(["train", *TINY, "device=cuda", f"out_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "device=cuda but torch finds no CUDA device" in err and "device=cpu or auto" in err
    assert not list(tmp_path.glob("*/init.pt"))


def _figures(device: str, out_dir: Path) -> tuple[dict, dict]:
    overrides = [*TINY, f"device={device}", f"out_dir={out_dir}"]
    summary = train(compose(overrides))
    evaluation = evaluate(compose(overrides)).summary()
    return summary, evaluation


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_train_and_evaluate_give_the_cpu_figures(tmp_path: Path):
    cpu, cpu_eval = _figures("cpu", tmp_path / "cpu")
    cuda, cuda_eval = _figures("cuda", tmp_path / "cuda")
    assert cuda["task/auc"] == pytest.approx(cpu["task/auc"], rel=1e-3)
    for key in ("eval/leap/auc", "eval/scratch/auc"):
        assert key in cuda_eval and cuda_eval[key] == pytest.approx(cpu_eval[key], rel=1e-2)
