"""`leap train -m` through Hydra's launcher plugins: the basic launcher (in this process)
and joblib (local processes) each run a 2x2 sweep whose W&B runs form one group (slow:
`pytest -m slow tests/experiments/test_launchers.py`); a bad value in any job stops the
sweep before it starts, in one line; a stopped job's exit code is the sweep's."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.cli import main
from experiments.runs import load_runs
from tests.conftest import SMALL_GLYPHS

SWEEP = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=4",
    "meta.meta_steps=1",
    "meta=leap,reptile",
    "seed=0,1",
]


@pytest.mark.slow  # about 45 s each on 2 busy cores (W&B starts 4 runs)
@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["basic", "joblib"],
)
def test_a_2x2_sweep_is_four_runs_in_one_wandb_group(launcher, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("LEAP_DATA_ROOT", str(tmp_path / "data"))
    assert main(["train", "-m", *SWEEP, *launcher]) == 0
    runs = load_runs(tmp_path)
    assert {r.group for r in runs} == {"glyphs_demo"}
    assert sorted((r.key[2], r.config["seed"]) for r in runs) == [
        ("leap", 0),
        ("leap", 1),
        ("reptile", 0),
        ("reptile", 1),
    ]
    for method in ("leap", "reptile"):
        for seed in (0, 1):
            assert (
                tmp_path / "runs" / f"glyphs_demo-{method}-conv4-seed{seed}" / "init.pt"
            ).is_file()
    assert list((tmp_path / "runs" / "sweeps").glob("*/multirun.yaml"))


def test_a_bad_value_in_one_job_stops_the_sweep_before_any_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "-m", *SWEEP[:-1], "tracker=none", "seed=0,-1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("leap: error: seed must be in [0, 2**32)")
    assert not (tmp_path / "runs").exists()


def test_a_failing_job_gives_its_exit_code(tmp_path, monkeypatch, capsys):
    import experiments.runner as runner

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "run_meta_batch", interrupted)
    assert main(["train", "-m", *SWEEP[:-2], "tracker=none", "seed=0,1"]) == 130


def test_launcher_choices_and_their_settings_compose_or_are_one_line(capsys):
    from experiments.config import compose

    compose(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"])
    compose(["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"])
    assert main(["train", "-m", "hydra/launcher=submitit_slrm", "seed=0,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Available options in 'hydra/launcher'" in err
    assert "submitit_slurm" in err and "Config search path" not in err
    assert main(["train", "hydra/launcher=submitit_slurm", "hydra.launcher.partitio=gpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'hydra.launcher.partitio'" in err and "+hydra" not in err
