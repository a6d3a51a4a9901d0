"""budsjett's HTTP reads: lines, one line (per fiscal year, as of a moment), its audit trail and status,
all from the read model."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from services.budsjett import core
from services.budsjett.readmodel import ReadModel
from services.shared.money import format_ore
from services.shared.streaming import json_response, problem

if TYPE_CHECKING:
    from services.budsjett.app import ReadModelSink
    from services.budsjett.catalogue import CatalogueHolder


def with_nok(amounts: dict[str, Any]) -> dict[str, Any]:
    """Add a *_nok decimal string beside every *_ore integer."""
    result = dict(amounts)
    for name, value in amounts.items():
        if name.endswith("_ore") and isinstance(value, int):
            result[name.removesuffix("_ore") + "_nok"] = format_ore(value)
    return result


def line_document(line: dict[str, Any], cells: list[dict[str, Any]] | None = None,
                  as_of: str | None = None, fiscal_year: int | None = None) -> dict[str, Any]:
    """The HTTP view of one line: cells, totals and per-ministry / per-phase / per-year rollups.

    With `fiscal_year`, only that year's cells and totals; without it, `totals` adds the years (what the
    line has seen in all) and `by_fiscal_year` gives each year's own totals.
    """
    if cells is None:
        cells = core.line_cells(line, fiscal_year)
        for cell in cells:
            stored = line["cells"][core.cell_key(cell["ministry"], cell["phase"], cell["fiscal_year"])]
            cell.update(overcommitted=stored["overcommitted"], overspent=stored["overspent"],
                        overslagsbevilgning=stored["overslagsbevilgning"], kan_overfores=stored["kan_overfores"],
                        funding_posts=stored["funding_posts"], carry_rule=stored["carry_rule"])
    groups = core.rollups(cells)
    document = {
        "line_id": line["line_id"],
        "last_event_time": line.get("last_event_time"),
        "updated_at": line.get("updated_at"),
        "events_applied": line.get("events"),
        # fiscal year -> the årsavslutning that closed it; carry_rule on a cell names the rule behind its
        # overfort_inn_ore / bortfalt_ore (yearend.CarryRule)
        "closed_years": line.get("closed_years", {}),
        "totals": with_nok(core.sum_amounts(cells)),
        "cells": [with_nok(cell) for cell in cells],
        **{name: {k: with_nok(v) for k, v in groups[name].items()} for name in ROLLUPS},
        "flags": [{"ministry": c["ministry"], "phase": c["phase"], "fiscal_year": c["fiscal_year"], "flag": f}
                  for c in cells for f in core.FLAGS if c.get(f)],
    }
    if fiscal_year is not None:
        document["fiscal_year"] = fiscal_year
        del document["by_fiscal_year"]  # one year: its totals are `totals`
    if as_of is not None:
        document["as_of"] = as_of
    return document


ROLLUPS = ("by_ministry", "by_phase", "by_fiscal_year")


def unknown_line(line_id: str) -> web.Response:
    return problem(404, "Unknown budget line", f"no events have been applied to line {line_id!r}")


def parse_as_of(text: str) -> datetime:
    as_of = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if as_of.tzinfo is None:
        raise ValueError("no time zone")
    return as_of


class LedgerRoutes:
    """GET /v1/lines, /v1/lines/{id} (?as_of=), /v1/lines/{id}/events, /v1/events/{id} and /v1/status, from the
    read model."""

    def __init__(self, read_model: ReadModel, catalogue: CatalogueHolder, sink: ReadModelSink):
        self.read_model = read_model
        self.catalogue = catalogue
        self.sink = sink

    def register(self, app: web.Application) -> None:
        app.router.add_get("/v1/lines", self.lines)
        app.router.add_get("/v1/lines/{line_id}", self.line)
        app.router.add_get("/v1/lines/{line_id}/events", self.line_events)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/events/{event_id}", self.event)

    async def query(self, function: Callable[..., Any], *args: Any) -> Any:
        """A database read off the HTTP loop (a server database may take its time)."""
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    async def lines(self, request: web.Request) -> web.Response:
        result = []
        for line_id, line in sorted((await self.query(self.read_model.lines)).items()):
            document = line_document(line)
            result.append({k: document[k] for k in ("line_id", "last_event_time", "events_applied", "totals",
                                                   "by_ministry", "by_fiscal_year", "flags")})
        return json_response({"lines": result, "catalogue": self.catalogue.status()})

    async def line(self, request: web.Request) -> web.Response:
        line_id = request.match_info["line_id"]
        line = (await self.query(self.read_model.lines, line_id)).get(line_id)
        if line is None:
            return unknown_line(line_id)
        year_text = request.query.get("fiscal_year")
        fiscal_year = core.parse_fiscal_year(year_text) if year_text is not None else None
        if year_text is not None and fiscal_year is None:
            return problem(400, "Invalid fiscal_year", f"fiscal_year must be {core.FISCAL_YEAR_RULE}, "
                                                       f"e.g. 2026; got {year_text[:40]!r}")
        as_of_text = request.query.get("as_of")
        if as_of_text is None:
            return json_response(line_document(line, fiscal_year=fiscal_year))
        try:
            as_of = parse_as_of(as_of_text)
        except ValueError:
            return problem(400, "Invalid as_of", "as_of must be an RFC 3339 timestamp with time zone, "
                                                 f"e.g. 2026-03-01T10:00:00Z; got {as_of_text[:40]!r}")
        cells = await self.query(self.read_model.cells_as_of, line_id, as_of, fiscal_year)
        return json_response(line_document(line, cells=cells, as_of=core.rfc3339(as_of), fiscal_year=fiscal_year))

    async def line_events(self, request: web.Request) -> web.Response:
        line_id = request.match_info["line_id"]
        try:
            limit = min(int(request.query.get("limit", "1000")), 10000)
            skip = max(int(request.query.get("offset", "0")), 0)
        except ValueError:
            return problem(400, "Invalid paging", "limit and offset must be whole numbers")
        if line_id not in await self.query(self.read_model.lines, line_id):
            return unknown_line(line_id)
        events = await self.query(self.read_model.events, line_id, limit, skip)
        return json_response({"line_id": line_id, "events": events})

    async def event(self, request: web.Request) -> web.Response:
        """One event by id: applied (and where), else 404. Rejections are on the dead-letter topic, which
        ingest follows; this answers only what the read model knows (internal: ingest asks it)."""
        event_id = request.match_info["event_id"]
        outcome = await self.query(self.read_model.event_outcome, event_id)
        if outcome is None:
            return problem(404, "Event not applied", f"budsjett has not applied an event with id {event_id[:160]!r}")
        return json_response(outcome)

    async def status(self, request: web.Request) -> web.Response:
        lines = await self.query(self.read_model.line_count)
        return json_response({"lines": lines, "catalogue": self.catalogue.status(),
                              "read_model_pending_rows": self.sink.pending_rows})
