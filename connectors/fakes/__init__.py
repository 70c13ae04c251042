"""Local fake provider servers speaking the providers' documented protocols, for tests and
`make up` without keys. Their data is made up: none starts under MS_REAL_DATA_ONLY=true."""

from __future__ import annotations

import sys

from shared.settings import DataPolicySettings, load_settings


def refuse_where_only_real_data_flows(name: str) -> None:
    """Exit with status 2 and one line if MS_REAL_DATA_ONLY=true (a fake's entry point)."""
    if load_settings(DataPolicySettings).real_data_only:
        print(f"error: MS_REAL_DATA_ONLY=true: the fake {name} does not start", file=sys.stderr)
        raise SystemExit(2)
