# Developer entry points. `make test` is what CI runs (see .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ST := $(BIN)/session-tally

.PHONY: help venv up down status topics test lint demo bench campaign campaign-quick

help:
	@echo "make venv    create .venv (python3.11) and pip install -e '.[test]' (again when pyproject.toml changes)"
	@echo "make up      start Kafka (127.0.0.1:9092) and PostgreSQL (127.0.0.1:54320); writes .services/env"
	@echo "make down    stop what 'make up' started"
	@echo "make status  show whether the services run (exit 3 when not both)"
	@echo "make topics  create the input and output topics"
	@echo "make test    make up, then run the whole test suite against the real services (PYTEST_ARGS=...)"
	@echo "make lint    ruff check + ruff format --check + mypy (strict, every package) + import-linter (the layers)"
	@echo "make demo    the real pipeline: services, topics, a worker, months of history, the web app (WEB_PORT=8000),"
	@echo "             live simulated traffic and tallies in the terminal (DEMO_ARGS=...)"
	@echo "make bench   run the benchmark"
	@echo "make campaign        the fault campaign at full size, about 1.5 hours (CAMPAIGN_ARGS=..., e.g. --only soak)"
	@echo "make campaign-quick  the fault campaign's quick set (what CI runs), a few minutes"

# The stamp is newer than pyproject.toml once the install succeeded; a failed install leaves no stamp.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

up: venv
	$(ST) services up

down: venv
	$(ST) services down

status: venv
	$(ST) services status

topics: up
	. .services/env && $(ST) topics create

test: up
	. .services/env && $(BIN)/pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The README's first command: services, topics, a worker, the demo history, the web app (its URL and the
# demo users are printed), simulated traffic with tallies shown live; the web app stays up until Ctrl-C.
WEB_PORT ?= 8000
demo: up
	. .services/env && $(ST) demo --web-port $(WEB_PORT) $(DEMO_ARGS)

bench: up
	. .services/env && $(ST) bench $(BENCH_ARGS)

# The fault campaign (docs/reliability.md, "Fault campaign"); its table is printed at the end and, with
# CAMPAIGN_ARGS='--json FILE', written with every figure.
campaign: up
	. .services/env && $(BIN)/python -m tests.campaign --full $(CAMPAIGN_ARGS)

campaign-quick: up
	. .services/env && $(BIN)/python -m tests.campaign --quick $(CAMPAIGN_ARGS)
