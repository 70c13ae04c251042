"""Every metric our code can export is in the README's Metrics table, and the table lists no
metric that does not exist (the scrape test checks what running processes really export)."""

from __future__ import annotations

from documented_metrics import documented_metrics, family, undocumented
from exported_metrics import exported_series


def test_every_exportable_metric_is_documented() -> None:
    assert undocumented(set(exported_series())) == set()


def test_every_documented_metric_exists() -> None:
    exported = {family(name) for name in exported_series()}

    assert documented_metrics() - exported == set()
    assert len(documented_metrics()) >= 45
