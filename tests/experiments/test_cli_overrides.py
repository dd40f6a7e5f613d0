"""Override checking: an unknown key gets "did you mean" and never a `+key=value` hint;
a value of the wrong type names the key, the value and the type; `resume` takes what it
documents; `--help` lists the config groups and their choices; `--cfg job` prints the
composed config. Nothing here starts a training."""

from __future__ import annotations

import pytest
import yaml

from experiments import evaluate as evaluation
from experiments import runner
from experiments.cli import main
from experiments.config import GROUPS, compose, group_options
from leap_convrnn.errors import UserError


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg: object) -> None:
        raise AssertionError("a bad override started a run")

    monkeypatch.setattr(runner, "train", refuse)
    monkeypatch.setattr(evaluation, "evaluate", refuse)


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("prefix", ["", "+", "++"])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_unknown_key_says_did_you_mean_and_never_suggests_plus(prefix, command, capsys):
    err = error_line([command, f"{prefix}meta.inner_stps=5"], capsys)
    assert "unknown config key 'meta.inner_stps' (did you mean meta.inner_steps" in err
    assert "+meta" not in err and "append" not in err
    assert "leap train --cfg job" in err


def test_unknown_top_level_key_is_refused_even_with_plus(capsys):
    assert "unknown config key 'sed' (did you mean seed" in error_line(["train", "+sed=3"], capsys)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("meta.inner_steps=abc", "meta.inner_steps takes int"),
        ("meta.inner_steps=1.5", "meta.inner_steps takes int"),
        ("meta.meta_lr=fast", "meta.meta_lr takes float"),
        ("progress=maybe", "progress takes bool (true or false)"),
        ("eval.seeds=3", "eval.seeds takes list of int"),
        ("eval.seeds=[a,b]", "eval.seeds takes list of int"),
        ("meta.clip_grad_norm=big", "meta.clip_grad_norm takes float or null"),
    ],
)
def test_wrong_type_names_key_value_and_type(override, expected, capsys):
    err = error_line(["train", override], capsys)
    assert f"{override} has the wrong type: {expected}" in err


def test_keys_inside_options_need_no_plus():
    cfg = compose(["eval.inits.mine=[a.pt]", "meta.options.metric=energy"])
    assert cfg.eval.inits == {"mine": ["a.pt"]} and cfg.meta.options["metric"] == "energy"


@pytest.mark.parametrize("value", ["yes", "no", "1", "0", "on", "latest", "a b", "-x"])
def test_resume_refuses_what_it_does_not_document(value):
    with pytest.raises(UserError, match="accepted: true, false or a W&B run id"):
        compose([f"resume='{value}'"])


@pytest.mark.parametrize("value", ["true", "false", "True", "2x7kq9ab", "my-run_1"])
def test_resume_accepts_true_false_and_run_ids(value):
    assert compose([f"resume={value}"]).resume.lower() == value.lower()


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "search"])
def test_help_lists_groups_choices_and_how_to_print_the_schema(command, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for group in GROUPS:
        assert f"  {group}: {', '.join(group_options(group))}" in out
    assert "glyphs_demo" in out and "mnih2013" in out
    assert "leap train --cfg job" in out


def test_cfg_job_prints_the_composed_config_with_defaults(capsys):
    assert main(["train", "--cfg", "job", "experiment=glyphs_demo", "meta=fomaml"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["meta"]["meta_lr"] == 0.5 and printed["meta"]["meta_steps"] == 100  # FOMAML's
    assert printed["checkpoint_every"] == 50 and printed["tracker"]["mode"] == "auto"
