"""Every command line in README.md's "## CLI" block runs, at a tiny budget.

The lines are read from the README (a new line is picked up by itself): `leap CMD ...`
runs through `experiments.cli.main` with the tiny overrides of `TINY_ARGS[CMD]` (and of
the line's experiment) appended; other programs (torchrun) run as subprocesses with the
same overrides. The lines run in README order in one directory, as a reader would run
them (evaluate after train, compare after both). A fast test checks that every line is
understood and composes; running them all is slow:
`pytest -m slow tests/experiments/test_readme_cli.py`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import build_parser, main
from experiments.config import compose, expand_sweep
from tests.conftest import SMALL_GLYPHS
from tests.experiments.test_atari_task import EXPERIMENTS as ATARI
from tests.experiments.test_search import TINY as TINY_SEARCH

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent

#: Tiny overrides for each experiment a README line names (default: glyphs_demo's).
EXPERIMENT_ARGS: dict[str, list[str]] = {
    "glyphs_demo": [*SMALL_GLYPHS, "model.options.width=4"],
    "glyphs_leap": [*SMALL_GLYPHS, "model.options.width=4"],
    "glyphs_demo_convrnn": [*SMALL_GLYPHS, "++model.options.width=0.25"],
    **{name: [a for a in args if a != "tracker=none"] for name, args in ATARI.items()},
}
#: Tiny arguments for each subcommand (config overrides for those that take them).
TINY_ARGS: dict[str, list[str]] = {
    "train": ["debug=tiny"],
    "evaluate": ["debug=tiny"],
    "search": TINY_SEARCH,
}
#: Options whose value a tiny run replaces.
TINY_OPTIONS = {"--trials": "1", "--scale": "tiny", "--stimuli": "skimage:4"}


def cli_lines() -> list[str]:
    """The command lines of the first ```bash block under "## CLI" (comments dropped)."""
    text = README.read_text()
    section = text.split("\n## CLI", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no ```bash block under ## CLI in README.md"
    lines = [" ".join(shlex.split(line, comments=True)) for line in block[1].splitlines()]
    return [line for line in lines if line]


def subcommand(argv: list[str]) -> tuple[list[str], str]:
    """`leap train ...` / `torchrun ... -m experiments.cli train ...` -> (the arguments
    after the program, the subcommand)."""
    if argv[0] == "leap":
        return argv[1:], argv[1]
    index = argv.index("experiments.cli")
    return argv[index + 1 :], argv[index + 1]


def tiny(argv: list[str]) -> list[str]:
    """The line's arguments (after the program) with a tiny budget."""
    args = list(argv)
    for option, value in TINY_OPTIONS.items():
        if option in args:
            args[args.index(option) + 1] = value
    command = args[0]
    extra = list(TINY_ARGS.get(command, []))
    if command in ("train", "evaluate"):
        experiment = next(
            (a.split("=", 1)[1] for a in args if a.startswith("experiment=")), "glyphs_demo"
        )
        extra += EXPERIMENT_ARGS.get(experiment, [])
    return [*args, *extra]


LINES = cli_lines()


def test_the_readme_has_cli_lines_for_every_subcommand():
    commands = {subcommand(shlex.split(line))[1] for line in LINES}
    assert {"train", "evaluate", "compare", "search"} <= commands


@pytest.mark.parametrize("line", LINES)
def test_every_readme_cli_line_is_understood_and_composes(line):
    args, command = subcommand(shlex.split(line))
    parsed = build_parser().parse_args(tiny(args))
    assert parsed.command == command
    if command in ("train", "evaluate"):
        for job in expand_sweep(parsed.overrides) if parsed.multirun else [parsed.overrides]:
            compose(job)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.mark.slow
@pytest.mark.parametrize("line", LINES)
def test_every_readme_cli_line_runs_at_a_tiny_budget(line, workdir, monkeypatch, capsys):
    import experiments.runs as runs

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("LEAP_DATA_ROOT", str(workdir / "data"))
    # --project reads the public API; here it reads the same runs from ./wandb.
    monkeypatch.setattr(
        runs, "read_api_runs", lambda project, group=None, api=None: runs.read_local_runs(
            Path("."), group
        )
    )  # fmt: skip
    argv = shlex.split(line)
    args, _ = subcommand(argv)
    if argv[0] == "leap":
        code = main(tiny(args))
        assert code == 0, capsys.readouterr().err
        return
    program = [str(BIN / argv[0]), *argv[1 : len(argv) - len(args)]]
    done = subprocess.run(
        [*program, *tiny(args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(README.parent)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
