# Developer entry points. `make test` builds .venv, starts the local Kafka and Redis
# (see docs/local-stack.md) and runs pytest; the stack keeps running afterwards, and
# `make stack-down` stops it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install, so .venv is rebuilt only when pyproject.toml
# is newer than the last install.
VENV_STAMP := $(VENV)/.installed
# The stack commands go through the module, so they work before the `prefsync`
# console script has a `stack` subcommand.
STACK := $(BIN)/python -m prefsync.stack
STACK_ARGS ?=
PYTEST_ARGS ?=
# e.g. make bench BENCH_ARGS="--scale 10000,100000,1000000 --json bench.json"
BENCH_ARGS ?=

.PHONY: venv stack-up stack-down stack-status demo test lint format typecheck bench \
	faults-long clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

stack-up: venv
	$(STACK) up $(STACK_ARGS)

stack-down: venv
	$(STACK) down

stack-status: venv
	$(STACK) status

demo: venv stack-up
	$(BIN)/prefsync demo

test: venv stack-up
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy

# The long fault-injection run whose figures are in docs/reliability.md.
faults-long: venv stack-up
	$(BIN)/prefsync faults --long --report faults-long.json

bench: venv stack-up
	$(BIN)/prefsync bench $(BENCH_ARGS)

# Stops the stack and deletes its data and logs, but keeps the rest of .stack, such
# as the encryption key file keys.json.
clean:
	if [ -x $(BIN)/python ]; then $(STACK) down --purge; fi
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune \
		-exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
