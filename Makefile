# mailqueue developer interface. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml layers/shared/requirements.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install dev test lint format typecheck unit integration e2e validate build deploy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml layers/shared/requirements.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install mailqueue with its dev tools

dev: $(STAMP) ## Run the whole queue locally: emulator, API, sender, requeue, outbox
	$(BIN)/python -m mailqueue_dev.local

test: $(STAMP) lint typecheck ## Lint, type-check and run every test
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict
	$(BIN)/mypy

unit: $(STAMP) ## Unit tests (moto's mock_aws, no network)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) ## Integration tests (boto3 against moto in server mode)
	$(BIN)/pytest -q tests/integration

e2e: $(STAMP) ## End-to-end tests through the local stack's HTTP API
	$(BIN)/pytest -q tests/e2e

clean: ## Remove the virtualenv, caches, build output and the local outbox
	rm -rf $(VENV) .aws-sam .mailqueue .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
