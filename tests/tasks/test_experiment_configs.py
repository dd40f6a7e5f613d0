"""This suite's experiment configs, composed as the CLI composes them and run end to end for
a tiny budget (meta-train, then transfer evaluation). The real-data ones read fake files
written under a temporary `data.root`; the offline twin needs nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.config import compose
from experiments.evaluate import evaluate
from experiments.runner import train
from tests.tasks.fake_data import write_multicv, write_omniglot

TINY = ["debug=tiny", "tracker=none", "model.options.width=8"]
FAKE_OMNIGLOT = [  # the fake set has 4 alphabets of >= 5 characters, 4 drawings each
    "task.options.ways=3",
    "task.options.train_shots=3",
    "task.options.test_shots=1",
    "task.options.train_alphabets=2",
    "task.options.test_alphabets=1",
    "task.options.min_characters=5",
]
EXPERIMENTS = {
    "omniglot_leap": FAKE_OMNIGLOT,
    "omniglot_small": FAKE_OMNIGLOT,
    "multicv_leap": ["task.options.test_examples=8"],
    "multicv_small": ["task.options.glyph_alphabets=2", "task.options.test_examples=20"],
    "suite_multicv": ["task.options.glyph_alphabets=2", "task.options.test_examples=20"],
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_runs_end_to_end_for_a_tiny_budget(
    experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_environment
):
    if experiment.startswith("omniglot"):
        root = tmp_path / "data"
        write_omniglot(root, monkeypatch)
    elif experiment == "multicv_leap":
        root = tmp_path / "data"
        write_multicv(root, monkeypatch)
    else:
        root = Path(isolated_environment)  # offline: shares the session's glyph cache
    cfg = compose(
        [
            f"experiment={experiment}",
            *TINY,
            *EXPERIMENTS[experiment],
            f"data.root={root}",
            f"out_dir={tmp_path / 'runs'}",
        ]
    )
    assert cfg.experiment == experiment
    summary = train(cfg)
    assert Path(summary["checkpoint"]).exists()
    assert math.isfinite(summary["task/auc"])
    results = evaluate(cfg)
    methods = {r.method for r in results}
    assert methods == {cfg.meta.name, "scratch"}
    for r in results:
        assert len(r.auc) == 1 and math.isfinite(r.auc[0]) and 0 <= r.held_out["accuracy"][0] <= 1


def test_paper_hyperparameters_are_in_the_full_configs():
    omniglot = compose(["experiment=omniglot_leap"])
    m = omniglot.meta
    assert (m.meta_batch_size, m.batch_size, m.inner_steps, m.meta_steps) == (20, 20, 100, 1000)
    assert (m.inner_optimizer, m.inner_lr, m.meta_optimizer, m.meta_lr) == ("sgd", 0.1, "sgd", 0.1)
    assert omniglot.task.name == "omniglot" and omniglot.task.options["ways"] == 20
    multicv = compose(["experiment=multicv_leap"])
    m = multicv.meta
    assert m.options["metric"] == "energy" and m.meta_batch_size == 10
    assert (m.meta_optimizer, m.meta_lr) == ("adam", 0.01)
    assert multicv.task.name == "multicv"
    assert (m.inner_max_epochs, m.inner_schedule, m.inner_early_stopping_patience) == (
        1,
        "cosine",
        10,
    )


def test_paper_protocol_where_the_paper_is_claimed():
    """The reference code's task definition and augmentation in the *_leap experiments;
    the defaults elsewhere; MAML/FOMAML with the Leap paper's meta SGD 0.5."""
    paper = {"task_definition": "per_alphabet", "split_order": "test_first", "augment": True}
    for experiment in ("omniglot_leap", "glyphs_leap"):
        options = compose([f"experiment={experiment}"]).task.options
        assert {k: options[k] for k in paper} == paper, experiment
    for task in ("glyphs", "omniglot"):
        options = compose([f"task={task}"]).task.options
        assert (options["task_definition"], options["split_order"], options["augment"]) == (
            "random",
            "random",
            False,
        )
    for method, max_steps in (("maml", 5), ("fomaml", None)):
        m = compose([f"meta={method}"]).meta
        assert (m.meta_optimizer, m.meta_lr, m.options["max_steps"]) == ("sgd", 0.5, max_steps)


def test_data_download_reaches_the_real_data_builders():
    for experiment in ("omniglot_leap", "multicv_leap"):
        assert compose([f"experiment={experiment}"]).task.options["download"] is False
        cfg = compose([f"experiment={experiment}", "data.download=true"])
        assert cfg.task.options["download"] is True
