# usr_es — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test check lint typecheck fmt fixtures docs screenshots bench bench-scale reliability clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install usr_es with its dev tools

demo: $(STAMP) ## Run the end-to-end demo in a temporary root
	$(BIN)/usr demo

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff
	$(BIN)/ruff check usr_es tests bench tools
	$(BIN)/ruff format --check usr_es tests bench tools

typecheck: $(STAMP) ## mypy --strict on usr_es and tools; the import graph has no cycle
	$(BIN)/mypy usr_es tools
	$(BIN)/python -m tools.imports > /dev/null

check: lint typecheck test ## lint + typecheck + tests

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format usr_es tests bench tools
	$(BIN)/ruff check --fix usr_es tests bench tools

fixtures: $(STAMP) ## Regenerate replay_fixtures/ (review the diff!)
	$(BIN)/python -m tools.replay_fixtures replay_fixtures

docs: $(STAMP) ## Regenerate docs/cli.md from the help texts
	$(BIN)/python -m tools.clidoc docs/cli.md

screenshots: $(STAMP) ## docs/img/explore.png: `usr explore` in headless Chromium (apt-get install chromium)
	$(BIN)/python -m tools.screenshots

bench: $(STAMP) ## Benchmarks against the physical baseline (N=1,000,000 by default)
	$(BIN)/python bench/run.py $(if $(N),--n $(N),)

bench-scale: $(STAMP) ## Issue 11: small writes, bulk steps, reads and memory at N=1M and 10M, plus a 30M-row streaming import
	$(BIN)/python bench/scale.py $(if $(SIZES),--sizes $(SIZES),) $(if $(STREAM),--stream-rows $(STREAM),)

reliability: $(STAMP) ## Attack real datasets (kills, power loss, I/O errors, concurrency, corruption, fuzz, containment); print the table
	$(BIN)/python -m tools.reliability $(if $(SEED),--seed $(SEED),)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
