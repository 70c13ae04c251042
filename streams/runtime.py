"""What every process entry point does the same way: logging and the schema registry."""

from __future__ import annotations

import logging
import sys

from streams.registry import CommittedSchemas, RemoteSchemas, SchemaRegistry
from streams.settings import RegistrySettings
from streams.topics import subjects


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr, one line per record; only entry points call this."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def schema_registry(settings: RegistrySettings) -> SchemaRegistry:
    """Use the registry at MS_SCHEMA_REGISTRY_URL if set, else the committed schema ids."""
    if settings.registry_url:
        return RemoteSchemas(settings.registry_url, subjects())
    return CommittedSchemas()
