# Everything a fresh machine needs beyond python3 and apt is installed from here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install system-tools up down status test lint bench clean

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

# Programs the suite runs besides ours, from Debian: promtool, Prometheus and the blackbox
# exporter (the alert rules, a real scrape and probes) and headless Chromium (the status page).
SYSTEM_TOOLS := promtool prometheus prometheus-blackbox-exporter chromium
system-tools:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || exit 1; done || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			prometheus prometheus-blackbox-exporter chromium)

## make test: the whole suite, against a real broker and PostgreSQL started by the fixtures
test: install system-tools
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check shared streams connectors gateways schemas benchmarks tests
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

## make bench: every benchmark scenario, ours against its peers (about 15 minutes); figures go
## to benchmarks/results/. Quix Streams pins another confluent-kafka, so it gets a venv apart.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.installed:
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet quixstreams==3.28.1
	touch $@

# alpaca-py, Alpaca's own SDK, is the providers scenario's peer; its pins are not ours either.
ALPACA_VENV := .venv-alpaca
$(ALPACA_VENV)/.installed:
	$(PYTHON) -m venv $(ALPACA_VENV)
	$(ALPACA_VENV)/bin/pip install --quiet alpaca-py==0.44.0
	touch $@

# The matching scenario's peers: rapidfuzz, TF-IDF char n-grams (scikit-learn) with
# sparse_dot_topn, and datasketch's MinHash LSH; none of them is a dependency of ours.
MATCHING_VENV := .venv-matching
$(MATCHING_VENV)/.installed:
	$(PYTHON) -m venv $(MATCHING_VENV)
	$(MATCHING_VENV)/bin/pip install --quiet numpy==2.4.6 scipy==1.17.1 scikit-learn==1.9.1 \
		rapidfuzz==3.14.6 sparse-dot-topn==1.2.0 datasketch==2.0.0
	touch $@

bench: install $(QUIX_VENV)/.installed $(ALPACA_VENV)/.installed $(MATCHING_VENV)/.installed
	$(PY) -m benchmarks produce
	$(PY) -m benchmarks bars --quix-python $(QUIX_VENV)/bin/python
	$(PY) -m benchmarks sink
	$(PY) -m benchmarks ws
	$(PY) -m benchmarks providers --alpaca-python $(ALPACA_VENV)/bin/python
	$(PY) -m benchmarks matching --peer-python $(MATCHING_VENV)/bin/python
	$(PY) -m benchmarks read_api

clean:
	rm -rf $(VENV) $(QUIX_VENV) $(ALPACA_VENV) $(MATCHING_VENV) .run
