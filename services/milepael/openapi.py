"""milepael's OpenAPI 3.1 document, served at GET /openapi.json (services.milepael.http)."""
from __future__ import annotations

from typing import Any

from services.milepael.core import LEVEL_NAMES, STATUSES
from services.milepael.tables import STAGE_COLUMNS
from services.shared.openapi import (FORMAT_PARAMETER, NEGOTIATION_RESPONSES, document, json_or_csv, problem_response,
                                     schema_ref)

RATIO = {"type": ["number", "null"], "description": "null while undefined (no planned value or cost yet)"}


def _schemas() -> dict[str, Any]:
    stage_summary = {"stage_id": {"type": "string"}, "name": {"type": "string"}, "status": {"enum": list(STATUSES)},
                     "spi_t": RATIO, "cpi": RATIO, "schedule_variance_days": {"type": "integer"},
                     "adjustment_required": {"type": "boolean"}}
    money = {f"{name}_{unit}": {"type": "integer" if unit == "ore" else "string"}
             for name in ("bac", "pv", "ev", "ac", "eac", "cost_variance") for unit in ("ore", "nok")}
    stage = {**stage_summary, **money, "spi": RATIO, "planned_start": {"type": "string", "format": "date"},
             "planned_finish": {"type": "string", "format": "date"},
             "forecast_finish": {"type": "string", "format": "date"}, "baseline_version": {"type": "integer"},
             "time_tolerance_level": {"enum": list(LEVEL_NAMES)}, "cost_tolerance_level": {"enum": list(LEVEL_NAMES)},
             "milestones": {"type": "array", "items": {"type": "object"}},
             "adjustment": {"type": "object"}, "funding": {"type": "array"}, "gate": {"type": "object"}}
    reform = {"reform_id": {"type": "string"}, "title": {"type": "string"}, "owner": {"type": "string"},
              "as_of": {"type": "string"}, "adjustment_required": {"type": "boolean"}}
    return {
        "ReformList": {"type": "object", "required": ["reforms"], "properties": {"reforms": {"type": "array", "items": {
            "type": "object", "required": list(reform) + ["stages"], "properties": {
                **reform, "stages": {"type": "array", "items": {"type": "object", "properties": stage_summary}}}}}}},
        "Reform": {"type": "object", "required": list(reform) + ["stages"], "properties": {
            **reform, "registered_at": {"type": "string"},
            "stages": {"type": "array", "items": {"type": "object", "required": list(stage_summary),
                                                  "properties": stage}},
            "decisions": {"type": "array"}, "baselines": {"type": "array"}, "adjustments": {"type": "array"}}},
        "AppliedEvent": {"type": "object", "required": ["id", "status"], "properties": {
            "id": {"type": "string"}, "status": {"enum": ["applied"]}}},
    }


def _paths() -> dict[str, Any]:
    reform_id = {"name": "reform_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    return {
        "/v1/reforms": {"get": {
            "summary": "every staged reform (tiltak 1.8) with its stages in brief",
            "parameters": [FORMAT_PARAMETER],
            "responses": {"200": json_or_csv("the reforms (as CSV: every stage of every reform in full)",
                                             "ReformList", STAGE_COLUMNS), **NEGOTIATION_RESPONSES}}},
        "/v1/reforms/{reform_id}": {"get": {
            "summary": "one reform: stages with earned value, forecasts, tolerances, decisions and adjustments",
            "parameters": [reform_id, FORMAT_PARAMETER],
            "responses": {"200": json_or_csv("the reform (as CSV: its stages)", "Reform", STAGE_COLUMNS),
                          **NEGOTIATION_RESPONSES, "404": problem_response("no reform with this reform_id")}}},
        "/v1/events/{event_id}": {"get": {
            "summary": "whether milepael applied one event (ingest asks, for its GET /v1/events/{id})",
            "parameters": [{"name": "event_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1}}],
            "responses": {"200": {"description": "applied, and where", "content": {
                "application/json": {"schema": schema_ref("AppliedEvent")}}},
                          "404": problem_response("milepael has not applied an event with this id")}}},
    }


def openapi_document() -> dict[str, Any]:
    return document(
        "Reformspor milepael",
        "Staged reforms (tiltak 1.8) from milepael's read model: per stage planned and earned value, actual cost, "
        "SPI(t), CPI, forecasts against tolerances and whether it needs adjustment (justering). JSON by default; "
        "the stages as CSV for spreadsheets with ?format=csv or Accept: text/csv.",
        _paths(), _schemas())
