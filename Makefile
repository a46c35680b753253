# mailqueue developer interface. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml layers/shared/requirements.txt | cksum | cut -d' ' -f1)
# The SAM CLI and checkov pin versions of boto3, cfn-lint and others that clash with the project's:
# each gets a virtualenv of its own under .venv-tools (git-ignored).
TOOLS := .venv-tools
SAM_VERSION := 1.170.0
CHECKOV_VERSION := 3.3.30
SAM_STAMP := $(TOOLS)/sam/.installed-$(SAM_VERSION)
# The functions run on Python 3.13: rendering and hostile input are also tested there, in a small
# virtualenv of their own (the project with its `tests` extra only).
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed-$(shell cat pyproject.toml layers/shared/requirements.txt | cksum | cut -d' ' -f1)
TESTS313 := tests/unit/test_render.py tests/unit/test_render_property.py tests/unit/test_hostile_input.py
CHECKOV_STAMP := $(TOOLS)/checkov/.installed-$(CHECKOV_VERSION)
# pytest's worker processes (pytest-xdist), as many as CI's cores: `make test WORKERS=4`, or WORKERS=0 to
# run every test in pytest's own process. Tests that share an expensive module fixture carry an
# xdist_group mark, which keeps them on one worker (--dist loadgroup).
WORKERS ?= 2
XDIST := -n $(WORKERS) --dist loadgroup

.DEFAULT_GOAL := help
.PHONY: help install tools chromium dev test test313 lint format typecheck unit integration e2e chaos mutants mutation-score validate build deploy clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml layers/shared/requirements.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install mailqueue with its dev tools

# The console's browser tests drive Debian's chromium through Playwright (never `playwright install`).
chromium: ## Install Debian's chromium for the console's browser tests, unless /usr/bin/chromium exists
	@test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

dev: $(STAMP) ## Run the whole queue locally: emulator, API, sender, requeue, outbox (CLEAN=1: without earlier data)
	$(if $(CLEAN),MAILQUEUE_CLEAN=1 )$(BIN)/python -m mailqueue_dev.local

test: $(STAMP) chromium lint typecheck validate test313 ## Lint, type-check, check the template and run every test
	$(BIN)/pytest -q --durations=20 $(XDIST)

$(STAMP313): pyproject.toml layers/shared/requirements.txt
	@python313=$$(scripts/sam.sh --find-python) || { echo "Python 3.13 is needed (python3.13 on PATH or in pyenv)." >&2; exit 1; }; \
		test -d $(VENV313) || $$python313 -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[tests]"
	@rm -f $(VENV313)/.installed-* && touch $@

test313: $(STAMP313) ## Rendering, its round-trip property and hostile input under Python 3.13 (the Lambda runtime)
	$(VENV313)/bin/python -m pytest -q -p no:cacheprovider $(TESTS313)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict
	$(BIN)/mypy

unit: $(STAMP) ## Unit tests (moto's mock_aws, no network)
	$(BIN)/pytest -q $(XDIST) tests/unit

integration: $(STAMP) ## Integration tests (boto3 against moto in server mode)
	$(BIN)/pytest -q $(XDIST) tests/integration

e2e: $(STAMP) chromium ## End-to-end tests through the local stack's HTTP API, and the console in Chromium
	$(BIN)/pytest -q $(XDIST) tests/e2e tests/e2e_webhooks

chaos: $(STAMP) ## 2,000 emails through the local stack under injected faults: nothing lost (figures: docs/reliability.md)
	$(BIN)/python -m mailqueue_dev.chaos --emails 2000 --json .mailqueue/chaos.json --doc docs/reliability.md

mutants: $(STAMP) ## Deliberate defects in the guarantee code, one at a time: the proofs must fail on each (docs/reliability.md)
	$(BIN)/python -m mailqueue_dev.mutants --doc docs/reliability.md

mutation-score: $(STAMP) ## mutmut's score per guarantee module with its unit tests (slow; UNTIL=, STOP_AT=HH:MM UTC, SAMPLE=N, RESUME=1, MODULES=)
	nice -n 10 $(BIN)/python -m mailqueue_dev.mutation_score $(if $(UNTIL),--until $(UNTIL)) $(if $(STOP_AT),--stop-at $(STOP_AT)) $(if $(SAMPLE),--sample $(SAMPLE)) $(if $(RESUME),--resume) $(MODULES)

$(SAM_STAMP):
	@rm -rf $(TOOLS)/sam && $(PYTHON) -m venv $(TOOLS)/sam
	$(TOOLS)/sam/bin/python -m pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_VERSION)
	@touch $@

$(CHECKOV_STAMP):
	@rm -rf $(TOOLS)/checkov && $(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

tools: $(SAM_STAMP) $(CHECKOV_STAMP) ## Install the SAM CLI and checkov, each in its own virtualenv

validate: $(STAMP) tools ## Check template.yaml: cfn-lint (serverless rules), checkov, sam validate, sam build
	scripts/check-template.sh

build: $(SAM_STAMP) ## sam build: the functions and the arm64 layer, into .aws-sam/build (needs Python 3.13)
	@scripts/sam.sh --find-python >/dev/null || { echo "sam build needs a Python 3.13 interpreter (python3.13 on PATH or in pyenv)." >&2; exit 1; }
	scripts/sam.sh build

deploy: build ## sam deploy with samconfig.toml; the first time: make deploy GUIDED=1
	scripts/sam.sh deploy $(if $(GUIDED),--guided,)

.PHONY: bench
bench: $(STAMP) ## Measure what an email costs and how fast the functions start (bench/results.json, docs/performance.md)
	$(BIN)/python -m bench.run

.PHONY: bench-release
bench-release: $(STAMP) ## Measure the release of scheduled email: calls, CPU and emails a second (bench/release.json, docs/capacity.md)
	$(BIN)/python -m bench.release --json bench/release.json

clean: ## Remove the virtualenv, caches, build output and the local outbox
	rm -rf $(VENV) $(VENV313) $(TOOLS) .aws-sam .mailqueue .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
