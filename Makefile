# The two commands of the README. Both set the machine up themselves (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup demo test test-fast lint bench catalog

setup:
	@bash scripts/bootstrap.sh

# The main job on the embedded default store (no external server).
demo: setup
	@bash scripts/demo.sh $(ARGS)

# The whole suite, slow end-to-end tests included (this is what .ci/run calls).
test: setup lint
	$(VENV)/pytest -m '' -q

# Day-to-day: everything but the slow end-to-end tests.
test-fast: setup
	$(VENV)/pytest -q

lint:
	$(VENV)/ruff check isostack tests bench
	$(VENV)/mypy
	$(VENV)/python -m isostack.locate.catalog --check

# Rewrite what is written from the checks' declarations (kb mechanisms/thresholds, docs/checks/).
catalog:
	$(VENV)/python -m isostack.locate.catalog

bench: setup
	$(VENV)/python -m bench --all
