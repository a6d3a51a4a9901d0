"""budsjett's HTTP reads: lines and one line (per fiscal year, as of a moment), its audit trail (paged) and
status, all from the read model; the lists as JSON or as the CSV `reformspor export` writes."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from services.budsjett import core
from services.budsjett.openapi import EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT, openapi_document
from services.budsjett.readmodel import ReadModel
from services.budsjett.tables import (CELL_COLUMNS, EVENT_COLUMNS, LINE_COLUMNS, cell_rows, cell_table, event_rows,
                                     line_table)
from services.shared.dates import BOOKKEEPING_ZONE
from services.shared.http_views import (CsvTable, as_of_query, download_name, negotiate, paged, parse_page,
                                        represent)
from services.shared.money import format_ore
from services.shared.openapi import openapi_handler
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
                  as_of: str | None = None, fiscal_year: int | None = None,
                  post_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The HTTP view of one line: cells, totals and per-ministry / per-phase / per-year / per-kap/post rollups.

    With `fiscal_year`, only that year's cells and totals; without it, `totals` adds the years (what the
    line has seen in all) and `by_fiscal_year` gives each year's own totals. Each cell lists its funding
    kap/posts (`posts`, adding up to the cell); `by_post` sums them per kap/post over the document's cells and,
    without `fiscal_year`, `by_fiscal_year_and_post` per year and kap/post. `post_rows` (core.post_view rows)
    go with given `cells` (as of a moment); otherwise both come from the line.
    """
    if post_rows is None:
        post_rows = core.line_post_rows(line, fiscal_year)
    if cells is None:
        cells = core.line_cells(line, fiscal_year)
        for cell in cells:
            stored = line["cells"][core.cell_key(cell["ministry"], cell["phase"], cell["fiscal_year"])]
            cell.update(overcommitted=stored["overcommitted"], overspent=stored["overspent"],
                        overslagsbevilgning=stored["overslagsbevilgning"], kan_overfores=stored["kan_overfores"],
                        funding_posts=stored["funding_posts"], carry_rule=stored["carry_rule"])
    groups = core.rollups(cells)
    _attach_posts(cells, post_rows)
    by_post = core.post_rollups(post_rows)
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
        "by_post": {k: with_nok(v) for k, v in by_post["by_post"].items()},
        "by_fiscal_year_and_post": {year: {k: with_nok(v) for k, v in posts.items()}
                                    for year, posts in by_post["by_fiscal_year_and_post"].items()},
        "flags": [{"ministry": c["ministry"], "phase": c["phase"], "fiscal_year": c["fiscal_year"], "flag": f}
                  for c in cells for f in core.FLAGS if c.get(f)],
    }
    if fiscal_year is not None:
        document["fiscal_year"] = fiscal_year
        del document["by_fiscal_year"]  # one year: its totals are `totals`, its posts' `by_post`
        del document["by_fiscal_year_and_post"]
    if as_of is not None:
        document["as_of"] = as_of
    return document


ROLLUPS = ("by_ministry", "by_phase", "by_fiscal_year")
CELL_FIELDS = ("ministry", "phase", "fiscal_year")


def _attach_posts(cells: list[dict[str, Any]], post_rows: list[dict[str, Any]]) -> None:
    """Give each cell view its kap/post rows (without the cell's own keys), *_nok beside *_ore."""
    by_cell: dict[tuple, list] = {}
    for row in post_rows:
        by_cell.setdefault(tuple(row[k] for k in CELL_FIELDS), []).append(
            with_nok({k: v for k, v in row.items() if k not in CELL_FIELDS}))
    for cell in cells:
        cell["posts"] = by_cell.get(tuple(cell[k] for k in CELL_FIELDS), [])


def unknown_line(line_id: str) -> web.Response:
    return problem(404, "Unknown budget line", f"no events have been applied to line {line_id!r}")


def fiscal_year_query(request: web.Request) -> int | None:
    text = request.query.get("fiscal_year")
    if text is None:
        return None
    fiscal_year = core.parse_fiscal_year(text)
    if fiscal_year is None:
        raise web.HTTPBadRequest(reason="Invalid fiscal_year",
                                 text=f"fiscal_year must be {core.FISCAL_YEAR_RULE}, e.g. 2026; got {text[:40]!r}")
    return fiscal_year


def as_of_label(as_of: datetime | None) -> str:
    """For a file name: the moment's date in Norway (where a plain date came from), `per-2026-06-30`."""
    return "" if as_of is None else "per-" + as_of.astimezone(BOOKKEEPING_ZONE).date().isoformat()


