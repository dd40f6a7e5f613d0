"""Hydra multirun sweeps: every job a W&B run in the experiment's group, read back by
`leap compare --group`."""

from __future__ import annotations

from experiments.cli import main
from experiments.runs import read_local_runs
from tests.conftest import SMALL_GLYPHS

TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=4",
    "meta.meta_steps=1",
    "meta.meta_batch_size=1",
    "meta.batch_size=20",
]


def test_a_2x2_multirun_is_4_runs_in_one_group_and_compare_shows_them(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-m", *TINY, "meta=leap,reptile", "seed=0,1"]) == 0
    runs = read_local_runs(tmp_path)
    assert len(runs) == 4
    assert {r.group for r in runs} == {"glyphs_demo"}
    assert {r.job_type for r in runs} == {"meta-train"}
    assert sorted((r.key[2], r.config["seed"]) for r in runs) == [
        ("leap", 0),
        ("leap", 1),
        ("reptile", 0),
        ("reptile", 1),
    ]
    capsys.readouterr()

    assert main(["compare", "--group", "glyphs_demo", "--markdown"]) == 0
    out = capsys.readouterr().out
    for method in ("leap", "reptile"):
        row = f"| glyphs_demo | meta-train | {method} | conv4 | glyphs | - | - | task/auc |"
        [line] = [line for line in out.splitlines() if line.startswith(row)]
        assert line.endswith("| 2 |"), line  # two seeds per method
