"""Every config value is checked at load: property-based tests with malformed overrides.

A malformed value must end `leap train` / `leap evaluate` with exit code 2 and one
line on stderr starting `leap: error:` (never a traceback), before any work starts;
any override at all must either compose into a config or raise `UserError`.
"""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import experiments.evaluate as evaluation
import experiments.runner as runner
from experiments.cli import main
from experiments.config import _NOT_RUN_IDS, Config, compose, resume_target
from leap_convrnn.errors import UserError

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

POSITIVE_INTS = [
    "meta.meta_steps",
    "meta.meta_batch_size",
    "meta.inner_steps",
    "meta.batch_size",
    "eval.tasks",
    "eval.steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "distributed",
]
POSITIVE_FLOATS = ["meta.meta_lr", "meta.inner_lr", "meta.clip_grad_norm"]
CHOICES = [
    "meta.meta_optimizer",
    "meta.inner_optimizer",
    "eval.split",
    "tracker.name",
    "tracker.mode",
    "model.name",
    "task.name",
    "meta.name",
]
BOOLS = ["progress", "data.download"]
GROUPS = ["model", "task", "meta", "tracker", "experiment"]

#: Plain words: never a valid choice, never a Hydra grammar character.
words = st.text(string.ascii_lowercase, min_size=1, max_size=12).map(lambda w: f"zz{w}")


def _float(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


non_positive_numbers = st.one_of(
    st.integers(max_value=0).map(str),
    st.floats(max_value=0, allow_nan=False).map(repr),
)
not_finite = st.sampled_from([math.nan, math.inf, -math.inf]).map(_float)

malformed = st.one_of(
    st.tuples(st.sampled_from(POSITIVE_INTS), st.integers(max_value=0).map(str)),
    st.tuples(st.sampled_from(POSITIVE_INTS), words),
    st.tuples(st.sampled_from(POSITIVE_INTS), st.floats(0.1, 1e3).map(lambda x: f"{x:.3f}5")),
    st.tuples(st.sampled_from(POSITIVE_FLOATS), st.one_of(non_positive_numbers, not_finite, words)),
    st.tuples(
        st.just("meta.inner_momentum"),
        st.one_of(
            not_finite,
            st.floats(1.0, exclude_min=True, allow_infinity=False).map(repr),
            st.floats(max_value=0.0, exclude_max=True, allow_infinity=False).map(repr),
        ),
    ),
    st.tuples(st.sampled_from(CHOICES), words),
    st.tuples(st.sampled_from(BOOLS), words),
    st.tuples(
        st.sampled_from(["seed", "eval.seeds"]),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)).map(str),
    ),
    st.tuples(st.just("resume"), st.text("/#?% .:", min_size=1).map(lambda t: f"'run{t}'")),
    st.tuples(st.sampled_from(["experiment", "name"]), st.sampled_from(["'a/b'", "'..'", "''"])),
    st.tuples(words, st.integers().map(str)),
    st.tuples(st.sampled_from(GROUPS).map(lambda g: f"+{g}" if g == "experiment" else g), words),
    st.tuples(
        st.sampled_from(["+model.options", "+task.options", "+meta.options"]).map(
            lambda prefix: f"{prefix}.zz"
        ),
        st.integers().map(str),
    ),
)


def override(pair: tuple[str, str]) -> str:
    key, value = pair
    if key == "eval.seeds":
        return f"eval.seeds=[{value}]"
    return f"{key}={value}"


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that passes validation must not start any work in these tests."""

    def refuse(cfg: Config) -> None:
        raise AssertionError(f"a malformed config was accepted: {cfg}")

    monkeypatch.setattr(runner, "train", refuse)
    monkeypatch.setattr(evaluation, "evaluate", refuse)


@SETTINGS
@given(pair=malformed, command=st.sampled_from(["train", "evaluate"]))
def test_malformed_value_is_one_line_and_exit_2(pair, command, no_training, capsys):
    capsys.readouterr()
    assert main([command, override(pair)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("leap: error: ") and "\n" not in err, err
    assert "Traceback" not in captured.err and not captured.out


@SETTINGS
@given(
    key=st.sampled_from([*POSITIVE_INTS, *POSITIVE_FLOATS, *CHOICES, *BOOLS, "seed", "resume"]),
    value=st.text(string.printable, max_size=20),
)
def test_any_value_composes_or_is_a_user_error(key, value):
    try:
        cfg = compose([f"{key}={value}"])
    except UserError as error:
        assert "\n" not in str(error).strip()
        return
    assert isinstance(cfg, Config)
    assert cfg.meta.meta_lr > 0 and math.isfinite(cfg.meta.meta_lr)
    assert min(cfg.meta.meta_steps, cfg.meta.inner_steps, cfg.checkpoint_every) > 0
    resume_target(cfg.resume)


@SETTINGS
@given(value=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,19}", fullmatch=True))
def test_resume_accepts_true_false_or_a_run_id(value):
    if value.lower() in _NOT_RUN_IDS:  # yes / no look-alikes: true or false is asked for
        with pytest.raises(UserError, match="accepted: true, false or a W&B run id"):
            resume_target(value)
        return
    target = resume_target(value)
    lowered = value.lower()
    assert target == (lowered == "true" if lowered in ("true", "false") else value)


def test_distributed_needs_a_task_per_rank(capsys):
    assert main(["train", "distributed=4", "meta.meta_batch_size=3"]) == 2
    assert "distributed=4 ranks need meta.meta_batch_size >= 4" in capsys.readouterr().err


def test_every_registered_model_is_a_model_choice():
    """`model=NAME` selects any registered model (its file's settings, or its builder's
    defaults), and an unknown name lists every one."""
    import models

    for name in models.MODELS.names():
        assert compose([f"model={name}"]).model.name == name
    with pytest.raises(UserError) as caught:
        compose(["model=rgc_shalow"])
    message = str(caught.value)
    assert "did you mean rgc_shallow" in message
    assert message.endswith("accepted: " + ", ".join(models.MODELS.names()))
