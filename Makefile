# invoicetrail: two commands on a fresh machine.
#   make run   - venv, install, migrate, demo data + key, API + console + worker on :8000
#   make test  - lint, types and the whole suite (SQLite, and PostgreSQL when reachable)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
PYTEST_ARGS ?=
RELIABILITY_TESTS ?= tests/test_reliability_crash.py tests/test_reliability_outage.py tests/test_reliability_hostile.py tests/test_reliability_security.py tests/test_tenancy.py tests/test_stateful_invoices.py tests/test_reliability_ledger.py

.PHONY: run test lint pytest bench clean migrate reliability

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

migrate: $(RUN_STAMP)
	$(BIN)/python -m invoicetrail migrate

# make run: invoice e-mail goes to a local debugging SMTP sink that writes ./var/mail/ (a
# Maildir); set INVOICETRAIL_SMTP_URL to use a real server instead.
SMTP_SINK ?= 127.0.0.1:8025
run: export INVOICETRAIL_SMTP_URL ?= smtp://$(SMTP_SINK)
run: $(RUN_STAMP)
	@mkdir -p var
	$(BIN)/python -m invoicetrail migrate
	@echo "Demo account secret key (keep it; it is shown once):"
	@$(BIN)/python -m invoicetrail demo --if-empty
	@echo "API      http://$(HOST):$(PORT)/v1   (OpenAPI: /openapi.json, docs: /docs)"
	@echo "Health   http://$(HOST):$(PORT)/healthz"
	@echo "Mail     ./var/mail/new/ (local SMTP sink on $(SMTP_SINK); the worker sends)"
	$(BIN)/python -m aiosmtpd -n -l $(SMTP_SINK) -c aiosmtpd.handlers.Mailbox var/mail & \
	sink_pid=$$!; \
	$(BIN)/python -m invoicetrail worker & worker_pid=$$!; \
	trap 'kill $$worker_pid $$sink_pid 2>/dev/null' INT TERM; \
	$(BIN)/python -m invoicetrail serve --host $(HOST) --port $(PORT); \
	kill $$worker_pid $$sink_pid 2>/dev/null; wait

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint pytest

# The whole reliability and security suite (crash points × 25 runs, schemathesis at 100
# examples per operation, 2,000 stateful steps …); `make test` runs its fast subset.
reliability: $(DEV_STAMP)
	INVOICETRAIL_RELIABILITY_FULL=1 $(BIN)/python -m pytest $(RELIABILITY_TESTS) $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
