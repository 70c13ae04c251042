"""The Avro contracts: every file parses, follows the conventions and evolves safely."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from shared.schema_ids import fingerprint

ROOT = Path(__file__).resolve().parents[2]
AVRO_DIR = ROOT / "schemas" / "avro"
ARCHIVE_DIR = AVRO_DIR / "archive"
IDS: dict[str, list[dict[str, Any]]] = json.loads((ROOT / "schemas" / "ids.json").read_text())
NAMES = sorted(p.stem for p in AVRO_DIR.glob("*.avsc"))
TIMESTAMP_MICROS = {"type": "long", "logicalType": "timestamp-micros"}


def _text(name: str) -> str:
    return (AVRO_DIR / f"{name}.avsc").read_text()


def _records(schema: Any) -> list[dict[str, Any]]:
    """Return every record definition in a schema's JSON, the top-level one first."""
    if isinstance(schema, list):
        return [r for s in schema for r in _records(s)]
    if not isinstance(schema, dict):
        return []
    found = [schema] if schema.get("type") == "record" else []
    for field in schema.get("fields", []):
        found += _records(field["type"])
    for key in ("items", "values"):
        if key in schema:
            found += _records(schema[key])
    return found


def _can_read(reader_text: str, writer_text: str) -> tuple[bool, object]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=avro.schema.parse(reader_text), writer=avro.schema.parse(writer_text)
    )
    return result.compatibility is SchemaCompatibilityType.compatible, result


def test_schema_files_present_finds_the_three_core_records() -> None:
    # Arrange / Act
    names = set(NAMES)

    # Assert
    assert {"trade_batch", "dead_letter", "bar"} <= names


@pytest.mark.parametrize("name", NAMES)
def test_schema_file_any_parses_with_fastavro(name: str) -> None:
    # Arrange
    raw = json.loads(_text(name))

    # Act
    parsed = fastavro.parse_schema(raw)

    # Assert
    assert parsed["type"] == "record"
    assert parsed["name"] == f"marketstream.v1.{raw['name']}"


@pytest.mark.parametrize("name", NAMES)
def test_schema_records_any_live_in_namespace_marketstream_v1(name: str) -> None:
    # Arrange
    records = _records(json.loads(_text(name)))

    # Act
    namespaces = {r.get("namespace") for r in records}

    # Assert
    assert records, f"{name}.avsc defines no record"
    assert namespaces == {"marketstream.v1"}


@pytest.mark.parametrize("name", NAMES)
def test_schema_fields_any_have_a_doc(name: str) -> None:
    # Arrange
    records = _records(json.loads(_text(name)))

    # Act
    undocumented = [
        f["name"] for r in records for f in r["fields"] if not str(f.get("doc", "")).strip()
    ]

    # Assert
    assert undocumented == [], f"{name}.avsc: fields without a doc: {undocumented}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field_name", ["ts_event", "ts_recv"])
def test_schema_timestamps_any_are_timestamp_micros_longs(name: str, field_name: str) -> None:
    # Arrange
    fields = {f["name"]: f["type"] for f in json.loads(_text(name))["fields"]}

    # Act
    field_type = fields.get(field_name)
    if isinstance(field_type, dict) and field_type.get("type") == "array":
        field_type = field_type["items"]

    # Assert
    assert field_type == TIMESTAMP_MICROS, f"{name}.{field_name} is {field_type!r}"


def test_ids_json_names_match_schema_files() -> None:
    # Arrange / Act
    registered = set(IDS)

    # Assert
    assert registered == set(NAMES), "every schemas/avro/*.avsc needs an entry in schemas/ids.json"


@pytest.mark.parametrize("name", NAMES)
def test_schema_current_text_matches_latest_registered_fingerprint(name: str) -> None:
    # Arrange
    versions = IDS.get(name, [])
    assert versions, f"{name}.avsc has no entry in schemas/ids.json"
    latest = versions[-1]

    # Act
    current = fingerprint(_text(name))

    # Assert
    assert current == latest["fingerprint"], (
        f"schemas/avro/{name}.avsc changed but schemas/ids.json still lists fingerprint "
        f"{latest['fingerprint']} for its latest version {latest['version']}. Add version "
        f"{latest['version'] + 1} to schemas/ids.json with a new unused id and fingerprint "
        f"{current}, and archive the old text as "
        f"schemas/avro/archive/{name}.v{latest['version']}.avsc"
    )


def test_ids_json_ids_are_unique_across_schemas() -> None:
    # Arrange
    ids = [entry["id"] for versions in IDS.values() for entry in versions]

    # Act
    duplicates = sorted({i for i in ids if ids.count(i) > 1})

    # Assert
    assert duplicates == [], f"schema ids used more than once in schemas/ids.json: {duplicates}"


@pytest.mark.parametrize("name", sorted(IDS))
def test_ids_json_versions_any_increase_from_one(name: str) -> None:
    # Arrange / Act
    versions = [entry["version"] for entry in IDS[name]]

    # Assert
    assert versions == list(range(1, len(versions) + 1))


@pytest.mark.parametrize("name", sorted(IDS))
def test_schema_current_reads_every_archived_version(name: str) -> None:
    # Arrange
    archived = IDS[name][:-1]
    current = _text(name)

    # Act / Assert
    for entry in archived:
        path = ARCHIVE_DIR / f"{name}.v{entry['version']}.avsc"
        assert path.is_file(), f"{path.relative_to(ROOT)} is listed in schemas/ids.json but missing"
        old = path.read_text()
        assert fingerprint(old) == entry["fingerprint"], (
            f"{path.relative_to(ROOT)} was edited after archiving"
        )
        ok, result = _can_read(current, old)
        assert ok, (
            f"{name}.avsc cannot read messages written with version {entry['version']}: {result}"
        )


@pytest.mark.parametrize("name", NAMES)
def test_schema_current_reads_last_committed_version(name: str) -> None:
    # Arrange
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shown = subprocess.run(
        ["git", "show", f"HEAD:schemas/avro/{name}.avsc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        pytest.skip(f"schemas/avro/{name}.avsc is not in HEAD (or this is not a git checkout)")

    # Act
    ok, result = _can_read(_text(name), shown.stdout)

    # Assert
    assert ok, (
        f"{name}.avsc cannot read messages written with the committed version: {result}. "
        "Add fields only with defaults; a breaking change needs a new .vN topic and schema file"
    )


def test_compatibility_check_new_field_without_default_is_incompatible() -> None:
    # Arrange
    old = _text("trade_batch")
    changed = json.loads(old)
    changed["fields"].append({"name": "venue", "type": "string", "doc": "Exchange."})

    # Act
    ok, _ = _can_read(json.dumps(changed), old)

    # Assert
    assert not ok


def test_compatibility_check_new_field_with_default_is_compatible() -> None:
    # Arrange
    old = _text("trade_batch")
    changed = json.loads(old)
    changed["fields"].append(
        {"name": "venue", "type": ["null", "string"], "default": None, "doc": "Exchange."}
    )

    # Act
    ok, result = _can_read(json.dumps(changed), old)

    # Assert
    assert ok, result


def test_compatibility_check_changed_field_type_is_incompatible() -> None:
    # Arrange
    old = _text("bar")
    changed = json.loads(old)
    for field in changed["fields"]:
        if field["name"] == "volume":
            field["type"] = "string"

    # Act
    ok, _ = _can_read(json.dumps(changed), old)

    # Assert
    assert not ok
