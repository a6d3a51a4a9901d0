"""milepael's HTTP reads: the reforms and one reform with its stages, from the read model."""
from __future__ import annotations

import asyncio

from aiohttp import web

from services.milepael.readmodel import ReadModel
from services.shared.streaming import json_response, problem


class ReformRoutes:
    """GET /v1/reforms and /v1/reforms/{id}."""

    def __init__(self, readmodel: ReadModel):
        self.readmodel = readmodel

    def register(self, app: web.Application) -> None:
        app.router.add_get("/v1/reforms", self.reforms)
        app.router.add_get("/v1/reforms/{reform_id}", self.reform)

    async def reforms(self, request: web.Request) -> web.Response:
        return json_response({"reforms": await asyncio.to_thread(self.readmodel.list_reforms)})

    async def reform(self, request: web.Request) -> web.Response:
        reform_id = request.match_info["reform_id"]
        document = await asyncio.to_thread(self.readmodel.get_reform, reform_id)
        if document is None:
            return problem(404, "reform not found", f"no reform with reform_id {reform_id[:64]!r}")
        return json_response(document)
