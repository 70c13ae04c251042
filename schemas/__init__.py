"""The Avro contracts of marketstream, one record per file in `schemas/avro/`."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Final, cast

AVRO_DIR: Final = Path(__file__).parent / "avro"


@functools.cache
def source(name: str) -> str:
    """Return the JSON text of schema `name` (file stem, e.g. 'trade_batch'); raise KeyError if absent."""
    path = AVRO_DIR / f"{name}.avsc"
    if not path.is_file():
        known = sorted(p.stem for p in AVRO_DIR.glob("*.avsc"))
        raise KeyError(f"no schema {name!r}; known schemas: {', '.join(known)}")
    return path.read_text()


@functools.cache
def load(name: str) -> dict[str, Any]:
    """Return schema `name` parsed by fastavro, parsed once per process."""
    import fastavro

    return cast(dict[str, Any], fastavro.parse_schema(json.loads(source(name))))
