# Developer entry points. `make test` is what CI runs (see .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ST := $(BIN)/session-tally

.PHONY: help venv constraints up down status topics test lint demo bench campaign campaign-quick

help:
	@echo "make venv    create .venv (python3.11) and pip install -e '.[test]' -c constraints.txt (again when"
	@echo "             pyproject.toml or constraints.txt change): exactly the versions the tests ran against"
	@echo "make constraints  re-resolve the newest versions pyproject.toml allows, in a fresh venv, into constraints.txt"
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

# The stamp is newer than pyproject.toml and constraints.txt once the install succeeded; a failed install
# leaves no stamp. constraints.txt pins every dependency (runtime and test) to the versions tested.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# A fresh venv resolves what pyproject.toml allows (newest versions), and its `pip freeze` becomes
# constraints.txt; then `make venv` installs exactly that. Run the tests before committing the result.
CONSTRAINTS_VENV := .venv-constraints
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install -q --upgrade pip
	$(CONSTRAINTS_VENV)/bin/python -m pip install -q -e '.[test]'
	{ sed -n '/^#/p' constraints.txt; $(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(CONSTRAINTS_VENV)
	@echo "constraints.txt rewritten: review the diff, run 'make venv' and the tests, commit"

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
