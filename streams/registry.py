"""Schema ids for the Confluent wire format: from the committed set, or a real registry.

Without a registry (the embedded default) ids come from `schemas/ids.json`, which lists every
version of every record ever committed; superseded versions keep their text in
`schemas/avro/archive/<name>.v<version>.avsc` so that old messages stay readable. With
`MS_SCHEMA_REGISTRY_URL` set, the current schemas are registered there and its ids are used.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast

import fastavro

import schemas
from streams.errors import ConfigError, DecodeError

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


class RemoteSchemas:
    """A Confluent-compatible registry: current schemas are registered under their subjects."""

    def __init__(self, url: str, subjects: Mapping[str, str]) -> None:
        """Register schema `name` under each `subject -> name` pair; raise ConfigError if unreachable."""
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        self._client = SchemaRegistryClient({"url": url})
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, RegisteredSchema] = {}
        self._names = {json.loads(schemas.source(n))["name"]: n for n in subjects.values()}
        try:
            for subject, name in subjects.items():
                schema_id = self._client.register_schema(
                    subject, Schema(schemas.source(name), "AVRO")
                )
                self._ids[name] = schema_id
        except (SchemaRegistryError, OSError) as exc:
            raise ConfigError(
                f"MS_SCHEMA_REGISTRY_URL={url}: cannot register schemas: {exc}"
            ) from exc

    def id_for(self, name: str) -> int:
        return self._ids[name]

    def schema_for(self, schema_id: int) -> RegisteredSchema:
        if schema_id not in self._by_id:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                text = self._client.get_schema(schema_id).schema_str or ""
            except (SchemaRegistryError, OSError) as exc:
                raise DecodeError(f"schema id {schema_id} not in registry: {exc}") from exc
            record = json.loads(text).get("name", "")
            name = self._names.get(record, record)
            self._by_id[schema_id] = RegisteredSchema(schema_id, name, 0, text)
        return self._by_id[schema_id]
