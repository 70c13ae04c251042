"""A Confluent-compatible schema registry as the source of schema ids (MS_SCHEMA_REGISTRY_URL).

With the URL set, the current schemas are registered there under their topics' subjects and
its ids are used; without it, the ids committed in `schemas/ids.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import schemas
from shared.errors import ConfigError, DecodeError
from shared.schema_ids import CommittedSchemas, RegisteredSchema, SchemaRegistry
from shared.settings import RegistrySettings
from shared.topics import subjects


def schema_registry(settings: RegistrySettings) -> SchemaRegistry:
    """Use the registry at MS_SCHEMA_REGISTRY_URL if set, else the committed schema ids."""
    if settings.registry_url:
        return RemoteSchemas(settings.registry_url, subjects())
    return CommittedSchemas()


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