def line_as_of(line: dict[str, Any], counts: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The line record with the number of events and the last event's time as they were then (readmodel.events_as_of)."""
    events, last_event_time = counts.get(line["line_id"], (0, None))
    return {**line, "events": events, "last_event_time": last_event_time}


LINE_SUMMARY_KEYS = ("line_id", "last_event_time", "events_applied", "totals", "by_ministry", "by_fiscal_year", "flags")


class LedgerRoutes:
    """GET /v1/lines (?as_of=), /v1/lines/{id} (?as_of=, ?fiscal_year=), /v1/lines/{id}/events (paged),
    /v1/events/{id} and /v1/status from the read model; the lists also as CSV (?format=csv or Accept: text/csv);
    /openapi.json."""

    def __init__(self, read_model: ReadModel, catalogue: CatalogueHolder, sink: ReadModelSink):
        self.read_model = read_model
        self.catalogue = catalogue
        self.sink = sink

    def register(self, app: web.Application) -> None:
        app.router.add_get("/v1/lines", self.lines)
        app.router.add_get("/v1/lines/{line_id}", self.line)
        app.router.add_get("/v1/lines/{line_id}/events", self.line_events)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/openapi.json", openapi_handler(openapi_document))
        app.router.add_get("/v1/events/{event_id}", self.event)

    async def query(self, function: Callable[..., Any], *args: Any) -> Any:
        """A database read off the HTTP loop (a server database may take its time)."""
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    async def lines(self, request: web.Request) -> web.Response:
        representation, as_of = negotiate(request), as_of_query(request.query)
        lines = await self.query(self.read_model.lines)
        if as_of is None:
            documents = [line_document(line) for _, line in sorted(lines.items())]
        else:  # the lines that had money by then, with their cells as of then
            cells = await self.query(self.read_model.lines_as_of, as_of)
            counts = await self.query(self.read_model.events_as_of, as_of)
            documents = [line_document(line_as_of(lines[line_id], counts), cells=cells[line_id],
                                       as_of=core.rfc3339(as_of))
                         for line_id in sorted(cells) if line_id in lines]
        summaries = [{k: document[k] for k in LINE_SUMMARY_KEYS} for document in documents]
        body = {"lines": summaries, "catalogue": self.catalogue.status(),
                **({"as_of": core.rfc3339(as_of)} if as_of else {})}
        return represent(representation, body, lambda: CsvTable(LINE_COLUMNS, line_table(summaries),
                                                                 download_name("budsjettlinjer", as_of_label(as_of))))

    async def line(self, request: web.Request) -> web.Response:
        line_id = request.match_info["line_id"]
        representation, fiscal_year, as_of = negotiate(request), fiscal_year_query(request), as_of_query(request.query)
        line = (await self.query(self.read_model.lines, line_id)).get(line_id)
        if line is None:
            return unknown_line(line_id)
        if as_of is None:
            document = line_document(line, fiscal_year=fiscal_year)
        else:
            cells = await self.query(self.read_model.cells_as_of, line_id, as_of, fiscal_year)
            post_rows = await self.query(self.read_model.posts_as_of, line_id, as_of, fiscal_year)
            counts = await self.query(self.read_model.events_as_of, as_of, line_id)
            document = line_document(line_as_of(line, counts), cells=cells, as_of=core.rfc3339(as_of),
                                     fiscal_year=fiscal_year, post_rows=post_rows)
        name = download_name("linje", line_id, "celler", str(fiscal_year or ""), as_of_label(as_of))
        return represent(representation, document,
                         lambda: CsvTable(CELL_COLUMNS, cell_table(cell_rows(document, with_sum=False)), name))

    async def line_events(self, request: web.Request) -> web.Response:
        line_id = request.match_info["line_id"]
        representation = negotiate(request)
        page = parse_page(request.query, EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT)
        total = await self.query(self.read_model.event_count, line_id)
        if not total and line_id not in await self.query(self.read_model.lines, line_id):
            return unknown_line(line_id)
        events = await self.query(self.read_model.events, line_id, page.limit, page.offset)
        paging, headers = paged(request, page, total)
        # One page of several: its rows in the name (linje-0-24-hendelser-1001-2000.csv), so two pages never clash.
        span = f"{page.offset + 1}-{page.offset + len(events)}" if events and (paging["next"] or page.offset) else ""
        name = download_name("linje", line_id, "hendelser", span)
        return represent(representation, {"line_id": line_id, **paging, "events": events},
                         lambda: CsvTable(EVENT_COLUMNS, [row for event in events for row in event_rows(line_id, event)],
                                          name), headers)

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
