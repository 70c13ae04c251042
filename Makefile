# Everything a fresh machine needs beyond python3 and apt is installed from here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install up down status test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
		(apt-get update && apt-get install -y python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## make up: the whole pipeline on the embedded stack (Ctrl-C stops it); DETACH=1 runs it in the background
up: install
	$(PY) -m streams stack up $(if $(DETACH),--detach)

## make down: stop a stack started with DETACH=1
down: install
	$(PY) -m streams stack down

status: install
	$(PY) -m streams stack status

## make test: the whole suite, against a real broker and PostgreSQL started by the fixtures
test: install
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check streams connectors gateways schemas benchmarks tests
	$(PY) -m mypy

bench: install
	$(PY) -m benchmarks produce

clean:
	rm -rf $(VENV) .run
