"""The metric names the README's Metrics table documents, and the series names of a metric,
for the tests that every name a process exports is documented."""

from __future__ import annotations

import re
from typing import Final

from conftest import ROOT

# Series every Python process and Prometheus itself make: documented as families, not by name.
GENERIC: Final = re.compile(r"^(process_|python_|scrape_|probe_|up$)")


def documented_metrics() -> set[str]:
    """The metric names of the README's Metrics table (`a_total`, `b` and `c` as in `b`, `c`)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Metrics") : text.index("### Dashboards")]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def family(series: str) -> str:
    """The metric a series belongs to (a counter's `_created` gives its name without `_total`)."""
    for suffix in ("_created", "_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def undocumented(series: set[str]) -> set[str]:
    """The names among `series` that the README does not document."""
    documented = documented_metrics()
    out = set()
    for name in series:
        if GENERIC.match(name):
            continue
        base = family(name)
        if base not in documented and f"{base}_total" not in documented:
            out.add(name)
    return out
