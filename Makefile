# Order platform — developer commands. `make run` and `make test` do their own set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
VENV := .venv
BIN := $(VENV)/bin
DEV_KEY := .dev/jwt-keys

# Further targets (deployment, benchmarks, ...) live in mk/*.mk, one file per concern.
-include mk/*.mk

.PHONY: help env uv install services nginx dev-key rotate-key migrate run test test-unit lint test-roles format typecheck

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

env: ## Create .env from .env.example (kept if it exists)
	@if [ -f .env ]; then echo ".env exists; leaving it"; else cp .env.example .env && echo "created .env"; fi

uv:
	@$(UV) --version >/dev/null 2>&1 || { echo "bootstrapping uv with pip"; python3 -m pip install --quiet uv; }

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set, every process (each uvicorn worker too)
# would otherwise compile its whole dependency tree at start; uv skips what is compiled already.
install: uv ## Create the virtual env and install the workspace from uv.lock
	@$(UV) sync --frozen --quiet --compile-bytecode

services: ## Check PostgreSQL, Redis and RabbitMQ answer (say how to start the missing one)
	@bash scripts/check_services.sh

nginx:
	@bash scripts/ensure_nginx.sh

dev-key: install ## Create the development JWT signing key (outside git) if absent
	@$(BIN)/auth-service generate-dev-key $(DEV_KEY)

rotate-key: install ## Add a JWT signing key to AUTH_JWT_PRIVATE_KEY_PATH (a directory); drop the retired ones
	@$(BIN)/auth-service rotate-key

migrate: install services ## Create the databases and run the migrations
	@$(BIN)/auth-service migrate
	@$(BIN)/orders-service migrate

run: install services rabbitmq-ui nginx dev-key migrate ## Run the whole stack; gateway on http://localhost:8000
	@echo "gateway: http://localhost:$${GATEWAY_PORT:-8000}  (a process that dies restarts; Ctrl-C stops everything)"
	@$(BIN)/python scripts/supervise.py -f Procfile --status-file .run/supervise.json

test: install services nginx ## Unit, integration and end-to-end tests against the real services
	@$(BIN)/pytest --ignore=tests/deploy  # the deployment checks: `make test-deploy`

test-unit: install ## The tests that need no data service
	@$(BIN)/pytest libs/common/tests

lint: install ## ruff (lint + format check) and mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

test-roles: uv ## Install each service alone (as its image does) and import all of it
	@UV="$(UV)" $(BIN)/python scripts/check_roles.py

format: install ## Apply ruff's formatting and autofixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

docs-config: install ## Regenerate the README configuration table from the Settings classes
	@$(BIN)/python scripts/config_table.py --write
