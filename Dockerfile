# One image for every marketstream process; the command picks the process.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY shared shared
COPY streams streams
COPY connectors connectors
COPY gateways gateways
COPY benchmarks benchmarks
RUN pip install --no-cache-dir . && useradd --system --uid 10001 marketstream
USER marketstream
ENV MS_API_HTTP_HOST=0.0.0.0 MS_WORKER_HTTP_HOST=0.0.0.0 MS_CONNECTOR_HTTP_HOST=0.0.0.0 \
    MS_WORKER_DATA_DIR=/tmp/worker-data
EXPOSE 8080 6066 9101 8765
CMD ["python", "-m", "gateways.http"]
