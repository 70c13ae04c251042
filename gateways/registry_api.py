"""The read side of the Confluent Schema Registry REST API, over our committed schema set.

Enough for a stock `AvroDeserializer` with `SchemaRegistryClient({"url": <our API>})` to decode
our topics, and for people to browse the contracts: `/schemas/ids/{id}`, `/subjects`,
`/subjects/{subject}/versions[/{version|latest}]`. Errors use the registry's
`{"error_code", "message"}` shape.
"""

from __future__ import annotations

from aiohttp import web

from shared.schema_ids import CommittedSchemas, RegisteredSchema
from shared.status import json_response
from shared.topics import subjects

SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403


def _error(code: int, message: str) -> web.Response:
    return json_response({"error_code": code, "message": message}, status=404)


def add_registry_routes(app: web.Application, registry: CommittedSchemas) -> None:
    """Serve the committed schema set under the registry API's paths."""
    subject_schema = subjects()
    subject_of = {name: subject for subject, name in subject_schema.items()}

    def version_body(subject: str, schema: RegisteredSchema) -> dict[str, object]:
        return {
            "subject": subject,
            "version": schema.version,
            "id": schema.schema_id,
            "schemaType": "AVRO",
            "schema": schema.text,
        }

    def versions_of(request: web.Request) -> tuple[str, list[RegisteredSchema]] | web.Response:
        subject = request.match_info["subject"]
        if subject not in subject_schema:
            return _error(SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
        return subject, registry.versions(subject_schema[subject])

    async def schema_by_id(request: web.Request) -> web.Response:
        schema = registry.by_id.get(int(request.match_info["id"]))
        if schema is None:
            return _error(SCHEMA_NOT_FOUND, "Schema not found")
        body = version_body(subject_of[schema.name], schema) | {"references": []}
        return json_response(body)

    async def raw_schema_by_id(request: web.Request) -> web.Response:
        schema = registry.by_id.get(int(request.match_info["id"]))
        if schema is None:
            return _error(SCHEMA_NOT_FOUND, "Schema not found")
        return web.Response(text=schema.text, content_type="application/json")

    async def list_subjects(_: web.Request) -> web.Response:
        return json_response(sorted(subject_schema))

    async def list_versions(request: web.Request) -> web.Response:
        found = versions_of(request)
        if isinstance(found, web.Response):
            return found
        return json_response([s.version for s in found[1]])

    async def one_version(request: web.Request) -> web.Response:
        found = versions_of(request)
        if isinstance(found, web.Response):
            return found
        subject, versions = found
        wanted = request.match_info["version"]
        matches = (
            versions[-1:]
            if wanted in ("latest", "-1")
            else [s for s in versions if str(s.version) == wanted]
        )
        if not matches:
            return _error(VERSION_NOT_FOUND, f"Version {wanted} not found.")
        return json_response(version_body(subject, matches[0]))

    app.router.add_get(r"/schemas/ids/{id:\d+}", schema_by_id)
    app.router.add_get(r"/schemas/ids/{id:\d+}/schema", raw_schema_by_id)
    app.router.add_get("/subjects", list_subjects)
    app.router.add_get("/subjects/{subject}/versions", list_versions)
    app.router.add_get("/subjects/{subject}/versions/{version}", one_version)
