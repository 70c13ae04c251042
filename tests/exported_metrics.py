"""The names of every metric our processes can export, as Prometheus queries spell them, for
the tests of the alert rules and the dashboards (which must only name metrics that exist)."""

from __future__ import annotations

import importlib

from prometheus_client import REGISTRY

# Modules that define metrics outside shared.metrics.
METRIC_MODULES = ("shared.metrics", "connectors.fmp")
# Series that Prometheus and the blackbox exporter make, not our processes.
SCRAPE_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
    }
)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "untyped": ("",),
}


def exported_series() -> frozenset[str]:
    """Every series name our processes can expose on /metrics, with its type's suffixes."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return frozenset(names)
