"""Bad values end with one line naming the value and what is accepted, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from tests.conftest import SMALL_GLYPHS

LEAP = str(Path(sys.executable).with_name("leap"))

CASES = [
    (["train", "model=resnet999"], "unknown model 'resnet999'", "conv4"),
    (["train", "meta=leep"], "unknown meta 'leep' (did you mean leap?)", "scratch"),
    (["train", "task=imagenet"], "unknown task 'imagenet'", "glyphs"),
    (["train", "model.name=nope"], "unknown model 'nope'", "conv4"),
    (["train", "meta.inner_steps=0"], "meta.inner_steps must be > 0, got 0", ""),
    (["train", "meta.meta_steps=-3"], "meta.meta_steps must be > 0, got -3", ""),
    (["train", "meta.meta_lr=0"], "meta.meta_lr must be > 0", ""),
    (["train", "meta.inner_optimizer=lbfgs"], "meta.inner_optimizer='lbfgs'", "adam"),
    (["train", "meta.inner_steps=many"], "meta.inner_steps=many has the wrong type", "int"),
    (["train", "model.options.depth=3"], "unknown option 'depth' for model 'conv4'", "width"),
    (["train", "+model.options.depth=3"], "unknown option 'depth' for model 'conv4'", "width"),
    (["train", "meta.options.metric=area"], "unknown Leap metric 'area'", "energy"),
    (["train", "tracker.mode=sometimes"], "tracker.mode='sometimes'", "offline"),
    (["evaluate", "eval.init=/nonexistent/init.pt"], "'/nonexistent/init.pt' does not exist", ""),
    (["train", "task.options.train_alphabets=60"], "does not fit 12 alphabets", ""),
]


@pytest.mark.parametrize(("argv", "message", "accepted"), CASES, ids=lambda c: str(c)[:40])
def test_bad_value_is_one_line_and_exit_2(argv, message, accepted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([argv[0], *SMALL_GLYPHS, *argv[1:], "tracker=none", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: ") and "\n" not in err
    assert message in err and accepted in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "model=resnet999"],
        ["train", "meta.inner_steps=0"],
        ["evaluate", "eval.init=/x.pt"],
    ],
)
def test_console_command_has_no_traceback(argv, tmp_path):
    out = subprocess.run(
        [LEAP, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "LEAP_DATA_ROOT": str(tmp_path)},
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "init.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", f"eval.init={bad}", "tracker=none"]) == 2
    assert "is unreadable" in capsys.readouterr().err
