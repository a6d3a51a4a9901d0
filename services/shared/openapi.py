"""What every service's OpenAPI 3.1 document shares: the frame, problem+json, the standard routes, the CSV lists.

Each service writes its own paths and schemas (services/*/openapi.py) and serves the document at
GET /openapi.json with `openapi_handler`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from aiohttp import web

from services.shared.jsonio import dumps_compact
from services.shared.streaming import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_schema(extra_properties: dict[str, Any] | None = None, note: str = "") -> dict[str, Any]:
    """RFC 9457 problem details, with a service's own extra members (`note` says what they hold)."""
    return {
        "type": "object",
        "description": "RFC 9457 problem details" + (f"; {note}" if note else ""),
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "title_nb": {"type": "string"},
                       "status": {"type": "integer"}, "detail": {"type": "string"},
                       "correlation_id": {"type": "string"}, **(extra_properties or {})},
        "required": ["type", "title", "status", "detail"],
    }


def problem_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}}
    if headers:
        response["headers"] = headers
    return response


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# --- lists as JSON or CSV (services.shared.http_views) ---------------------------------------------------------------

FORMAT_PARAMETER = {
    "name": "format", "in": "query", "required": False, "schema": {"enum": ["json", "csv"]},
    "description": "json (the default) or csv; wins over the Accept header (application/json or text/csv)",
}
CSV_DESCRIPTION = ("CSV as `reformspor export` writes it for Norwegian Excel: UTF-8 with a BOM, `;` between cells, "
                   "decimal commas, CRLF, a header row of Norwegian column names; sent as an attachment "
                   "(Content-Disposition) with a file name")


def json_or_csv(description: str, schema_name: str, csv_columns: tuple[str, ...],
                headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A 200 response served as JSON or as CSV with these columns."""
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": schema_ref(schema_name)},
        "text/csv": {"schema": {"type": "string", "description": f"{CSV_DESCRIPTION}. Columns: "
                                                               f"{'; '.join(csv_columns)}"}}},
        "headers": {"Content-Disposition": {"description": "with text/csv: attachment; filename=\"….csv\"",
                                            "schema": {"type": "string"}},
                    **(headers or {})}}
    return response


NEGOTIATION_RESPONSES = {
    "400": problem_response("a bad query parameter (format, as_of, fiscal_year, limit, offset): which and why"),
    "406": problem_response("the Accept header allows neither application/json nor text/csv"),
}

# --- the frame ---------------------------------------------------------------------------------------------------------


def standard_paths() -> dict[str, Any]:
    """What streaming.ServiceHttp serves for every service, and /openapi.json."""
    def plain(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "security": [], "responses": responses}}

    return {
        "/healthz": plain("process alive", {"200": {"description": "ok"}}),
        "/readyz": plain("Kafka reachable (and the service's own checks)",
                         {"200": {"description": "ready"}, "503": {"description": "not ready, with the problems"}}),
        "/metrics": plain("Prometheus metrics", {"200": {"description": "text exposition format"}}),
        "/openapi.json": plain("this document", {"200": {"description": "OpenAPI 3.1"}}),
    }


def document(title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any],
             **top_level: Any) -> dict[str, Any]:
    """An OpenAPI 3.1 document: the service's paths and the standard ones, its schemas and Problem.

    `top_level` adds members such as `security`; its `components` (e.g. securitySchemes) join the schemas.
    """
    components = {**top_level.pop("components", {}), "schemas": {"Problem": problem_schema(), **schemas}}
    return {"openapi": "3.1.0", "info": {"title": title, "version": "1", "description": description}, **top_level,
            "components": components, "paths": {**paths, **standard_paths()}}


def openapi_handler(build: Callable[[], dict[str, Any]]) -> Callable[[web.Request], Any]:
    """GET /openapi.json: the document, built once."""
    body = lru_cache(maxsize=1)(lambda: dumps_compact(build()))

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body(), content_type="application/json")

    return serve
