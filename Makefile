# The two commands of the README. Each does all of its own set-up (scripts/setup.sh is idempotent).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck slow

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/leap train experiment=glyphs_demo
	$(BIN)/leap evaluate experiment=glyphs_demo
	$(BIN)/leap train experiment=glyphs_demo_convrnn
	$(BIN)/leap evaluate experiment=glyphs_demo_convrnn

test: setup
	$(BIN)/python -m pytest -q

slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy leap_convrnn models tasks meta envs experiments benchmarks
