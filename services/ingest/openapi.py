"""The OpenAPI 3.1 document served at GET /openapi.json.

Request schemas come from the contract's pydantic models, so the document
cannot drift from what parse_event accepts; money fields are patched to show
what publishers send (decimal string or integer NOK), not the øre kept inside.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from services.ingest import core
from services.shared.config import Settings
from services.shared.contract import DATA_MODELS, KIND_BY_TYPE, SOURCE_PREFIX
from services.shared.openapi import document, problem_response, problem_schema

_MONEY = {
    "description": "NOK as a decimal string with at most two decimals, or an integer. Never a JSON float.",
    "oneOf": [{"type": "string", "pattern": r"^-?[0-9]{1,14}(\.[0-9]{1,2})?$"}, {"type": "integer"}],
}
# The request body's media types: plain JSON and CloudEvents' HTTP binding (structured and batch mode).
# Parameters such as charset are allowed; anything else is answered 415.
ACCEPTED_CONTENT_TYPES = ("application/json", "application/cloudevents+json", "application/cloudevents-batch+json")
_DECIMAL = {"description": "Exact decimal: a decimal string or a JSON number.", "oneOf": [{"type": "string"}, {"type": "number"}]}


def _patch(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                props = {}
                for name, schema in value.items():
                    if name.endswith("_nok"):
                        props[name] = {**_MONEY, **({"title": schema["title"]} if "title" in schema else {})}
                    elif name in ("value", "threshold"):
                        props[name] = _DECIMAL
                    else:
                        props[name] = _patch(schema)
                out[key] = props
            else:
                out[key] = _patch(value)
        return out
    if isinstance(node, list):
        return [_patch(item) for item in node]
    return node


def _problem_extras() -> dict[str, Any]:
    """ingest's members beside RFC 9457's."""
    return {
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "index": {"type": "integer"}, "id": {"type": ["string", "null"]}, "code": {"type": "string"},
            "path": {"type": "string"}, "reason": {"type": "string"}}}},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/EventResult"}},
        "summary": {"$ref": "#/components/schemas/Summary"},
    }


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    kinds = sorted(DATA_MODELS)
    _, top = models_json_schema([(DATA_MODELS[k], "validation") for k in kinds],
                                ref_template="#/components/schemas/{model}", by_alias=True)
    schemas: dict[str, Any] = {name: _patch(schema) for name, schema in top.get("$defs", {}).items()}
    schemas["Event"] = {
        "type": "object",
        "description": "CloudEvents 1.0 structured envelope. `type` decides which data schema applies.",
        "additionalProperties": False,
        "required": ["specversion", "id", "source", "type", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1, "maxLength": 128, "description": "idempotency key"},
            "source": {"type": "string", "pattern": f"^{SOURCE_PREFIX}[A-Z]+$", "examples": [f"{SOURCE_PREFIX}BFD"]},
            "type": {"enum": sorted(KIND_BY_TYPE)},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "subject": {"type": "string"},
            "dataschema": {"type": "string"},
            "data": {"oneOf": [{"$ref": f"#/components/schemas/{DATA_MODELS[k].__name__}"} for k in kinds]},
        },
    }
    schemas["EventResult"] = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"}, "id": {"type": ["string", "null"]},
            "status": {"enum": [core.ACCEPTED, core.DUPLICATE, core.REJECTED, core.CONFLICT]},
            "code": {"enum": [core.ACCEPTED, core.DUPLICATE, core.CONFLICT, core.CODE_INVALID, core.CODE_FORBIDDEN,
                              core.CODE_NOT_SENT]},
            "reasons": {"type": "array", "items": {"type": "object", "properties": {
                "path": {"type": "string"}, "reason": {"type": "string"}}}},
        },
        "required": ["index", "id", "status", "reasons"],
    }
    schemas["Summary"] = {"type": "object", "properties": {s: {"type": "integer"} for s in
                                                           (core.ACCEPTED, core.DUPLICATE, core.REJECTED, core.CONFLICT)}}
    schemas["Results"] = {"type": "object", "properties": {
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/EventResult"}},
        "summary": {"$ref": "#/components/schemas/Summary"}}, "required": ["results", "summary"]}
    schemas["Problem"] = problem_schema(_problem_extras(), "`errors` lists every field error, `results` every event.")
    schemas["EventStatus"] = {
        "type": "object",
        "description": "What became of one event: applied by the service that owns it, still pending (accepted by "
                       "ingest, not yet applied), or rejected (by ingest or downstream) with the reason.",
        "properties": {
            "id": {"type": "string"}, "status": {"enum": [core.APPLIED, core.PENDING, core.REJECTED]},
            "ministry": {"type": "string"},
            "decided_by": {"type": "string", "description": "the service that applied or rejected it"},
            "reason": {"type": "string"},
            "reason_label": {"type": "string", "description": "short, bounded: unknown_post, another_ministrys_post, "
                                                              "conflict, rejected, …"},
            "applied": {"type": "object", "description": "where the owning service applied it (line or reform)"},
        },
        "required": ["id", "status", "ministry"],
    }

    def ok(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}}

    return document(
        "Reformspor ingest",
        "Publish budget and reform events (tiltak 1.7 and 1.8). One event object or an array of "
        f"up to {core.MAX_BATCH_EVENTS}; body at most {core.MAX_BODY_BYTES} bytes. A batch is not "
        "atomic unless ?atomic=true: good events are accepted and each bad one is reported by "
        "index and written to the dead-letter topic.",
        schemas=schemas,
        components={"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                   "description": "per-ministry token from `reformspor tokens create`"}}},
        security=[{"bearer": []}],
        paths={
            "/v1/events": {"post": {
                "summary": "Publish one event or a batch",
                "parameters": [{"name": "atomic", "in": "query", "required": False,
                                "schema": {"type": "boolean", "default": False},
                                "description": "reject the whole batch if any event is rejected"}],
                "requestBody": {"required": True, "content": {
                    media_type: {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"type": "array", "minItems": 1, "maxItems": core.MAX_BATCH_EVENTS,
                         "items": {"$ref": "#/components/schemas/Event"}}]}}
                    for media_type in ACCEPTED_CONTENT_TYPES}},
                "responses": {
                    "200": ok("nothing new: every event was already accepted (duplicates)"),
                    "202": ok("accepted: Kafka acknowledged every new event"),
                    "207": ok("batch partly accepted; see each result"),
                    "400": problem_response("malformed JSON"),
                    "401": problem_response("missing or invalid token", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
                    "403": problem_response("the token's ministry may not publish these events (another ministry's source or money, "
                               "or an internal event type such as budsjett's cross-line credit)"),
                    "409": problem_response("an event id was already accepted with other content"),
                    "413": problem_response("body or batch too large"),
                    "415": problem_response("Content-Type is not one of the request body's media types"),
                    "422": problem_response("invalid events (every field error listed), a kap/post that the fiscal "
                                            "year's budget catalogue does not have or gives to another ministry, or "
                                            "an unacceptable body"),
                    "503": problem_response("Kafka unavailable; retry", {"Retry-After": {"schema": {"type": "integer"}}}),
                },
            }},
            "/v1/status": {"get": {
                "summary": "what ingest checks kap/post against: the budget catalogue it follows", "security": [],
                "responses": {"200": {"description": "the catalogue's status", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["catalogue"],
                                                    "properties": {"catalogue": {"type": "object"}}}}}}}}},
            "/v1/events/{id}": {"get": {
                "summary": "What became of one of your events: applied, pending or rejected (with the reason)",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the event's status",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventStatus"}}}},
                    "401": problem_response("missing or invalid token", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
                    "404": problem_response("no event with this id from the token's ministry (another ministry's event "
                                            "is answered the same way)"),
                },
            }},
        },
    )


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    return _document()
