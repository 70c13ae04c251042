"""Schema ids for the Confluent wire format, and the ones committed in this repository.

Without a registry (the embedded default) ids come from `schemas/ids.json`, which lists every
version of every record ever committed; superseded versions keep their text in
`schemas/avro/archive/<name>.v<version>.avsc` so that old messages stay readable. A real
registry (`shared.schema_registry`) answers the same `SchemaRegistry` protocol.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast

import fastavro

import schemas
from shared.errors import DecodeError

IDS_FILE: Final = Path(schemas.__file__).parent / "ids.json"
ARCHIVE_DIR: Final = schemas.AVRO_DIR / "archive"


@dataclass(frozen=True)
class RegisteredSchema:
    """One version of one record, as a registry knows it."""

    schema_id: int
    name: str
    version: int
    text: str

    @functools.cached_property
    def parsed(self) -> dict[str, Any]:
        return cast(dict[str, Any], fastavro.parse_schema(json.loads(self.text)))


def fingerprint(text: str) -> str:
    """Return the SHA-256 fingerprint of a schema's parsing canonical form, as hex."""
    canonical = fastavro.schema.to_parsing_canonical_form(json.loads(text))
    return str(fastavro.schema.fingerprint(canonical, "SHA-256"))


class SchemaRegistry(Protocol):
    """Resolves record names to the ids we write and ids we read to schemas."""

    def id_for(self, name: str) -> int:
        """Return the id under which the current version of schema `name` is written."""
        ...

    def schema_for(self, schema_id: int) -> RegisteredSchema:
        """Return the schema with this id; raise DecodeError if it is unknown."""
        ...


class CommittedSchemas:
    """The schema set committed in this repository: ids are stable across releases."""

    def __init__(self) -> None:
        self.by_id: dict[int, RegisteredSchema] = {}
        self.latest: dict[str, RegisteredSchema] = {}
        listing: dict[str, list[dict[str, Any]]] = json.loads(IDS_FILE.read_text())
        for name, versions in listing.items():
            for i, entry in enumerate(versions):
                is_latest = i == len(versions) - 1
                path = (
                    schemas.AVRO_DIR / f"{name}.avsc"
                    if is_latest
                    else (ARCHIVE_DIR / f"{name}.v{entry['version']}.avsc")
                )
                registered = RegisteredSchema(entry["id"], name, entry["version"], path.read_text())
                self.by_id[registered.schema_id] = registered
            self.latest[name] = registered

    def id_for(self, name: str) -> int:
        return self.latest[name].schema_id

    def schema_for(self, schema_id: int) -> RegisteredSchema:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise DecodeError(f"unknown schema id {schema_id}") from None

    def versions(self, name: str) -> list[RegisteredSchema]:
        """Return every committed version of schema `name`, oldest first."""
        return sorted((s for s in self.by_id.values() if s.name == name), key=lambda s: s.version)
