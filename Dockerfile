# One image for every marketstream process; the command picks the process:
#   python -m gateways.http | python -m streams worker | python -m connectors run <name> | python -m gateways.ws
# Two stages: the builder makes wheels of the project and its dependencies and installs them into
# a virtualenv; the runtime stage gets only that virtualenv, with no compiler and no pip cache.

FROM python:3.11-slim AS builder
# Every dependency ships wheels for linux/amd64; the compiler is for a platform where one does
# not (an sdist to build). It stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY shared shared
COPY streams streams
COPY connectors connectors
COPY gateways gateways
COPY benchmarks benchmarks
RUN pip wheel --wheel-dir /wheels . \
    && python -m venv /opt/marketstream \
    && /opt/marketstream/bin/pip install --no-index --find-links /wheels marketstream

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 marketstream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin marketstream
COPY --from=builder /opt/marketstream /opt/marketstream
# Everything a process writes goes under /tmp (an emptyDir in Kubernetes, where the root
# filesystem is read-only): the worker's data dir and numba's compiled-kernel cache.
ENV PATH=/opt/marketstream/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp NUMBA_CACHE_DIR=/tmp/numba-cache \
    MS_API_HTTP_HOST=0.0.0.0 MS_WORKER_HTTP_HOST=0.0.0.0 MS_CONNECTOR_HTTP_HOST=0.0.0.0 \
    MS_WS_HOST=0.0.0.0 MS_WORKER_DATA_DIR=/tmp/worker-data
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 6066 9101 8765
# Alive when the process's status port answers /health/live. A container runs one process, and
# each kind has its own port variable (MS_API_HTTP_PORT, MS_WORKER_HTTP_PORT,
# MS_CONNECTOR_HTTP_PORT, MS_WS_PORT, with their defaults): the check tries each and passes on
# the first that answers 200, so it needs no setting of its own. Kubernetes ignores it and
# uses the manifests' probes.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor variable, default in (('MS_API_HTTP_PORT', '8080'), ('MS_WORKER_HTTP_PORT', '6066'), ('MS_CONNECTOR_HTTP_PORT', '9101'), ('MS_WS_PORT', '8765')):\n    port = os.environ.get(variable) or default\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2)\n    except OSError:\n        continue\n    sys.exit(0)\nsys.exit(1)"]
CMD ["python", "-m", "gateways.http"]
