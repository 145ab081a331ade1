# The two commands of the README. Each sets up what it needs (scripts/setup.sh is idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help
IN_ENV := bash scripts/setup.sh && source scripts/env.sh &&

.PHONY: help setup run test test-slow bench

help:
	@echo "make run        set up, then run the main job (see README)"
	@echo "make test       set up, then run the test suite"
	@echo "make test-slow  the slow checks (a set-up from a fresh clone)"
	@echo "make bench      the benchmarks (benchmarks/)"

setup:
	bash scripts/setup.sh

run:
	$(IN_ENV) bash scripts/run.sh $(ARGS)

test:
	$(IN_ENV) ruff check . && ruff format --check . && python -m pytest $(PYTEST_ARGS)

test-slow:
	$(IN_ENV) python -m pytest -m slow $(PYTEST_ARGS)

bench:
	$(IN_ENV) for b in benchmarks/bench_*.py; do python "$$b" || exit 1; done
