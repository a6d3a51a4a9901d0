"""budsjett's OpenAPI 3.1 document, served at GET /openapi.json (services.budsjett.http)."""
from __future__ import annotations

from typing import Any

from services.budsjett import core
from services.budsjett.tables import CELL_COLUMNS, EVENT_COLUMNS, LINE_COLUMNS
from services.shared.dates import MOMENT_RULE
from services.shared.openapi import (FORMAT_PARAMETER, NEGOTIATION_RESPONSES, document, json_or_csv, problem_response,
                                     schema_ref)

LINE_ID = {"name": "line_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
AS_OF = {"name": "as_of", "in": "query", "required": False, "schema": {"type": "string"},
         "description": f"the figures from the events whose own time is at or before this moment: {MOMENT_RULE}. "
                        "A '+' in a URL must be written %2B"}
FISCAL_YEAR = {"name": "fiscal_year", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": core.MIN_FISCAL_YEAR, "maximum": core.MAX_FISCAL_YEAR},
               "description": "only this budget year's cells and totals"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT = 1000, 10000  # events per page of /v1/lines/{id}/events
UNKNOWN_LINE = problem_response("no events have been applied to this line")


def _amounts() -> dict[str, Any]:
    """Every figure as integer øre and as NOK decimal text."""
    properties: dict[str, Any] = {}
    for name in core.TOTAL_FIELDS:
        properties[name] = {"type": "integer"}
        properties[name.removesuffix("_ore") + "_nok"] = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$"}
    return {"type": "object", "properties": properties, "required": list(core.TOTAL_FIELDS)}


def _schemas() -> dict[str, Any]:
    amounts_by_key = {"type": "object", "additionalProperties": schema_ref("Amounts")}
    flag = {"type": "object", "properties": {"ministry": {"type": "string"}, "phase": {"type": "string"},
                                             "fiscal_year": {"type": "integer"}, "flag": {"enum": list(core.FLAGS)}}}
    summary = {"line_id": {"type": "string"}, "last_event_time": NULLABLE_TIME,
               "events_applied": {"type": ["integer", "null"]}, "totals": schema_ref("Amounts"),
               "by_ministry": amounts_by_key, "by_fiscal_year": amounts_by_key,
               "flags": {"type": "array", "items": flag}}
    cell = {"allOf": [schema_ref("Amounts"), {"type": "object", "required": ["ministry", "phase", "fiscal_year"],
                                              "properties": {"ministry": {"type": "string"},
                                                             "phase": {"type": "string"},
                                                             "fiscal_year": {"type": "integer"}}}]}
    audit_event = {"type": "object", "required": ["event_id", "kind", "time", "deltas"], "properties": {
        "event_id": {"type": "string"}, "kind": {"type": "string"}, "source_ministry": {"type": "string"},
        "fiscal_year": {"type": "integer"}, "time": {"type": "string", "format": "date-time"},
        "partition": {"type": "integer"}, "offset": {"type": "integer"},
        "corrects_id": {"type": ["string", "null"]}, "corrected_by": {"type": ["string", "null"]},
        "event": {"type": "object", "description": "the event as published (CloudEvents JSON)"},
        "deltas": {"type": "array", "items": {"type": "object", "description": "what it changed in one cell, øre"}}}}
    return {
        "Amounts": _amounts(),
        "LineSummary": {"type": "object", "properties": summary, "required": ["line_id", "totals"]},
        "LineList": {"type": "object", "required": ["lines"], "properties": {
            "lines": {"type": "array", "items": schema_ref("LineSummary")},
            "catalogue": {"type": "object"}, "as_of": {"type": "string", "format": "date-time"}}},
        "Line": {"type": "object", "required": ["line_id", "totals", "cells"], "properties": {
            **summary, "updated_at": NULLABLE_TIME, "closed_years": {"type": "object"},
            "cells": {"type": "array", "items": cell}, "by_phase": amounts_by_key,
            "fiscal_year": {"type": "integer"}, "as_of": {"type": "string", "format": "date-time"}}},
        "EventPage": {"type": "object", "required": ["line_id", "total", "limit", "offset", "next", "events"],
                      "properties": {
                          "line_id": {"type": "string"}, "total": {"type": "integer", "minimum": 0},
                          "limit": {"type": "integer"}, "offset": {"type": "integer"},
                          "next": {"type": ["string", "null"],
                                   "description": "the next page (a relative reference); null on the last page"},
                          "events": {"type": "array", "items": audit_event}}},
        "Status": {"type": "object", "properties": {"lines": {"type": "integer"}, "catalogue": {"type": "object"},
                                                    "read_model_pending_rows": {"type": "integer"}}},
        "AppliedEvent": {"type": "object", "required": ["id", "status"], "properties": {
            "id": {"type": "string"}, "status": {"enum": ["applied"]}}},
    }


def _paths() -> dict[str, Any]:
    next_link = {"Link": {"description": 'RFC 8288: <next page>; rel="next", absent on the last page',
                          "schema": {"type": "string"}}}
    return {
        "/v1/lines": {"get": {
            "summary": "every budget line with its totals, per ministry and per budget year",
            "parameters": [AS_OF, FORMAT_PARAMETER],
            "responses": {"200": json_or_csv("the lines (with as_of: those with events by then, as they stood)",
                                             "LineList", LINE_COLUMNS), **NEGOTIATION_RESPONSES}}},
        "/v1/lines/{line_id}": {"get": {
            "summary": "one line: cells per ministry × phase × budget year, totals and rollups",
            "parameters": [LINE_ID, AS_OF, FISCAL_YEAR, FORMAT_PARAMETER],
            "responses": {"200": json_or_csv("the line (as CSV: its cells)", "Line", CELL_COLUMNS),
                          **NEGOTIATION_RESPONSES, "404": UNKNOWN_LINE}}},
        "/v1/lines/{line_id}/events": {"get": {
            "summary": "the line's audit trail, oldest first, one page at a time",
            "parameters": [LINE_ID, FORMAT_PARAMETER,
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": EVENTS_MAX_LIMIT,
                                       "default": EVENTS_DEFAULT_LIMIT}},
                           {"name": "offset", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "default": 0}}],
            "responses": {"200": json_or_csv("a page of events with total, limit, offset and next (as CSV: the page, "
                                             "one row per cell an event changed)", "EventPage", EVENT_COLUMNS,
                                             next_link),
                          **NEGOTIATION_RESPONSES, "404": UNKNOWN_LINE}}},
        "/v1/events/{event_id}": {"get": {
            "summary": "whether budsjett applied one event (ingest asks, for its GET /v1/events/{id})",
            "parameters": [{"name": "event_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1}}],
            "responses": {"200": {"description": "applied, and where", "content": {
                "application/json": {"schema": schema_ref("AppliedEvent")}}},
                          "404": problem_response("budsjett has not applied an event with this id")}}},
        "/v1/status": {"get": {
            "summary": "how many lines, the catalogue's checks, rows waiting for the read model",
            "responses": {"200": {"description": "status", "content": {
                "application/json": {"schema": schema_ref("Status")}}}}}},
    }


def openapi_document() -> dict[str, Any]:
    return document(
        "Reformspor budsjett",
        "Shared budget lines (tiltak 1.7) from budsjett's read model: figures per line × ministry × phase × budget "
        "year in øre and NOK, as they stand or as of a moment, and the audit trail. The lists are JSON by default and "
        "CSV for spreadsheets with ?format=csv or Accept: text/csv.",
        _paths(), _schemas())
