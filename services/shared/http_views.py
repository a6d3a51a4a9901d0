"""What the services' HTTP lists share: JSON or CSV by `?format=` / `Accept`, paging with a next link, `as_of`.

Bad input raises aiohttp's HTTP errors; streaming.problem_boundary answers them as problem+json.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Callable

from aiohttp import web
from multidict import MultiMapping

from services.shared.dates import MOMENT_RULE, parse_moment
from services.shared.streaming import json_response
from services.shared.tabular import Cell, csv_bytes


class Representation(Enum):
    JSON = "application/json"
    CSV = "text/csv"


FORMATS = {"json": Representation.JSON, "csv": Representation.CSV}


def _quality(representation: Representation, accept: str) -> float:
    """The q the Accept header gives this media type: the most specific range that matches wins (RFC 9110 12.5.1)."""
    kind = representation.value
    best: tuple[int, float] = (-1, 0.0)  # (specificity, q)
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        specificity = 2 if media == kind else 1 if media == kind.split("/")[0] + "/*" else 0 if media == "*/*" else -1
        if specificity <= best[0]:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        best = (specificity, q)
    return best[1]


def negotiate(request: web.Request) -> Representation:
    """`?format=json|csv` first (a link in a browser or Excel cannot set headers), then Accept; JSON by default."""
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt.lower() not in FORMATS:
            raise web.HTTPBadRequest(reason="Invalid format", text=f"format must be json or csv; got {fmt[:40]!r}")
        return FORMATS[fmt.lower()]
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return Representation.JSON
    # The highest q wins; on a tie JSON, the default.
    representation = max(Representation, key=lambda r: (_quality(r, accept), r is Representation.JSON))
    if _quality(representation, accept) <= 0:
        raise web.HTTPNotAcceptable(reason="Not Acceptable", text=f"this resource is served as "
                                    f"{' or '.join(r.value for r in Representation)}; Accept was {accept[:80]!r}")
    return representation


@dataclass(frozen=True)
class CsvTable:
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    filename: str  # without .csv


def download_name(*parts: str) -> str:
    """A file name every system and browser keeps: ASCII letters, digits, `.`, `-` and `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(p for p in parts if p))[:120] or "reformspor"


def csv_response(table: CsvTable, headers: dict[str, str] | None = None) -> web.Response:
    """The table as the CSV `reformspor export` writes (services.shared.tabular.csv_bytes: for Norwegian Excel)."""
    disposition = f'attachment; filename="{download_name(table.filename)}.csv"'
    return web.Response(body=csv_bytes(table.columns, table.rows), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": disposition, **(headers or {})})


def represent(representation: Representation, document: Any, table: Callable[[], CsvTable] | None = None,
              headers: dict[str, str] | None = None) -> web.Response:
    """The document as JSON, or its table as CSV (built only then); `Vary: Accept` so a cache keeps the two apart."""
    headers = {"Vary": "Accept", **(headers or {})}
    if representation is Representation.CSV and table is not None:
        return csv_response(table(), headers)
    response = json_response(document)
    response.headers.update(headers)
    return response


# --- paging ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def parse_page(query: MultiMapping[str], default_limit: int, max_limit: int) -> Page:
    """`limit` (1..max_limit) and `offset` (0..) as whole numbers; anything else is a 400."""
    values = {}
    for name, default, lowest, highest in (("limit", default_limit, 1, max_limit), ("offset", 0, 0, None)):
        text = query.get(name, str(default))
        if not re.fullmatch(r"[0-9]{1,12}", text) or int(text) < lowest or (highest and int(text) > highest):
            raise web.HTTPBadRequest(reason="Invalid paging", text=f"{name} must be a whole number from {lowest}"
                                     f"{f' to {highest}' if highest else ' up'}; got {text[:40]!r}")
        values[name] = int(text)
    return Page(**values)


def paged(request: web.Request, page: Page, total: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The paging fields of a body (total, limit, offset, next) and the RFC 8288 Link header, none on the last page.

    `next` is a relative reference (path and query, the request's other parameters kept): right behind a proxy too.
    """
    after = page.offset + page.limit
    next_url = str(request.rel_url.update_query(limit=page.limit, offset=after)) if after < total else None
    headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
    return {"total": total, "limit": page.limit, "offset": page.offset, "next": next_url}, headers


# --- as_of ----------------------------------------------------------------------------------------------------------

def as_of_query(query: MultiMapping[str]) -> datetime | None:
    """`?as_of=`: services.shared.dates.parse_moment's rule (a plain date is the end of that day in Norway)."""
    text = query.get("as_of")
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as error:
        hint = " (a '+' in a URL is a space: write it as %2B)" if " " in text else ""
        raise web.HTTPBadRequest(reason="Invalid as_of", text=f"as_of must be {MOMENT_RULE}: {error}{hint}") from None
