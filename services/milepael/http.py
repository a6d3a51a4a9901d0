"""milepael's HTTP reads: the reforms and one reform with its stages, from the read model; the stages also as
the CSV finance staff open in Excel (?format=csv or Accept: text/csv)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from services.milepael.openapi import openapi_document
from services.milepael.readmodel import ReadModel
from services.milepael.tables import STAGE_COLUMNS, stage_table
from services.shared.http_views import CsvTable, Representation, download_name, negotiate, represent
from services.shared.openapi import openapi_handler
from services.shared.streaming import json_response, problem


class ReformRoutes:
    """GET /v1/reforms and /v1/reforms/{id} (JSON, or their stages as CSV), /v1/events/{id} and /openapi.json."""

    def __init__(self, readmodel: ReadModel):
        self.readmodel = readmodel

    def register(self, app: web.Application) -> None:
        app.router.add_get("/v1/reforms", self.reforms)
        app.router.add_get("/v1/reforms/{reform_id}", self.reform)
        app.router.add_get("/v1/events/{event_id}", self.event)
        app.router.add_get("/openapi.json", openapi_handler(openapi_document))

    async def reforms(self, request: web.Request) -> web.Response:
        representation = negotiate(request)
        if representation is Representation.CSV:  # every stage in full: the JSON list sums a stage up in a few figures
            documents = await asyncio.to_thread(self.readmodel.reform_documents)
            return represent(representation, None, lambda: CsvTable(STAGE_COLUMNS, stage_table(documents),
                                                                    "reformer-trinn"))
        return represent(representation, {"reforms": await asyncio.to_thread(self.readmodel.list_reforms)})

    async def reform(self, request: web.Request) -> web.Response:
        reform_id = request.match_info["reform_id"]
        representation = negotiate(request)
        document = await asyncio.to_thread(self.readmodel.get_reform, reform_id)
        if document is None:
            return problem(404, "reform not found", f"no reform with reform_id {reform_id[:64]!r}")
        return represent(representation, document, lambda: CsvTable(
            STAGE_COLUMNS, stage_table([document]), download_name("reform", reform_id, "trinn")))

    async def event(self, request: web.Request) -> web.Response:
        """Did milepael apply this event? (ingest asks, for its GET /v1/events/{id}; rejections are dead letters.)"""
        event_id = request.match_info["event_id"]
        outcome = await asyncio.to_thread(self.readmodel.event_outcome, event_id)
        if outcome is None:
            return problem(404, "Event not applied", f"milepael has not applied an event with id {event_id[:128]!r}")
        return json_response(outcome)
